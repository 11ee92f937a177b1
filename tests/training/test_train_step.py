import keras
import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.objectives import kplus1_ce
from atom_tf.training.methods import get_method
from atom_tf.training.train_step import RobustOODModel
from tests.helpers import random_batch as batch
from tests.helpers import tiny_network


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
