"""The Square attack (atom_tf.attacks.square): its window schedule by hand, the ε-ball and the
unit box, an objective that only rises, and success without any gradient."""

import numpy as np
import tensorflow as tf

from atom_tf.attacks.objectives import kplus1_ce
from atom_tf.attacks.square import square_attack, window_share
from tests.helpers import check_attack_result, edge_images, tiny_network

EPS = 8 / 255
SEED = tf.constant([5, 6], tf.int64)


def test_the_window_shrinks_on_the_published_schedule():
    share = lambda q, budget=10000: round(float(window_share(tf.constant(q), budget)), 7)  # noqa: E731
    assert share(0) == share(10) == 0.8
    assert share(11) == share(50) == 0.4
    assert share(51) == 0.2 and share(201) == 0.1 and share(8001) == round(0.8 / 512, 7)
    # a budget of 1,000 rescales the marks: 10 of 10,000 is 1 query, 50 is 5
    assert share(1, 1000) == 0.8 and share(2, 1000) == share(5, 1000) == 0.4
    assert share(6, 1000) == 0.2


def test_stays_in_the_eps_ball_and_unit_box_and_only_raises_the_objective(rng):
    model = tiny_network(3)
    x = edge_images(rng)
    adv, value = square_attack(lambda z: model(z, training=False), x, kplus1_ce, epsilon=EPS,
                               queries=60, seed=SEED)  # fmt: skip
    check_attack_result(model, x, adv, value, kplus1_ce, EPS)


def test_finds_an_accepted_perturbation_of_a_linear_detector_without_gradients(rng):
    """score(x) = w·x with w of one sign per channel and image quadrant, accepted when
    score > threshold, the threshold 60 % of the way from the clean score to the best one in
    the ball. The score reaches the attack only through tf.stop_gradient: there is no
    gradient to follow."""
    quadrants = rng.choice([-1.0, 1.0], (2, 2, 3))
    w = tf.constant(np.repeat(np.repeat(quadrants, 16, axis=0), 16, axis=1), tf.float32)
    x = tf.constant(rng.uniform(0.2, 0.8, (8, 32, 32, 3)), tf.float32)  # the box never binds
    clean = tf.reduce_sum(x * w, axis=[1, 2, 3])
    threshold = clean + 0.6 * EPS * float(tf.reduce_sum(tf.abs(w)))

    def score(images):
        return tf.stop_gradient(tf.reduce_sum(images * w, axis=[1, 2, 3]))[:, None]

    with tf.GradientTape() as tape:
        tape.watch(x)
        assert tape.gradient(tf.reduce_sum(score(x)), x) is None
    attack = tf.function(lambda images: square_attack(score, images, lambda s: s[:, 0],
                                                      epsilon=EPS, queries=1000, seed=SEED))  # fmt: skip
    adv, value = attack(x)
    assert np.all(value.numpy() > threshold.numpy())  # every sample accepted
    assert float(tf.reduce_max(tf.abs(adv - x))) <= EPS + 1e-6


def test_the_same_seed_gives_the_same_attack(rng):
    model = tiny_network(3)
    x = tf.constant(rng.random((4, 32, 32, 3)), tf.float32)
    run = lambda: square_attack(lambda z: model(z, training=False), x, kplus1_ce,  # noqa: E731
                                epsilon=EPS, queries=20, seed=SEED)[0].numpy()  # fmt: skip
    assert np.array_equal(run(), run())
