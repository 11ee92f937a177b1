import keras
import numpy as np
import pytest
import tensorflow as tf

from atom_tf.training.methods import get_method
from atom_tf.training.objectives import kplus1_ce
from atom_tf.training.train_step import RobustOODModel
from tests.helpers import linear_network, tiny_network


def batch(rng, n_in=8, n_out=8):
    return (
        tf.constant(rng.random((n_in, 32, 32, 3)), tf.float32),
        tf.constant(rng.integers(0, 2, n_in)),
        tf.constant(rng.random((n_out, 32, 32, 3)), tf.float32),
    )


@pytest.mark.parametrize("method", ["atom", "ntom", "oe"])
@pytest.mark.parametrize("jit", [True, False])
def test_train_step_runs_compiled_and_lowers_the_loss(method, jit, rng):
    m = get_method(method)
    model = RobustOODModel(tiny_network(m.num_outputs(2)), m, 2)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), jit_compile=jit
    )
    data = tf.data.Dataset.from_tensors(batch(rng)).repeat()
    history = model.fit(data, epochs=4, steps_per_epoch=10, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert ("out_accuracy" in history) == m.kplus1


def test_attacked_half_is_in_the_ball_and_harder(rng):
    m = get_method("atom")
    model = RobustOODModel(linear_network(3), m, 2)
    model.compile(optimizer="sgd")
    _, _, outliers = batch(rng, n_out=16)
    mixed = model.attack_outliers(outliers)
    assert np.array_equal(mixed[:8].numpy(), outliers[:8].numpy())  # clean half untouched
    delta = np.abs(mixed[8:].numpy() - outliers[8:].numpy())
    assert delta.max() <= 8 / 255 + 1e-6 and delta.max() > 0
    before = kplus1_ce(model.network(outliers[8:])).numpy()
    after = kplus1_ce(model.network(mixed[8:])).numpy()
    assert np.all(after >= before - 1e-6) and after.mean() > before.mean()


def test_weight_decay_is_added_to_every_gradient(rng):
    """With lr 1, no momentum and a zero-loss-gradient variable, one step shrinks weights by
    exactly lr·wd·w (PyTorch-style coupled decay)."""
    m = get_method("ntom")
    net = tiny_network(3)
    model = RobustOODModel(net, m, 2, weight_decay=0.1)
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    bias = net.layers[-1].bias
    bias.assign([0.5, -0.5, 0.25])
    x_in, y_in, x_out = batch(rng)
    with tf.GradientTape() as tape:
        logits = net(tf.concat([x_in, x_out], 0), training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_in, tf.int32), logits[:8])
        )
        loss += tf.reduce_mean(kplus1_ce(logits[8:]))
    grad = tape.gradient(loss, bias).numpy()
    expected = np.array([0.5, -0.5, 0.25]) - (grad + 0.1 * np.array([0.5, -0.5, 0.25]))
    model.fit(tf.data.Dataset.from_tensors((x_in, y_in, x_out)), epochs=1, verbose=0)
    np.testing.assert_allclose(bias.numpy(), expected, atol=1e-5)
