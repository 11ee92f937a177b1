import numpy as np
import tensorflow as tf

from atom_tf.attacks.objectives import kplus1_ce, uniform_ce
from atom_tf.attacks.pgd import pgd_attack
from tests.helpers import tiny_network

EPS = 8 / 255


def attack(model, x, objective=kplus1_ce, steps=10, **kw):
    return pgd_attack(
        lambda z: model(z, training=False), x, objective, epsilon=EPS, steps=steps,
        step_size=2 / 255, seed=tf.constant([1, 2], tf.int64), **kw,
    )  # fmt: skip


def test_stays_in_the_eps_ball_and_unit_box(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((16, 32, 32, 3)), tf.float32)
    x = tf.where(x < 0.1, 0.0, tf.where(x > 0.9, 1.0, x))  # values at the box edges
    for unroll in (True, False):
        adv, _ = attack(model, x, unroll=unroll, restarts=2)
        assert float(tf.reduce_max(tf.abs(adv - x))) <= EPS + 1e-6
        assert float(tf.reduce_min(adv)) >= 0.0 and float(tf.reduce_max(adv)) <= 1.0


def test_raises_the_objective_and_never_below_clean(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((32, 32, 32, 3)), tf.float32)
    for objective in (kplus1_ce, uniform_ce):
        clean = objective(model(x, training=False)).numpy()
        adv, value = attack(model, x, objective)
        assert np.all(value.numpy() >= clean - 1e-6)
        assert np.allclose(value.numpy(), objective(model(adv, training=False)).numpy(), atol=1e-5)
        assert value.numpy().mean() > clean.mean() + 1e-3


def test_more_steps_never_worse_on_average(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((32, 32, 32, 3)), tf.float32)
    means = [attack(model, x, steps=s)[1].numpy().mean() for s in (1, 5, 20)]
    assert means[0] <= means[1] + 1e-6 <= means[2] + 2e-6


def test_unrolled_and_looped_agree_and_seed_reproduces(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((8, 32, 32, 3)), tf.float32)
    a, _ = attack(model, x, steps=3, unroll=True)
    b, _ = attack(model, x, steps=3, unroll=False)
    c, _ = attack(model, x, steps=3, unroll=False)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert np.array_equal(b.numpy(), c.numpy())


def test_random_start_is_on_the_1_over_255_grid():
    model = tiny_network(3)
    x = tf.fill((4, 32, 32, 3), 0.5)
    adv, _ = attack(model, x, steps=0)  # zero steps: best of clean and the random start
    steps = (adv.numpy() - 0.5) * 255
    assert np.allclose(steps, np.round(steps), atol=1e-3)


def test_kplus1_objective_equals_minus_log_softmax_and_keeps_its_gradient_direction():
    logits = tf.constant([[1.0, -2.0, 0.5], [3.0, 0.0, 40.0], [-5.0, 2.0, 0.0]])
    np.testing.assert_allclose(
        kplus1_ce(logits).numpy(), -tf.nn.log_softmax(logits)[:, -1].numpy(), rtol=1e-5, atol=1e-6
    )
    confident = tf.Variable([[0.0, 1.0, 60.0]])  # F(x)_{K+1} rounds to 1 in float32
    with tf.GradientTape() as tape:
        value = kplus1_ce(confident)
    grad = tape.gradient(value, confident).numpy()[0]
    assert grad[2] < 0 and grad[0] > 0 and grad[1] > 0  # lowering f_{K+1} is part of the ascent
