"""Tiny models and data shared by the tests."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from atom_tf.data.in_distribution import InDistributionData


def blob_data(num_train: int = 256, num_test: int = 64, seed: int = 0) -> InDistributionData:
    """Two easy classes of 32×32 images: a bright left half or a bright right half."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 2, n)
        x = rng.integers(0, 60, (n, 32, 32, 3))
        for i, label in enumerate(y):
            x[i, :, 16 * label : 16 * label + 16] += 150
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    return InDistributionData("blobs", x_train, y_train, x_test, y_test, 2, False, None)


def tiny_network(num_outputs: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))


def linear_network(num_outputs: int, seed: int = 0) -> keras.Model:
    """A linear model on the flattened image: PGD against it is easy to reason about."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))


def as_float(images: np.ndarray) -> tf.Tensor:
    return tf.constant(images, tf.float32) / 255.0


def random_batch(rng, n_in: int = 8, n_out: int = 8):
    """(x_in, y_in, x_out): random images in [0,1] and binary labels, a train step's input."""
    return (
        tf.constant(rng.random((n_in, 32, 32, 3)), tf.float32),
        tf.constant(rng.integers(0, 2, n_in)),
        tf.constant(rng.random((n_out, 32, 32, 3)), tf.float32),
    )


def h5_arrays(path: str) -> dict:
    """Every dataset of an HDF5 file (a Keras weights file), by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.update(
            {name: np.asarray(obj)} if isinstance(obj, h5py.Dataset) else {}))  # fmt: skip
    return arrays


def edge_images(rng, n: int = 16) -> tf.Tensor:
    """Random images with values at both edges of the unit box (where clipping matters)."""
    x = tf.constant(rng.random((n, 32, 32, 3)), tf.float32)
    return tf.where(x < 0.1, 0.0, tf.where(x > 0.9, 1.0, x))


def check_attack_result(model, x, adv, value, objective, epsilon: float, gain: float = 0.0):
    """An attack's contract: the adversarial images lie in the ε-ball and the unit box, their
    objective is the one returned, never below the clean one, and higher on average by more
    than `gain`."""
    assert float(tf.reduce_max(tf.abs(adv - x))) <= epsilon + 1e-6
    assert float(tf.reduce_min(adv)) >= 0.0 and float(tf.reduce_max(adv)) <= 1.0
    clean = objective(model(x, training=False)).numpy()
    assert np.all(value.numpy() >= clean - 1e-6)
    np.testing.assert_allclose(value.numpy(), objective(model(adv, training=False)).numpy(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert value.numpy().mean() > clean.mean() + gain


def trained_digits_cnn(x: np.ndarray, y: np.ndarray, outputs: int, seed: int = 1) -> keras.Model:
    """A small ReLU CNN (two strided convolutions, 32 hidden units) fitted for 5 epochs of Adam
    on float images `x` and integer labels `y`: a trained model for attack tests."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, keras.layers.Dense(outputs)(h))
    model.compile(keras.optimizers.Adam(0.003),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return model


def train_interrupted_then_resumed(config, run_dir: str, monkeypatch) -> dict:
    """Trains `config` in `run_dir`, stopped (KeyboardInterrupt) once its first epoch's
    checkpoint is written, then run again to the end; returns the resumed run's summary."""
    import pytest

    from atom_tf.training import trainer as trainer_module

    original = trainer_module.EpochCheckpoint.on_epoch_end

    def stop_after_first(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.EpochCheckpoint, "on_epoch_end", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        trainer_module.train(config, run_dir, verbose=0)
    monkeypatch.setattr(trainer_module.EpochCheckpoint, "on_epoch_end", original)
    return trainer_module.train(config, run_dir, verbose=0)


def assert_same_weights_file(path_a, path_b) -> int:
    """Two Keras weights files hold the same arrays, bit for bit; returns how many."""
    a, b = h5_arrays(path_a), h5_arrays(path_b)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    return len(a)
