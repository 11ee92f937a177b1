"""Scorers that choose constants on calibration data (ODIN's η, Mahalanobis' statistics and
regression), on a standard (K-way, no outliers) run trained here."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.pgd import pgd_attack
from atom_tf.data import load_in_distribution
from atom_tf.evaluation.calibration import load_calibration
from atom_tf.evaluation.detector import load_run
from atom_tf.evaluation.mahalanobis import (
    MAHALANOBIS_ETAS,
    feature_model,
)
from atom_tf.evaluation.metrics import fpr_at_tpr
from atom_tf.evaluation.scorers import ODIN_ETAS, get_scorer
from atom_tf.training.trainer import TrainConfig, train

FAST = dict(dataset="digits", model="small_cnn", epochs=2, lr_decay_epochs=(1,),
            jit_compile=False, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("standard"))
    summary = train(TrainConfig(method="standard", **FAST), path, verbose=0)
    assert summary["test_accuracy"] > 0.5  # trained without outliers, it still classifies
    return path


def test_odin_eta_is_the_grid_value_with_the_lowest_validation_fpr(standard_run):
    detector, config, data = load_run(standard_run, "odin", scorer_options={"temperature": 1000.0})
    params = detector.scorer_params
    fprs = {float(k): v for k, v in params["validation_fpr95"].items()}
    assert set(fprs) == set(ODIN_ETAS) and params["epsilon"] == min(fprs, key=fprs.get)
    calibration = load_calibration(detector.network, config, data)  # the fit's own check, redone
    from atom_tf.evaluation.scorers import odin_score

    chosen = 100 * fpr_at_tpr(*calibration.scores(odin_score(1000.0, params["epsilon"])))
    assert chosen == pytest.approx(fprs[params["epsilon"]])
    path = os.path.join(standard_run, "scorer_odin.json")
    stamp = os.stat(path).st_mtime_ns
    again, _, _ = load_run(standard_run, "odin", scorer_options={"temperature": 1000.0})
    assert again.scorer_params == params and os.stat(path).st_mtime_ns == stamp  # cached
    fixed, _, _ = load_run(standard_run, "odin",
                           scorer_options={"temperature": 1000.0, "epsilon": 0.001})  # fmt: skip
    assert fixed.scorer_params["epsilon"] == 0.001
    assert fixed.threshold != detector.threshold  # its threshold is recomputed, not reused


@pytest.fixture(scope="module")
def mahalanobis(standard_run):
    detector, config, data = load_run(standard_run, "mahalanobis")
    return detector, config, data


def numpy_mahalanobis(network, params, data, images):
    """Lee et al.'s score without input pre-processing, in NumPy from the features."""
    features = feature_model(network)
    train = [np.asarray(f).mean(axis=(1, 2)).astype(np.float64)
             for f in features(data.x_train.astype(np.float32) / 255)]  # fmt: skip
    test = [np.asarray(f).mean(axis=(1, 2)).astype(np.float64) for f in features(images)]
    columns = []
    for f_train, f_test in zip(train, test, strict=True):
        means = np.stack([f_train[data.y_train == c].mean(0) for c in range(10)])
        centred = f_train - means[data.y_train]
        precision = np.linalg.pinv(centred.T @ centred / len(f_train))
        diff = f_test[:, None, :] - means[None]
        columns.append(-np.einsum("bkd,de,bke->bk", diff, precision, diff).min(-1))
    return np.stack(columns, 1) @ np.array(params["alpha"]) + params["bias"]


def test_mahalanobis_scores_match_numpy(mahalanobis):
    detector, _, data = mahalanobis
    params = detector.scorer_params
    assert params["layers"] == 3 and params["epsilon"] in MAHALANOBIS_ETAS  # small_cnn's 3 stages
    unprocessed = get_scorer("mahalanobis").bind({**params, "epsilon": 0.0}, detector.network, 10)
    images = data.x_test[:40].astype(np.float32) / 255
    got = unprocessed.score(None, tf.constant(images), 10).numpy()
    expected = numpy_mahalanobis(detector.network, params, data, images)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_mahalanobis_attack_raises_eq_116_and_the_score(mahalanobis):
    detector, _, _ = mahalanobis
    rng = np.random.default_rng(0)
    noise = tf.constant(rng.random((32, 32, 32, 3)), tf.float32)
    scorer = detector.scorer
    objective = scorer.attack_objective(10)
    adversarial, best = pgd_attack(scorer.attack_outputs, noise, objective, epsilon=8 / 255,
                                   steps=10, step_size=1 / 255, seed=tf.constant([0, 1]))  # fmt: skip
    clean = objective(scorer.attack_outputs(noise)).numpy()
    assert np.abs(adversarial.numpy() - noise.numpy()).max() <= 8 / 255 + 1e-6
    assert np.all(best.numpy() >= clean - 1e-5) and best.numpy().mean() > clean.mean()
    assert detector.score(adversarial.numpy()).mean() > detector.score(noise.numpy()).mean()


def test_results_record_the_chosen_constants(standard_run, tmp_path):
    from atom_tf.evaluation.runner import EvalSettings, evaluate
    from atom_tf.evaluation.threats import AttackSettings

    settings = EvalSettings(("uniform_noise",), ("natural", "linf"), "mahalanobis",
                            attack=AttackSettings(steps=2), max_ood_images=32)  # fmt: skip
    results = evaluate(standard_run, str(tmp_path / "eval"), settings, verbose=False)
    assert results["scorer_params"]["epsilon"] in MAHALANOBIS_ETAS
    assert "means" not in results["scorer_params"]  # arrays stay in the run's scorer file
    with open(os.path.join(standard_run, "scorer_mahalanobis.json")) as f:
        saved = json.load(f)
    assert len(saved["payload"]["params"]["means"]) == 3


def test_init_from_copies_the_standard_network_and_keeps_new_reject_outputs(standard_run):
    from atom_tf.training.checkpoint import load_weights_checked
    from atom_tf.training.methods import method_for
    from atom_tf.training.networks import build_network, initialise_from_run

    data = load_in_distribution("digits")
    source = build_network("small_cnn", method_for({"method": "standard"}), 10, None)
    load_weights_checked(source, os.path.join(standard_run, "network.weights.h5"))
    sofl = method_for({"method": "sofl", "reject_classes": 3})
    target = build_network("small_cnn", sofl, 10, None)
    fresh = [np.asarray(w).copy() for w in target.weights]
    initialise_from_run(target, sofl, 10, None, standard_run, "digits", "small_cnn")
    for new, old, init in zip(target.weights, source.weights, fresh, strict=True):
        new, old = np.asarray(new), np.asarray(old)
        if new.shape == old.shape:
            np.testing.assert_array_equal(new, old)
        else:  # the output layer: K class outputs copied, R reject outputs as initialised
            np.testing.assert_array_equal(new[..., :10], old)
            np.testing.assert_array_equal(new[..., 10:], init[..., 10:])
    images = data.x_test[:8].astype(np.float32) / 255
    np.testing.assert_allclose(target(images)[:, :10], source(images), atol=1e-5)
    from atom_tf.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="not wrn_40_2"):
        initialise_from_run(target, sofl, 10, None, standard_run, "digits", "wrn_40_2")


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, extra",
    [("sofl", {"init_from": True, "out_batch": 320}), ("energy", {"init_from": True, "learning_rate": 0.001}),
     ("ccu", {}), ("rowl", {"num_candidates": 256, "num_selected": 256}), ("acet", {}),
     ("atom_energy", {"num_candidates": 1024, "num_selected": 256})],
)  # fmt: skip
def test_each_baseline_trains_resumes_and_is_evaluated(standard_run, tmp_path, method, extra):
    from atom_tf.evaluation.runner import EvalSettings, evaluate
    from atom_tf.evaluation.threats import AttackSettings

    extra = dict(extra)
    if extra.pop("init_from", False):  # fine-tuned at a tenth of the rate
        extra = {"init_from": standard_run, "learning_rate": 0.01, **extra}
    config = TrainConfig(method=method, **{**FAST, "num_selected": 512, **extra})
    run = str(tmp_path / method)
    summary = train(config, run, verbose=0)
    with open(os.path.join(run, "history.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert train(config, run, verbose=0) == summary  # finished earlier: nothing redone
    settings = EvalSettings(("uniform_noise",), ("natural", "linf"),
                            attack=AttackSettings(steps=2), max_ood_images=32)  # fmt: skip
    results = evaluate(run, str(tmp_path / "eval"), settings, verbose=False)
    expected = {"sofl": "sofl", "rowl": "rowl", "energy": "energy", "atom_energy": "energy"}
    assert results["settings"]["scorer"] == expected.get(method, "msp")
    assert 0 <= results["average"]["linf"]["fpr95"] <= 100
