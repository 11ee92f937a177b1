"""The training input pipeline: in-distribution batches zipped with each epoch's mined outliers.

Keras re-creates the iterator of a finite dataset at every epoch (we declare the cardinality, so
no `steps_per_epoch` is passed and Keras never keeps an iterator across epochs). The generator
behind the dataset reads the outliers installed by `set_outliers` when its iteration starts,
i.e. after the mining callback's `on_epoch_begin`: epoch e trains on the outliers mined for e.
All randomness (order, augmentation) is a function of (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from atom_tf.data.augment import random_crop_flip, seed_for
from atom_tf.data.in_distribution import InDistributionData


def to_unit_float(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32) / 255.0


class TrainingFeed:
    """Serves (x_in, y_in, x_out) float batches: `in_batch` in-distribution images and
    `out_batch` outliers per step, over the epoch's outliers (shuffled, cycled if too few)."""

    def __init__(
        self, data: InDistributionData, in_batch: int = 64, out_batch: int = 128, seed: int = 1
    ) -> None:
        self.data, self.in_batch, self.out_batch, self.seed = data, in_batch, out_batch, seed
        self.steps_per_epoch = len(data.x_train) // in_batch  # static shapes for XLA
        if self.steps_per_epoch == 0:
            raise ValueError(f"in-distribution training set smaller than one batch ({in_batch})")
        self.epoch = 0
        self.outliers: np.ndarray | None = None

    @property
    def outliers_per_epoch(self) -> int:
        return self.steps_per_epoch * self.out_batch

    def set_outliers(self, epoch: int, outliers: np.ndarray) -> None:
        """Installs the uint8 [n, 32, 32, 3] outliers that epoch `epoch` trains on."""
        self.epoch, self.outliers = epoch, outliers

    def _batches(self):
        epoch, outliers = self.epoch, self.outliers
        if outliers is None:
            raise RuntimeError("no outliers installed: mining must run before each epoch")
        rng = np.random.default_rng(seed_for(self.seed, epoch, 0))
        in_order = rng.permutation(len(self.data.x_train))
        repeats = -(-self.outliers_per_epoch // len(outliers))
        out_order = np.concatenate([rng.permutation(len(outliers)) for _ in range(repeats)])
        for step in range(self.steps_per_epoch):
            i = in_order[step * self.in_batch : (step + 1) * self.in_batch]
            o = out_order[step * self.out_batch : (step + 1) * self.out_batch]
            aug_seed = seed_for(self.seed, epoch, 1, step)
            yield self.data.x_train[i], self.data.y_train[i], outliers[o], aug_seed

    def dataset(self) -> tf.data.Dataset:
        signature = (
            tf.TensorSpec((self.in_batch, 32, 32, 3), tf.uint8),
            tf.TensorSpec((self.in_batch,), tf.int64),
            tf.TensorSpec((self.out_batch, 32, 32, 3), tf.uint8),
            tf.TensorSpec((2,), tf.int64),
        )
        augment = self.data.augment

        def prepare(x_in, y_in, x_out, aug_seed):
            x_in = to_unit_float(x_in)
            if augment:
                x_in = random_crop_flip(x_in, aug_seed)
            return x_in, y_in, to_unit_float(x_out)

        ds = tf.data.Dataset.from_generator(self._batches, output_signature=signature)
        ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))
        return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def test_dataset(data: InDistributionData, batch_size: int = 256) -> tf.data.Dataset:
    """The in-distribution test set as (images in [0,1], labels) batches."""
    ds = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test)).batch(batch_size)
    return ds.map(lambda x, y: (to_unit_float(x), y)).prefetch(2)
