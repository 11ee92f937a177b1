"""What scorers choose their constants on (paper Appendix B.3): 1,000 in-distribution test
images and 1,000 images of the training run's auxiliary pool (its validation split where it
has one), plus the training set for class statistics. Never the OOD test sets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from atom_tf.batching import map_batches
from atom_tf.data import InDistributionData, load_pool
from atom_tf.data.ood_sets import pool_validation_images


@dataclasses.dataclass
class Calibration:
    network: keras.Model
    num_classes: int
    train_images: np.ndarray  # uint8 [N, 32, 32, 3] and labels: class statistics (Mahalanobis)
    train_labels: np.ndarray
    in_images: np.ndarray  # uint8: in-distribution test images, and their labels
    in_labels: np.ndarray
    out_images: np.ndarray  # uint8: auxiliary-pool images
    batch_size: int = 256
    compiled: dict = dataclasses.field(default_factory=dict)  # fn -> its tf.function

    def logits(self, images: tf.Tensor) -> tf.Tensor:
        return self.network(images, training=False)

    def apply(self, fn: Callable[[tf.Tensor], tf.Tensor], images: np.ndarray) -> np.ndarray:
        """fn over uint8 images in fixed-size batches, as float32 in [0, 1]; traced once per
        function (pass the same function, reading a tf.Variable, to sweep a constant)."""
        if fn not in self.compiled:
            self.compiled[fn] = tf.function(fn, reduce_retracing=True)
        compiled = self.compiled[fn]
        return map_batches(
            lambda batch, _: compiled(tf.cast(batch, tf.float32) / 255.0).numpy(),
            images,
            self.batch_size,
        )

    def scores(self, score: Callable) -> tuple[np.ndarray, np.ndarray]:
        """A scorer function's (in-distribution, pool) scores."""
        if score not in self.compiled:
            self.compiled[score] = lambda x: score(self.logits, x, self.num_classes)
        fn = self.compiled[score]
        return self.apply(fn, self.in_images), self.apply(fn, self.out_images)


def pool_calibration_images(config: dict, count: int, seed: int) -> np.ndarray:
    """`count` images of the run's auxiliary pool: random crops of its validation split for an
    image-file pool (the split training never sees), else the pool's first images."""
    if config.get("pool") == "images" and config.get("pool_path"):
        images = pool_validation_images(config["pool_path"], seed)
        if len(images) > count:
            keep = np.random.default_rng(seed).choice(len(images), count, replace=False)
            images = images[np.sort(keep)]
        return images
    pool = load_pool(config["pool"], config.get("pool_path") or None, seed, download=False)
    return pool.read(0, count)


def load_calibration(
    network: keras.Model, config: dict, data: InDistributionData, count: int = 1000, seed: int = 0
) -> Calibration:
    """The calibration data of a run: `count` random in-distribution test images and `count`
    pool images."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(data.x_test), min(count, len(data.x_test)), replace=False))
    return Calibration(
        network, data.num_classes, data.x_train, data.y_train, data.x_test[chosen],
        data.y_test[chosen], pool_calibration_images(config, count, seed),
    )  # fmt: skip
