"""Epoch e must train on the outliers mined at the start of epoch e (Keras keeps the iterator
across epochs and may prefetch; our feed must not be fooled by that)."""

import numpy as np

from atom_tf.data.pipeline import TrainingFeed
from atom_tf.training.methods import get_method
from atom_tf.training.mining import MiningCallback
from atom_tf.training.train_step import RobustOODModel
from tests.helpers import blob_data, tiny_network


class RecordingModel(RobustOODModel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: dict[int, list[np.ndarray]] = {}
        self.current_epoch = 0

    def train_step(self, data):
        self.seen.setdefault(self.current_epoch, []).append(np.asarray(data[2]))
        return super().train_step(data)


class EpochMarker:
    """A miner stand-in: every epoch's outliers carry the epoch number as their value."""

    num_candidates = 8

    def __init__(self, model):
        self.model, self.mined = model, {}

    def mine(self, epoch, score_fn):
        from atom_tf.training.mining import MiningResult

        self.model.current_epoch = epoch
        images = np.full((40, 32, 32, 3), 10 * (epoch + 1), np.uint8)
        images[:, 0, 0, 0] = np.arange(40)  # distinct outliers
        self.mined[epoch] = images
        return MiningResult(epoch, images, None, None, 0.0)


def test_each_epoch_trains_on_its_own_mined_outliers():
    data = blob_data(num_train=96)
    feed = TrainingFeed(data, in_batch=16, out_batch=8, seed=0)
    model = RecordingModel(tiny_network(3), get_method("ntom"), 2)
    model.compile(optimizer="sgd", run_eagerly=True)
    marker = EpochMarker(model)
    model.fit(
        feed.dataset(range(3)),
        epochs=3,
        steps_per_epoch=feed.steps_per_epoch,
        callbacks=[MiningCallback(marker, feed.set_outliers, None, verbose=False)],
        verbose=0,
    )
    assert sorted(model.seen) == [0, 1, 2]
    for epoch, batches in model.seen.items():
        trained = np.concatenate(batches)
        assert len(batches) == feed.steps_per_epoch == 6
        assert np.allclose(trained[:, 1, 1, 1], 10 * (epoch + 1) / 255.0)
        # every one of the 40 mined outliers is used (48 slots: shuffled, then cycled)
        ids = np.round(trained[:, 0, 0, 0] * 255).astype(int)
        assert set(ids) == set(range(40))


def test_batches_from_an_epoch_are_the_ones_training_serves_then_the_next_epochs():
    """Clean batches drawn after training (batch-norm re-estimation) follow training's order and
    augmentation from the epoch asked for, into the next epoch, and the same on every pass."""
    data = blob_data(num_train=48)
    feed = TrainingFeed(data, in_batch=16, out_batch=8, seed=0)
    outliers = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    served = []
    for epoch in (4, 5):
        feed.set_outliers(epoch, outliers)
        served += [
            [np.asarray(t) for t in batch] for batch in feed.dataset(range(epoch, epoch + 1))
        ]
    batches = feed.batches_from(4, outliers, 4)
    for _ in range(2):
        drawn = [[np.asarray(t) for t in batch] for batch in batches]
        assert feed.steps_per_epoch == 3 and len(drawn) == 4
        for got, want in zip(drawn, served, strict=False):
            assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
