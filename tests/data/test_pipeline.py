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


def test_batches_from_an_epoch_follow_trainings_order_unaugmented_into_the_next_epoch():
    """Clean batches drawn after training (batch-norm re-estimation) take training's images,
    labels and outliers in its order from the epoch asked for, into the next epoch, the same on
    every pass, but the in-distribution images as inference sees them: not cropped or flipped."""
    import dataclasses

    data = dataclasses.replace(blob_data(num_train=48), augment=True)
    feed = TrainingFeed(data, in_batch=16, out_batch=8, seed=0)
    outliers = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    served = []
    for epoch in (4, 5):
        feed.set_outliers(epoch, outliers)
        served += [
            [np.asarray(t) for t in batch] for batch in feed.dataset(range(epoch, epoch + 1))
        ]
    originals = {
        image.tobytes(): label for image, label in zip(data.x_train, data.y_train, strict=True)
    }
    batches = feed.batches_from(4, outliers, 4)
    for _ in range(2):
        drawn = [[np.asarray(t) for t in batch] for batch in batches]
        assert feed.steps_per_epoch == 3 and len(drawn) == 4
        for (x_in, y_in, x_out), (x_trained, y_trained, x_out_trained) in zip(
            drawn, served, strict=False
        ):
            assert np.array_equal(y_in, y_trained) and np.array_equal(x_out, x_out_trained)
            raw = np.round(x_in * 255).astype(np.uint8)
            assert [originals.get(image.tobytes()) for image in raw] == y_in.tolist()
            assert not np.array_equal(x_in, x_trained)  # training's were augmented
