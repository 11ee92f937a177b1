import numpy as np
import pytest
import tensorflow as tf

from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.scorers import get_scorer, odin_score, scorer_names

LOGITS = np.array([[2.0, 0.0, -1.0, 3.0], [0.0, 0.0, 0.0, -5.0]], np.float32)  # K = 3 (+1)


def logits_fn(x):
    return tf.constant(LOGITS)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def score(name, k=3):
    return get_scorer(name).score(logits_fn, tf.zeros((2, 32, 32, 3)), k).numpy()


def test_kplus1_is_minus_the_ood_probability():
    np.testing.assert_allclose(score("kplus1"), -softmax(LOGITS)[:, 3], rtol=1e-6)


def test_msp_energy_maxlogit_use_the_first_k_classes():
    k = LOGITS[:, :3]
    np.testing.assert_allclose(score("msp"), softmax(k).max(-1), rtol=1e-6)
    np.testing.assert_allclose(score("energy"), np.log(np.exp(k).sum(-1)), rtol=1e-6)
    np.testing.assert_allclose(score("maxlogit"), k.max(-1), rtol=1e-6)


def test_objectives_follow_the_protocol():
    logits = tf.constant(LOGITS)
    log_p = np.log(softmax(LOGITS))
    np.testing.assert_allclose(
        get_scorer("kplus1").attack_objective(3)(logits).numpy(), -log_p[:, 3], rtol=1e-5
    )
    for name in ("msp", "odin", "energy", "maxlogit"):
        got = get_scorer(name).attack_objective(3)(logits).numpy()
        np.testing.assert_allclose(got, -log_p[:, :3].mean(-1), rtol=1e-5)
    adaptive = get_scorer("msp").attack_objective(3, adaptive=True)(logits).numpy()
    np.testing.assert_allclose(adaptive, score("msp"), rtol=1e-6)


def test_odin_perturbs_the_input_towards_higher_confidence(rng):
    w = tf.constant(rng.normal(size=(32 * 32 * 3, 3)), tf.float32)

    def linear(x):
        return tf.reshape(x, (-1, 32 * 32 * 3)) @ w

    x = tf.constant(rng.random((4, 32, 32, 3)) * 0.5 + 0.25, tf.float32)
    plain = tf.reduce_max(tf.nn.softmax(linear(x) / 1000.0), -1).numpy()
    odin = odin_score(1000.0, 0.0014)(linear, x, 3).numpy()
    assert np.all(odin >= plain)  # the perturbation raises the tempered max-softmax


def test_every_methods_default_scorer_is_registered_and_unknown_names_fail():
    import atom_tf.evaluation  # noqa: F401  (registers mahalanobis)
    from atom_tf.training.methods import get_method, method_names

    names = set(scorer_names())
    assert {"kplus1", "msp", "odin", "energy", "maxlogit", "mahalanobis", "sofl", "rowl"} <= names
    assert all(get_method(m).scorer in names for m in method_names())
    with pytest.raises(InvalidConfigError, match="msp"):
        get_scorer("vos")
