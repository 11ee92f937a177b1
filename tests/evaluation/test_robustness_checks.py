"""Gradient-masking checks: a detector whose gradient is masked (a quantising input layer with
a zero gradient) fails them with warnings naming it; the same detector without the mask
passes them all."""

import numpy as np
import pytest
import tensorflow as tf

from atom_tf.evaluation.robustness_checks import EPSILONS, STEPS, robustness_checks
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import AttackSettings, ThreatContext
from tests.helpers import tiny_network


def tiny_detector(masked: bool, side: str = "ood") -> ThreatContext:
    """A tiny K+1 detector's threat context on `side`; `masked`: the network sees its input
    quantised to eighths, so its input gradient is zero."""
    model = tiny_network(3, seed=2)
    scorer = get_scorer("kplus1")

    def logits_fn(x):
        if masked:
            x = 0.0 * x + tf.stop_gradient(tf.round(x * 8) / 8)
        return model(x, training=False)

    def score_fn(images):
        return scorer.score(logits_fn, tf.constant(images, tf.float32), 2).numpy()

    return ThreatContext(logits_fn, scorer, 2, AttackSettings(queries=100), score_fn,
                         batch_size=8, verbose=False, seed=1, side=side)  # fmt: skip


def checks(masked: bool, degenerate: bool = False) -> dict:
    """The checks of a tiny detector; `degenerate`: a tenth of its in-distribution scores tie
    at a floor below every OOD score, so its threshold accepts every OOD image (FPR95 100 %
    clean, as CCU's at CPU scale) and only AUROC can show what an attack does."""
    ctx = tiny_detector(masked)
    rng = np.random.default_rng(0)
    ood = rng.random((8, 32, 32, 3)).astype(np.float32)
    # in-distribution scores just above every clean OOD score: clean FPR95 is 0
    in_scores = ctx.score_fn(ood).max() + 0.02 + 0.05 * rng.random(100)
    if degenerate:
        in_scores = np.concatenate([in_scores, np.full(11, ctx.score_fn(ood).min() - 1.0)])
    return robustness_checks(in_scores, ood, ctx, "tiny detector")


@pytest.fixture(scope="module")
def honest():
    return checks(masked=False)


def test_an_unmasked_detector_passes_and_fails_completely_at_large_epsilon(honest):
    assert honest["warnings"] == []
    assert honest["epsilon"][str(EPSILONS[-1])]["fpr95"] >= 90
    assert honest["epsilon"]["1"]["fpr95"] <= honest["epsilon"]["64"]["fpr95"]
    assert list(honest["steps"]) == [str(s) for s in STEPS]
    assert honest["square_beats_white_box"] <= 5


def test_a_masked_gradient_raises_the_warnings_naming_the_detector():
    masked = checks(masked=True)
    assert masked["square_beats_white_box"] > 50
    text = "\n".join(masked["warnings"])
    assert "tiny detector: the black-box check failed" in text
    assert "tiny detector: the ε-curve check failed" in text
    assert "on OOD images" in text and "on in-distribution images" not in text


@pytest.mark.parametrize("masked", [False, True])
def test_a_degenerate_threshold_leaves_the_checks_to_auroc(masked):
    result = checks(masked=masked, degenerate=True)
    assert all(v["fpr95"] == 100.0 for v in result["epsilon"].values())  # FPR95 says nothing
    text = "\n".join(result["warnings"])
    if masked:
        assert (
            "tiny detector: the ε-curve check failed on OOD images: at ε = 64/255 AUROC is" in text
        )
    else:
        assert result["epsilon"]["64"]["auroc"] < result["clean"]["auroc"] - 2
        assert result["warnings"] == []


def in_side_checks(masked: bool) -> dict:
    """The checks of the tiny detector's in-distribution side: images it accepts, attacked
    towards OOD, read against the clean OOD scores of other images."""
    ctx = tiny_detector(masked, side="in")
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 3)).astype(np.float32)
    clean = ctx.score_fn(images)
    # the clean threshold (the 6th lowest in-distribution score) just below every image's
    # score: none rejected clean; the clean OOD scores just below the threshold
    in_scores = clean.min() - 0.01 + 0.05 * rng.random(100)
    in_scores = np.concatenate([in_scores, np.full(5, clean.min() - 0.2)])
    ood_scores = in_scores[:100].min() - 0.001 - 0.002 * rng.random(20)
    return robustness_checks(in_scores, images, ctx, "tiny detector", ood_scores)


def test_the_in_distribution_side_is_checked_by_its_rejected_share():
    honest = in_side_checks(masked=False)
    assert honest["side"] == "in" and "fpr95" not in honest["clean"]
    assert honest["clean"]["rejected"] == 0.0 and honest["clean"]["auroc"] == 100.0
    assert honest["epsilon"]["64"]["rejected"] >= 90
    assert honest["epsilon"]["64"]["auroc"] < honest["clean"]["auroc"] - 2
    assert honest["warnings"] == []
    masked = in_side_checks(masked=True)
    text = "\n".join(masked["warnings"])
    assert "in-distribution images are rejected as OOD (expected ≥ 90 %)" in text
    assert "tiny detector: the black-box check failed" in text and "of in-distribution" in text


def test_the_in_distribution_side_needs_clean_ood_scores():
    ctx = tiny_detector(masked=False, side="in")
    with pytest.raises(ValueError, match="need clean OOD scores"):
        robustness_checks(np.zeros(10), np.zeros((2, 32, 32, 3), np.float32), ctx, "d")
