"""APGD (atom_tf.attacks.apgd): its checkpoint schedule by hand, the ε-ball and the unit box,
an objective that only rises, and at least PGD's objective at equal iterations on a trained
model."""

import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.apgd import apgd_attack, checkpoints
from atom_tf.attacks.objectives import kplus1_ce, uniform_ce
from atom_tf.attacks.pgd import pgd_attack
from atom_tf.data import load_in_distribution
from tests.helpers import (
    as_float,
    check_attack_result,
    edge_images,
    tiny_network,
    trained_digits_cnn,
)

EPS = 8 / 255
SEED = tf.constant([3, 4], tf.int64)


def test_checkpoints_follow_the_published_schedule():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (increments .19, .16, .13, .10, .07, .06, ...)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # intervals never below one step
    assert checkpoints(1) == [1]


def attack(model, x, objective, steps=10, **kw):
    return apgd_attack(lambda z: model(z, training=False), x, objective, epsilon=EPS,
                       steps=steps, seed=SEED, **kw)  # fmt: skip


def test_stays_in_the_eps_ball_and_unit_box_and_only_raises_the_objective(rng):
    model = tiny_network(3)
    x = edge_images(rng)
    for objective in (kplus1_ce, uniform_ce):
        adv, value = attack(model, x, objective, restarts=2)
        check_attack_result(model, x, adv, value, objective, EPS, gain=1e-3)


@pytest.fixture(scope="module")
def trained():
    """A small ReLU classifier of the embedded digits (about 94 % test accuracy), and the
    logit margin max_{i≠y} z_i − z_y of its first 64 test images (it does not saturate as a
    float32 cross-entropy does)."""
    data = load_in_distribution("digits")
    model = trained_digits_cnn(as_float(data.x_train), data.y_train, 10)
    labels = tf.one_hot(data.y_test[:64], 10)

    def margin(logits):
        return tf.reduce_max(logits - 1e9 * labels, -1) - tf.reduce_sum(logits * labels, -1)

    return model, as_float(data.x_test[:64]), margin


def test_reaches_at_least_pgds_objective_at_equal_iterations(trained):
    """At ε = 8/255 and 16/255 (where the margin is far from linear in the input), 40
    iterations each, PGD with its evaluation step ε/4."""
    model, x, margin = trained
    assert float(tf.reduce_mean(tf.cast(margin(model(x)) < 0, tf.float32))) > 0.85  # accurate
    for epsilon in (8 / 255, 16 / 255):
        _, pgd = pgd_attack(lambda z: model(z, training=False), x, margin, epsilon=epsilon,
                            steps=40, step_size=epsilon / 4, seed=SEED)  # fmt: skip
        _, apgd = apgd_attack(lambda z: model(z, training=False), x, margin, epsilon=epsilon,
                              steps=40, seed=SEED)  # fmt: skip
        assert apgd.numpy().mean() >= pgd.numpy().mean(), epsilon
        assert np.mean(apgd.numpy() >= pgd.numpy() - 1e-4) >= 0.9, epsilon


def test_the_same_seed_gives_the_same_attack_and_it_compiles(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((4, 32, 32, 3)), tf.float32)
    a, _ = attack(model, x, kplus1_ce, steps=6)
    compiled = tf.function(lambda z: attack(model, z, kplus1_ce, steps=6)[0], jit_compile=False)
    np.testing.assert_allclose(a.numpy(), compiled(x).numpy(), atol=1e-6)
