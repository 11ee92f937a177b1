import numpy as np

from atom_tf.corruptions import corrupt
from atom_tf.data import load_pool
from atom_tf.evaluation.corruption_threats import variant_names, worst_corruptions
from atom_tf.evaluation.runner import corruption_breakdown, winner_counts
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import AttackSettings, ThreatContext, get_threat


def context(score_fn, corruptions="common", logits_fn=None):
    return ThreatContext(logits_fn, get_scorer("msp"), 3, AttackSettings(steps=3, corruptions=corruptions),
                         score_fn, batch_size=8, verbose=False, seed=4)  # fmt: skip


def images():
    return load_pool("natural_patches", seed=2).read(0, 6).astype(np.float32) / 255


def linear_detector(seed):
    """A random linear 3-class model on the flattened image and its MSP detection score."""
    import tensorflow as tf

    w = tf.constant(np.random.default_rng(seed).normal(size=(32 * 32 * 3, 3)), tf.float32)

    def logits_fn(batch):
        return tf.reshape(batch, (-1, 32 * 32 * 3)) @ w

    def score_fn(batch):
        return get_scorer("msp").score(logits_fn, tf.constant(batch), 3).numpy()

    return logits_fn, score_fn


def test_search_keeps_the_most_in_distribution_variant():
    x = images()
    brightness = lambda batch: batch.reshape(len(batch), -1).mean(1)  # noqa: E731  "in-distribution" = bright
    best, winner, scores = worst_corruptions(x, context(brightness), index=0)
    names = variant_names("common")
    assert len(names) == 75 and winner.min() >= 0  # something is always brighter than clean here
    assert scores.shape == (6, 76)
    np.testing.assert_allclose(scores[:, 0], brightness(x), rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(scores, axis=1), winner + 1)
    np.testing.assert_allclose(scores[np.arange(6), winner + 1], brightness(best), rtol=1e-6)
    for i in range(len(x)):
        name, severity = names[winner[i]].split("@")
        rng = np.random.default_rng(
            [4, 0, list(dict.fromkeys(n.split("@")[0] for n in names)).index(name), int(severity)]
        )
        expected = corrupt(x, name, int(severity), rng)[i]
        np.testing.assert_allclose(best[i], expected, atol=1e-6)
        assert brightness(best[i : i + 1])[0] >= brightness(x[i : i + 1])[0]


def test_clean_image_wins_when_every_corruption_looks_less_in_distribution():
    x = images()
    reference = x.copy()

    def closeness(batch):
        return -np.abs(batch - reference).reshape(len(batch), -1).mean(1)

    best, winner, _ = worst_corruptions(x, context(closeness, "all"), index=0)
    assert np.all(winner == -1) and np.array_equal(best, x)
    assert winner_counts(winner, "all") == {"clean": 6}


def test_registered_threats_record_winners_and_compositional_stays_near_the_corrupted_image():
    x = images()
    logits_fn, score_fn = linear_detector(0)
    ctx = context(score_fn, "common", logits_fn)
    corrupted = get_threat("corruption")(x, ctx)
    assert ctx.records["winners"].shape == (6,) and ctx.records["variant_scores"].shape == (6, 76)
    assert np.all(score_fn(corrupted) >= score_fn(x) - 1e-6)
    ctx2 = context(score_fn, "common", logits_fn)
    composed = get_threat("compositional")(x, ctx2)
    np.testing.assert_array_equal(
        ctx2.records["winners"], ctx.records["winners"]
    )  # same seeded search
    assert "variant_scores" not in ctx2.records  # they describe the corrupted images, not these
    assert np.abs(composed - corrupted).max() <= 8 / 255 + 1e-6


def test_compositional_reuses_the_corruption_search_of_the_same_set(monkeypatch):
    import atom_tf.evaluation.corruption_threats as ct

    x = images()
    logits_fn, score_fn = linear_detector(1)
    alone = context(score_fn, "common", logits_fn)
    expected = get_threat("compositional")(x, alone)
    searches = []
    real = ct.worst_corruptions
    monkeypatch.setattr(ct, "worst_corruptions", lambda *a: searches.append(1) or real(*a))
    shared = {}
    first, second = context(score_fn, "common", logits_fn), context(score_fn, "common", logits_fn)
    first.shared = second.shared = shared
    get_threat("corruption")(x, first)
    composed = get_threat("compositional")(x, second)
    assert len(searches) == 1  # one batch of 6 images, searched once for both threats
    np.testing.assert_array_equal(composed, expected)
    np.testing.assert_array_equal(second.records["winners"], alone.records["winners"])


def test_each_corruption_alone_matches_a_hand_computed_case():
    in_scores = np.arange(20, dtype=np.float32)  # τ at 95 % TPR: 1
    variant_scores = np.full((4, 76), -10, dtype=np.float32)
    variant_scores[:, 0] = -1  # clean: every OOD image rejected
    variant_scores[:, 1 + 2] = [5, 5, -5, -5]  # gaussian_noise at severity 3 gets two accepted
    variant_scores[:, 1 + 5 * 14 + 4] = [0.5, 0, 0, 0]  # jpeg at severity 5: above clean, below τ
    table = corruption_breakdown(in_scores, variant_scores, "common")
    assert list(table) == list(dict.fromkeys(n.split("@")[0] for n in variant_names("common")))
    assert table["gaussian_noise"]["fpr95"] == 50 and table["shot_noise"]["fpr95"] == 0
    assert table["gaussian_noise"]["fpr95_by_severity"] == [0, 0, 50, 0, 0]
    # AUROC: an OOD image at 5 is beaten by 14 in-distribution scores and tied by one
    assert abs(table["gaussian_noise"]["auroc"] - 100 * (2 * 14.5 / 20 + 2) / 4) < 1e-9
    # jpeg: 0.5 is beaten by 19; 0 by 19 and tied by one
    assert abs(table["jpeg_compression"]["auroc"] - 100 * (19 / 20 + 3 * 19.5 / 20) / 4) < 1e-9
    assert table["jpeg_compression"]["fpr95"] == 0
    assert table["shot_noise"]["auroc"] == 100
