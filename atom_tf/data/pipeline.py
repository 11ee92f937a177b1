"""The training input pipeline: in-distribution batches zipped with each epoch's mined outliers.

One dataset spans all epochs of a `fit` (Keras keeps its iterator across epochs when given
`steps_per_epoch`). Its generator serves epoch e only once `set_outliers(e, ...)` has installed
the outliers mined for e (the mining callback's `on_epoch_begin`): a distributed iterator, which
starts prefetching as soon as it exists, waits for them instead of reading stale ones.
All randomness (order, augmentation) is a function of (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import itertools
import threading

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
        self.epoch = -1
        self.outliers: np.ndarray | None = None
        self.installed = threading.Condition()
        self.closed = False

    @property
    def outliers_per_epoch(self) -> int:
        return self.steps_per_epoch * self.out_batch

    def set_outliers(self, epoch: int, outliers: np.ndarray) -> None:
        """Installs the uint8 [n, 32, 32, 3] outliers that epoch `epoch` trains on."""
        with self.installed:
            self.epoch, self.outliers = epoch, outliers
            self.installed.notify_all()

    def close(self) -> None:
        """Ends a generator still waiting for outliers (training stopped early)."""
        with self.installed:
            self.closed = True
            self.installed.notify_all()

    def _wait_for(self, epoch: int) -> np.ndarray | None:
        with self.installed:
            while self.epoch != epoch and not self.closed:
                self.installed.wait(timeout=1.0)
            return None if self.closed else self.outliers

    def _batches(self, epochs: range):
        for epoch in epochs:
            outliers = self._wait_for(epoch)
            if outliers is None:
                return
            yield from self._epoch_batches(epoch, outliers)

    def _epoch_batches(self, epoch: int, outliers: np.ndarray):
        rng = np.random.default_rng(seed_for(self.seed, epoch, 0))
        in_order = rng.permutation(len(self.data.x_train))
        out_order = np.zeros(0, np.int64)  # no outliers (out_batch 0: standard training)
        if self.out_batch:
            repeats = -(-self.outliers_per_epoch // len(outliers))
            out_order = np.concatenate([rng.permutation(len(outliers)) for _ in range(repeats)])
        for step in range(self.steps_per_epoch):
            i = in_order[step * self.in_batch : (step + 1) * self.in_batch]
            o = out_order[step * self.out_batch : (step + 1) * self.out_batch]
            aug_seed = seed_for(self.seed, epoch, 1, step)
            yield self.data.x_train[i], self.data.y_train[i], outliers[o], aug_seed

    def _signature(self) -> tuple[tf.TensorSpec, ...]:
        return (
            tf.TensorSpec((self.in_batch, 32, 32, 3), tf.uint8),
            tf.TensorSpec((self.in_batch,), tf.int64),
            tf.TensorSpec((self.out_batch, 32, 32, 3), tf.uint8),
            tf.TensorSpec((2,), tf.int64),
        )

    def _prepared(self, generator, augment: bool) -> tf.data.Dataset:
        """(x_in, y_in, x_out) float batches of `generator`'s uint8 ones, the in-distribution
        images augmented (crop and flip, seeded per step) where `augment` is set."""

        def prepare(x_in, y_in, x_out, aug_seed):
            x_in = to_unit_float(x_in)
            if augment:
                x_in = random_crop_flip(x_in, aug_seed)
            return x_in, y_in, to_unit_float(x_out)

        ds = tf.data.Dataset.from_generator(generator, output_signature=self._signature())
        return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)

    def batches_from(self, epoch: int, outliers: np.ndarray, count: int) -> tf.data.Dataset:
        """`count` batches in training's order from epoch `epoch` on, over `outliers` (uint8),
        without waiting for any to be installed and without augmentation: the training images
        as inference sees them, for work after training (re-estimating batch-norm statistics:
        the crops' zero borders would move them away from test images)."""

        def batches():
            epochs = (self._epoch_batches(e, outliers) for e in itertools.count(epoch))
            return itertools.islice(itertools.chain.from_iterable(epochs), count)

        return self._prepared(batches, augment=False)

    def dataset(
        self, epochs: range, replicas: int = 1, local: range | None = None
    ) -> tf.data.Dataset:
        """(x_in, y_in, x_out) batches of `epochs`, each epoch's once its outliers are
        installed; `steps_per_epoch` batches per epoch. With `replicas` > 1, every global batch is
        cut into one share per replica and the shares of the replicas in `local` (this
        worker's) follow each other: replica r gets the r-th share of the in-distribution
        batch and of each half of the outlier batch (the half left clean and the half its
        train step attacks), so N replicas see exactly the batch one device sees."""
        ds = self._prepared(lambda: self._batches(epochs), self.data.augment)
        ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch * len(epochs)))
        if replicas > 1:
            local = local if local is not None else range(replicas)

            def shares(x_in, y_in, x_out):
                def cut(t):
                    return tf.reshape(t, [replicas, -1, *t.shape[1:]])[local.start : local.stop]

                half = self.out_batch // 2
                return cut(x_in), cut(y_in), tf.concat([cut(x_out[:half]), cut(x_out[half:])], 1)

            ds = ds.map(shares).unbatch()
            ds = ds.apply(
                tf.data.experimental.assert_cardinality(
                    self.steps_per_epoch * len(epochs) * len(local)
                )
            )
        return ds.prefetch(2)


def test_dataset(data: InDistributionData, batch_size: int = 256) -> tf.data.Dataset:
    """The in-distribution test set as (images in [0,1], labels) batches."""
    ds = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test)).batch(batch_size)
    return ds.map(lambda x, y: (to_unit_float(x), y)).prefetch(2)
