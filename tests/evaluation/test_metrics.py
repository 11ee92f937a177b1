import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from atom_tf.evaluation import metrics


def test_hand_computed_case():
    in_scores = np.arange(1, 21, dtype=float)  # 1..20; τ = sorted[round(0.05·20)] = sorted[1] = 2
    ood = np.array([0.0, 1.5, 2.0, 5.0])
    assert metrics.threshold_at_tpr(in_scores) == 2.0
    assert metrics.fpr_at_tpr(in_scores, ood) == pytest.approx(0.5)  # 2.0 (a tie) and 5.0 accepted
    # AUROC by pair counting: ood 0 and 1.5 lose to 20 and 19 pairs... computed explicitly
    wins = sum((i > o) + 0.5 * (i == o) for i in in_scores for o in ood)
    assert metrics.auroc(in_scores, ood) == pytest.approx(wins / 80)


def test_in_out_and_in_plus_out_metrics_match_a_hand_computed_case():
    clean_in = np.arange(1, 21, dtype=float)  # τ = 2, as above
    attacked_in = np.array([0.0, 1.0, 3.0, 5.0])  # the attacked subset: 0 and 1 fall below τ
    ood = np.array([0.0, 2.5, 4.0])  # 2.5 and 4.0 pass τ
    both = metrics.end_to_end_metrics(clean_in, ood, 2.0, attacked_in)
    # AUROC by pairs: 0 vs 0 ties (0.5); 1 beats 0; 3 beats 0, 2.5; 5 beats all three -> 6.5 / 12
    assert both["auroc"] == pytest.approx(100 * 6.5 / 12)
    assert both["fpr95_clean_threshold"] == pytest.approx(100 * 2 / 3)  # the deployed τ
    assert both["fpr95"] == pytest.approx(100.0)  # τ' = sorted(attacked)[round(0.2)] = 0
    assert both["in_rejected"] == pytest.approx(50.0) and both["in_images"] == 4
    out = metrics.end_to_end_metrics(clean_in, ood, 2.0)  # Out: in-distribution clean
    # ood 0 loses to all 20, 2.5 to 3..20 (18), 4 to 5..20 (16) and ties with 4 -> 54.5 / 60
    assert out["auroc"] == pytest.approx(100 * 54.5 / 60)
    assert out["fpr95"] == out["fpr95_clean_threshold"] == pytest.approx(100 * 2 / 3)
    assert "in_rejected" not in out
    with pytest.raises(metrics.InvalidInputError, match="attacked in-distribution"):
        metrics.end_to_end_metrics(clean_in, ood, 2.0, np.array([np.nan]))


def test_end_to_end_accuracy():
    scores = np.array([0.9, 0.1, 0.8, 0.7])
    predictions = np.array([1, 2, 3, 0])
    labels = np.array([1, 2, 0, 0])
    # accepted: 0, 2, 3 (≥ 0.5); correct: 0, 1, 3 -> both: 0 and 3
    assert metrics.end_to_end_accuracy(scores, predictions, labels, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_against_scikit_learn_on_random_scores(seed, ties):
    rng = np.random.default_rng(seed)
    in_scores = rng.normal(1.0, 1.0, 300)
    ood = rng.normal(0.0, 1.0, 500)
    if ties:  # coarse scores: many ties, across and within the classes
        in_scores, ood = np.round(in_scores), np.round(ood)
    y = np.r_[np.ones(300), np.zeros(500)]
    s = np.r_[in_scores, ood]
    assert metrics.auroc(in_scores, ood) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(in_scores, ood) == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    assert metrics.aupr_out(in_scores, ood) == pytest.approx(
        average_precision_score(1 - y, -s), abs=1e-12
    )


def test_fpr_matches_the_roc_curve_at_the_threshold():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(9)
    in_scores, ood = rng.normal(2, 1, 1000), rng.normal(0, 1, 1000)
    tau = metrics.threshold_at_tpr(in_scores)
    fpr, tpr, thresholds = roc_curve(np.r_[np.ones(1000), np.zeros(1000)], np.r_[in_scores, ood])
    at = np.flatnonzero(thresholds == tau)[0]
    assert tpr[at] == pytest.approx(0.95, abs=1e-3)
    assert metrics.fpr_at_tpr(in_scores, ood) == pytest.approx(fpr[at])


def test_perfect_and_inverted_detectors():
    good = metrics.detection_metrics(np.ones(10), np.zeros(10))
    assert good == {"fpr95": 0.0, "auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0}
    bad = metrics.detection_metrics(np.zeros(10), np.ones(10))
    assert bad["fpr95"] == 100.0 and bad["auroc"] == 0.0


def test_nan_and_empty_scores_are_refused_naming_the_set():
    from atom_tf.errors import InvalidInputError

    good = np.linspace(0, 1, 20)
    with pytest.raises(InvalidInputError, match=r"1 of the 3 letters / linf scores are NaN"):
        metrics.detection_metrics(good, np.array([0.1, np.nan, 0.3]), "letters / linf")
    with pytest.raises(InvalidInputError, match="in-distribution scores are NaN"):
        metrics.detection_metrics(np.r_[good, np.inf], good)
    with pytest.raises(InvalidInputError, match="no in-distribution scores"):
        metrics.threshold_at_tpr(np.array([]))
