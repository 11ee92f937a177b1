"""The L∞ threat with each `--attack`: the paper's PGD unchanged, APGD and Square in the ball,
the ensemble never weaker than any of its members on any image and its winners recorded;
the added settings leave the identity of earlier results unchanged; the same attacks push
in-distribution images towards OOD for the end-to-end threats."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.objectives import class_margin, kplus1_margin
from atom_tf.attacks.pgd import pgd_attack, random_start_noise
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.runner import attack_shares
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import (
    END_TO_END,
    ENSEMBLE,
    IN_ATTACKED,
    AttackSettings,
    ThreatContext,
    attack_in_distribution,
    get_threat,
    ood_side,
)
from tests.helpers import tiny_network

EPS = 8 / 255


@pytest.fixture(scope="module")
def detector():
    """A random (K+1)-way network (K = 2) and its kplus1 detection score."""
    model = tiny_network(3, seed=2)
    logits_fn = lambda z: model(z, training=False)  # noqa: E731
    scorer = get_scorer("kplus1")
    score_fn = lambda x: scorer.score(logits_fn, tf.constant(x, tf.float32), 2).numpy()  # noqa: E731
    return logits_fn, scorer, score_fn


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((12, 32, 32, 3)).astype(np.float32)


def context(detector, **attack):
    logits_fn, scorer, score_fn = detector
    settings = AttackSettings(steps=5, step_size=2 / 255, queries=30, **attack)
    return ThreatContext(logits_fn, scorer, 2, settings, score_fn, batch_size=8, verbose=False,
                         seed=3)  # fmt: skip


def test_the_default_attack_is_the_papers_pgd_bit_for_bit(detector, images):
    ctx = context(detector)
    assert ctx.attack.attack == "pgd"
    shown = get_threat("linf")(images, ctx)
    expected = []
    for index, first in enumerate(range(0, len(images), 8)):
        batch = images[first : first + 8]
        batch = np.concatenate([batch, np.zeros((8 - len(batch), 32, 32, 3), np.float32)])
        noise = random_start_noise(tf.constant([3, index], tf.int64), batch.shape, EPS, 1)
        adv, _ = pgd_attack(detector[0], batch, ctx.scorer.attack_objective(2), epsilon=EPS,
                            steps=5, step_size=2 / 255, seed=tf.zeros(2, tf.int64),
                            start_noise=noise)  # fmt: skip
        expected.append(adv.numpy())
    np.testing.assert_array_equal(shown, np.concatenate(expected)[: len(images)])


@pytest.mark.parametrize("attack", ["apgd", "square", "ensemble"])
def test_every_attack_stays_in_the_ball_and_never_lowers_the_score(detector, images, attack):
    ctx = context(detector, attack=attack)
    shown = get_threat("linf")(images, ctx)
    assert np.abs(shown - images).max() <= EPS + 1e-6 and shown.min() >= 0 and shown.max() <= 1
    assert np.all(detector[2](shown) >= detector[2](images) - 1e-6)


def test_the_ensemble_is_per_image_at_least_as_strong_as_each_member(detector, images):
    score = detector[2]
    ensemble_ctx = context(detector, attack="ensemble")
    ensemble = score(get_threat("linf")(images, ensemble_ctx))
    for member in ("pgd", "apgd", "square"):
        alone = score(get_threat("linf")(images, context(detector, attack=member)))
        assert np.all(ensemble >= alone - 1e-6), member
    winners = ensemble_ctx.records["attack_winners"]
    assert winners.shape == (len(images),) and winners.min() >= -1
    assert winners.max() < len(ENSEMBLE)
    shares = attack_shares(winners)
    assert list(shares) == ["clean", *ENSEMBLE] and sum(shares.values()) == pytest.approx(100)


def test_the_ensemble_stops_exactly_where_no_metric_can_change(detector, images):
    """--ensemble_early_stop: an image whose gain is past `final_gain` is attacked no further;
    every other image gets what the full ensemble gives it; padding rows are never attacked."""
    score = detector[2]
    full_ctx = context(detector, attack="ensemble")
    full = score(get_threat("linf")(images, full_ctx))
    assert list(full_ctx.records["attack_member_images"]) == [12, 12, 12, 12]  # 8 + 4, no padding
    after_pgd = score(get_threat("linf")(images, context(detector)))
    final_gain = float(np.median(after_pgd))
    stop_ctx = dataclasses.replace(context(detector, attack="ensemble"), final_gain=final_gain)
    stopped = score(get_threat("linf")(images, stop_ctx))
    settled = stopped > final_gain
    assert 0 < settled.sum() < len(images)
    np.testing.assert_allclose(stopped[~settled], full[~settled], atol=1e-5)
    assert np.all(full[settled] > final_gain)  # the same side of the bound either way
    counts = stop_ctx.records["attack_member_images"]
    assert counts[0] == 12 and counts[1] == (after_pgd <= final_gain).sum()
    assert all(np.diff(counts) <= 0) and counts[-1] >= (~settled).sum()
    assert np.all(stop_ctx.records["attack_member_seconds"] > 0)
    off = dataclasses.replace(context(detector, attack="ensemble", early_stop=False),
                              final_gain=final_gain)  # fmt: skip
    np.testing.assert_allclose(score(get_threat("linf")(images, off)), full, atol=1e-6)


@pytest.mark.parametrize("side, name, scale", [("ood", "msp", 40.0), ("in", "kplus1", 1e3)])
def test_the_ensemble_stops_at_the_scorers_ceiling_with_the_full_result(images, side, name, scale):
    """An image whose score reaches the end of the scorer's range (MSP 1 on the OOD side;
    kplus1's p(OOD) = 1 on the in-distribution side) can be beaten by no member: the ensemble
    attacks it no further, with no bound given, and it keeps the full ensemble's score and
    winner."""
    model = tiny_network(3, seed=2)
    logits_fn = lambda z: scale * model(z, training=False)  # noqa: E731  a saturating softmax
    scorer = get_scorer(name)
    score = lambda x: scorer.score(logits_fn, tf.constant(x, tf.float32), 2).numpy()  # noqa: E731
    saturated = (logits_fn, scorer, score)
    runs = {}
    for early_stop in (True, False):
        ctx = dataclasses.replace(context(saturated, attack="ensemble", early_stop=early_stop),
                                  side=side)  # fmt: skip
        runs[early_stop] = (score(get_threat("linf")(images, ctx)), ctx.records)
    (stopped, records), (full, full_records) = runs[True], runs[False]
    at_ceiling = ctx.attacker_gain(stopped) >= ctx.gain_ceiling()
    assert at_ceiling.any()
    np.testing.assert_allclose(stopped, full, atol=1e-5)
    np.testing.assert_array_equal(records["attack_winners"][at_ceiling],
                                  full_records["attack_winners"][at_ceiling])  # fmt: skip
    attacked, every = records["attack_member_images"], full_records["attack_member_images"]
    assert attacked.sum() < every.sum() and every[-1] == len(images)
    assert attacked[-1] >= (~at_ceiling).sum()  # Square: every image below the ceiling
    assert records["attack_stopped_at_bound"] == 0  # AUPR stays exact: no bound was used


def test_declared_score_ranges_hold_for_extreme_logits():
    """Every score a scorer declares bounded stays inside its range as computed (the ensemble
    stops an image there): logits far apart, tied, huge and tiny."""
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, scale, (2000, 11)) for scale in (1e-3, 1, 30, 1e3)])
    logits = np.concatenate([logits, np.zeros((4, 11)), np.full((4, 11), 50.0),
                             np.eye(11)[:4] * 1e4, -np.eye(11)[:4] * 1e4]).astype(np.float32)  # fmt: skip
    for name in ("kplus1", "msp", "odin", "sofl", "rowl"):
        scorer = get_scorer(name)
        low, high = scorer.score_range
        assert (low, high) != (None, None), name
        num_classes = 6 if name == "sofl" else 10  # SOFL: 5 reject classes
        fn = lambda z: logits + 0 * tf.reshape(z, (len(logits), -1))[:, :1]  # noqa: E731
        scores = scorer.score(fn, tf.zeros((len(logits), 1, 1, 1)), num_classes).numpy()
        assert low is None or scores.min() >= low, name
        assert high is None or scores.max() <= high, name
        if name != "odin":  # at T = 1000 no logits here reach its bound
            assert np.any(scores == (high if high is not None else low)), name  # reached


def test_margins_are_scale_invariant_and_match_a_hand_computed_case():
    logits = tf.constant([[3.0, 1.0, 0.0, 2.0]])  # K = 3 classes, one OOD output
    # kplus1: (max class 3 - OOD 2) / (top 3 - third 1) = 0.5
    assert float(kplus1_margin(logits, 3)[0]) == pytest.approx(0.5)
    # class margin over the K classes [3, 1, 0]: (3 - 1) / (3 - 0)
    assert float(class_margin(logits, 3)[0]) == pytest.approx(2 / 3)
    for margin in (kplus1_margin, class_margin):
        np.testing.assert_allclose(margin(7 * logits, 3), margin(logits, 3), rtol=1e-6)


def test_settings_added_later_keep_the_identity_of_earlier_results():
    assert (
        "attack" not in AttackSettings().identity() and "queries" not in AttackSettings().identity()
    )
    assert AttackSettings(attack="ensemble", queries=50).identity()["queries"] == 50
    with pytest.raises(InvalidConfigError, match="--square_queries >= 1"):
        AttackSettings(queries=0)
    with pytest.raises(InvalidConfigError, match="unknown --attack 'fgsm'; choose one of pgd"):
        AttackSettings(attack="fgsm")


@pytest.mark.parametrize("attack", ["pgd", "apgd", "square", "ensemble"])
def test_in_distribution_images_are_pushed_towards_ood_inside_the_ball(detector, images, attack):
    ctx = context(detector, attack=attack)
    shown = attack_in_distribution(images, ctx)
    assert np.abs(shown - images).max() <= EPS + 1e-6 and shown.min() >= 0 and shown.max() <= 1
    clean, attacked = detector[2](images), detector[2](shown)
    assert np.all(attacked <= clean + 1e-6) and attacked.mean() < clean.mean()
    if attack == "ensemble":  # per image at most what each member leaves
        for member in ("pgd", "apgd", "square"):
            alone = detector[2](attack_in_distribution(images, context(detector, attack=member)))
            assert np.all(attacked <= alone + 1e-6), member
        assert ctx.records["attack_winners"].shape == (len(images),)


def test_the_end_to_end_threats_share_their_ood_side():
    assert get_threat("linf_out") is get_threat("linf") is get_threat("linf_both")
    assert get_threat("linf_in") is get_threat("natural")
    assert [ood_side(t) for t in ("linf_in", "linf_out", "linf_both", "linf")] == [
        "natural", "linf_out", "linf_out", "linf"]  # fmt: skip
    assert set(IN_ATTACKED) == {"linf_in", "linf_both"} and set(IN_ATTACKED) < set(END_TO_END)
    with pytest.raises(ValueError, match="unknown attack side"):
        ThreatContext(None, get_scorer("kplus1"), 2, AttackSettings(), None, side="both")
