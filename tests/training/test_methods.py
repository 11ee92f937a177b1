"""The paper's baselines (Appendix B.3/B.4): their losses on hand-made logits, one training step
of each lowering its loss, their scorers and attacker objectives."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.objectives import (
    best_reject_ce,
    energy_hinge_in,
    energy_hinge_out,
    label_ce,
    uniform_ce,
)
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.training.methods import get_method, method_for
from atom_tf.training.train_step import RobustOODModel
from tests.helpers import linear_network, tiny_network
from tests.helpers import random_batch as batch

LOGITS = np.array([[2.0, 0.0, -1.0, 3.0, 1.0], [0.0, 0.0, 0.0, -5.0, -2.0]], np.float32)


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_energy_hinges_match_their_definition():
    energy = -np.log(np.exp(LOGITS).sum(-1))  # E(x) = -logsumexp f(x)
    got_in = energy_hinge_in(-3.0)(tf.constant(LOGITS)).numpy()
    got_out = energy_hinge_out(-1.0)(tf.constant(LOGITS)).numpy()
    np.testing.assert_allclose(got_in, np.maximum(0, energy - (-3.0)) ** 2, rtol=1e-5)
    np.testing.assert_allclose(got_out, np.maximum(0, -1.0 - energy) ** 2, rtol=1e-5)


def test_sofl_loss_labels_each_outlier_with_its_likeliest_reject_class():
    log_p = log_softmax(LOGITS)  # K = 3, R = 2: outputs 3 and 4 are the reject classes
    expected = -np.maximum(log_p[:, 3], log_p[:, 4])
    np.testing.assert_allclose(best_reject_ce(2)(tf.constant(LOGITS)).numpy(), expected, rtol=1e-5)


def test_sofl_and_rowl_scores_and_objectives():
    p = np.exp(log_softmax(LOGITS))
    sofl = get_scorer("sofl")
    got = sofl.score(lambda x: tf.constant(LOGITS), tf.zeros((2, 32, 32, 3)), 3).numpy()
    np.testing.assert_allclose(got, -(p[:, 3] + p[:, 4]), rtol=1e-5)  # -Σ_{i>K} F_i
    objective = sofl.attack_objective(3)(tf.constant(LOGITS)).numpy()
    np.testing.assert_allclose(objective, -np.log(p[:, 3] + p[:, 4]), rtol=1e-5)  # eq. 117
    logits = LOGITS[:, :4]  # K = 3 + 1 background class
    rowl = get_scorer("rowl")
    got = rowl.score(lambda x: tf.constant(logits), tf.zeros((2, 32, 32, 3)), 3).numpy()
    np.testing.assert_array_equal(got, [0.0, 1.0])  # binary: the background class wins row 0
    objective = rowl.attack_objective(3)(tf.constant(logits)).numpy()
    np.testing.assert_allclose(objective, -log_softmax(logits)[:, 3], rtol=1e-5)  # eq. 118


@pytest.mark.parametrize("name", ["standard", "acet", "sofl", "rowl", "energy", "atom_energy"])
def test_training_lowers_each_baselines_loss(name, rng):
    method = method_for({"method": name, "reject_classes": 2, "margin_in": -3.0,
                         "margin_out": -1.0})  # fmt: skip
    model = RobustOODModel(tiny_network(method.num_outputs(2)), method, 2)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    x_in, y_in, x_out = batch(rng, n_out=0 if name == "standard" else 8)
    data = tf.data.Dataset.from_tensors((x_in, y_in, x_out)).repeat()
    history = model.fit(data, epochs=4, steps_per_epoch=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_sofl_network_has_r_reject_outputs():
    assert method_for({"method": "sofl", "reject_classes": 10}).num_outputs(100) == 110
    assert method_for({"method": "sofl"}).num_outputs(10) == 15


@pytest.mark.parametrize("name", ["atom", "acet", "atom_energy"])
def test_outlier_attack_stays_in_the_ball_and_raises_the_methods_objective(name, rng):
    method = get_method(name)
    model = RobustOODModel(linear_network(3), method, 3)
    model.compile(optimizer="sgd")
    _, _, outliers = batch(rng, n_out=16)
    mixed = model.attack_outliers(outliers)
    assert np.array_equal(mixed[:8].numpy(), outliers[:8].numpy())  # half left clean
    delta = np.abs(mixed[8:].numpy() - outliers[8:].numpy())
    assert 0 < delta.max() <= 8 / 255 + 1e-6
    objective = method.pgd_objective()
    before = objective(model.network(outliers[8:])).numpy()
    after = objective(model.network(mixed[8:])).numpy()
    assert np.all(after >= before - 1e-6) and after.mean() > before.mean()


def test_rowl_attacks_every_outlier_and_the_in_distribution_batch(rng):
    method = get_method("rowl")
    model = RobustOODModel(linear_network(3), method, 2)
    model.compile(optimizer="sgd")
    x_in, y_in, outliers = batch(rng)
    attacked = model.attack_outliers(outliers)
    assert np.all(np.abs(attacked.numpy() - outliers.numpy()).reshape(8, -1).max(1) > 0)
    adversarial = model._attack(x_in, lambda logits: label_ce(logits, y_in), 7919)
    assert np.abs(adversarial.numpy() - x_in.numpy()).max() <= 8 / 255 + 1e-6
    before = label_ce(model.network(x_in), y_in).numpy()
    after = label_ce(model.network(adversarial), y_in).numpy()
    assert after.mean() > before.mean()


def test_acet_and_oe_share_the_uniform_objective():
    assert get_method("acet").pgd_objective() is uniform_ce
    assert get_method("acet").outlier_weight == 1.0 and get_method("oe").outlier_weight == 0.5


def _ccu_network(rng, gradient_scale=1e-3):
    from atom_tf.training.ccu import initialise_ccu, wrap_ccu

    base = tiny_network(3)
    network = wrap_ccu(base, 3, centres=4, gradient_scale=gradient_scale)
    colours = rng.random((64, 1, 1, 3)) * 40 + 100  # plain greyish images
    data = np.broadcast_to(colours, (64, 32, 32, 3)).astype(np.uint8)
    outliers = (rng.random((64, 32, 32, 3)) * 255).astype(np.uint8)  # noise
    initialise_ccu(network, data, outliers, seed=0)
    return base, network, data, outliers


def test_ccu_is_uniform_far_from_the_data_and_the_classifier_near_it(rng):
    base, network, data, outliers = _ccu_network(rng)
    near = network(tf.constant(data[:8], tf.float32) / 255).numpy()
    far = network(tf.constant(outliers[:8], tf.float32) / 255).numpy()
    np.testing.assert_allclose(np.exp(near).sum(-1), 1.0, rtol=1e-4)  # log-probabilities
    np.testing.assert_allclose(far, np.log(1 / 3), atol=1e-3)  # uniform on the noise
    classifier = tf.nn.log_softmax(base(tf.constant(data[:8], tf.float32) / 255)).numpy()
    np.testing.assert_allclose(near, classifier, atol=1e-3)  # the classifier on the data
    model = RobustOODModel(network, get_method("ccu"), 3)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    batches = (tf.constant(data[:16], tf.float32) / 255, tf.constant(rng.integers(0, 3, 16)),
               tf.constant(outliers[:16], tf.float32) / 255)  # fmt: skip
    history = model.fit(tf.data.Dataset.from_tensors(batches).repeat(), epochs=3,
                        steps_per_epoch=5, verbose=0).history  # fmt: skip
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert history["density_loss"][-1] < history["density_loss"][0]  # the mixtures fit better


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    from atom_tf.training.ccu import scale_gradient

    x = tf.Variable([1.0, -2.0])
    with tf.GradientTape() as tape:
        y = scale_gradient(x, 1e-3)
        loss = tf.reduce_sum(y**2)
    np.testing.assert_allclose(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 1e-3 * 2 * x.numpy(), rtol=1e-5)


def _one_step_changes(gradient_scale: float, weight_decay: float) -> list[tuple]:
    """(is a mixture variable, its value, its change) per trainable variable, one SGD step."""
    keras.utils.set_random_seed(0)
    _, network, data, outliers = _ccu_network(np.random.default_rng(0), gradient_scale)
    model = RobustOODModel(network, get_method("ccu"), 3, weight_decay=weight_decay)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    variables = network.trainable_variables
    before = [v.numpy().copy() for v in variables]
    batches = (tf.constant(data[:16], tf.float32) / 255, tf.constant(np.arange(16) % 3),
               tf.constant(outliers[:16], tf.float32) / 255)  # fmt: skip
    model.train_step(batches)
    mixtures = {id(v) for v in network.density.mixture_variables}
    return [(id(v) in mixtures, b, v.numpy() - b) for v, b in zip(variables, before, strict=True)]


def test_ccu_mixtures_train_at_their_own_rate_without_weight_decay():
    plain = _one_step_changes(0.1, 0.0)
    decayed = _one_step_changes(0.1, 10.0)
    scaled = _one_step_changes(1e-3, 0.0)
    assert sum(mixture for mixture, _, _ in plain) == 4
    for (mixture, value, change), (*_, with_decay), (*_, slower) in zip(
        plain, decayed, scaled, strict=True
    ):
        assert np.abs(change).max() > 0
        rounding = 4 * np.finfo(np.float32).eps * np.abs(value).max()  # of a float32 change
        if mixture:  # untouched by weight decay, moved at 1 % of the rate
            np.testing.assert_allclose(with_decay, change, rtol=1e-4, atol=rounding)
            np.testing.assert_allclose(slower, 0.01 * change, rtol=1e-2, atol=rounding)
        else:  # the classifier: decayed (lr 0.01 × decay 10), at the full rate
            np.testing.assert_allclose(with_decay - change, -0.1 * value, rtol=1e-3, atol=1e-6)
            np.testing.assert_allclose(slower, change, rtol=1e-4, atol=1e-7)


def test_ccu_mixture_learning_rate_is_relative_to_the_base_rate():
    method = method_for({"method": "ccu", "learning_rate": 0.1, "mixture_learning_rate": 1e-5})
    network = method.wrap_network(tiny_network(3), 3)
    assert network.density.gradient_scale == pytest.approx(1e-4)


def test_ccu_densities_stay_float32_under_mixed_precision():
    from atom_tf.distribution import precision_policy
    from atom_tf.training.ccu import wrap_ccu

    with precision_policy("mixed_bfloat16"):
        network = wrap_ccu(tiny_network(3), 3, centres=4)
        log_in, _ = network.density(tf.random.uniform((2, 32, 32, 3)))
    assert network.density.compute_dtype == "float32" and log_in.dtype == tf.float32
