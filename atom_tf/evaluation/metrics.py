"""Detection metrics with in-distribution as the positive class (docs/protocol.md §5).

Scores: higher means "more in-distribution". The detector accepts x iff score(x) ≥ τ, with τ
the clean in-distribution test score at index round(0.05 n) of the ascending order, so that
95% of in-distribution data is accepted (TPR 95%, FNR 5%). Other frameworks count OOD as
positive: their "FPR95" is a different number.
"""

from __future__ import annotations

import numpy as np

from atom_tf.errors import InvalidInputError


def checked_scores(scores: np.ndarray, what: str) -> np.ndarray:
    """Scores as float64, refused in one line when empty or not all finite: a NaN would count
    as rejected in FPR95 but rank above everything in AUROC."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(scores):
        raise InvalidInputError(f"no {what} scores to compute metrics from")
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise InvalidInputError(
            f"{bad} of the {len(scores):,} {what} scores are NaN or infinite: the network's "
            "outputs are not finite (a diverged run, or inputs outside [0, 1])"
        )
    return scores


def threshold_at_tpr(in_scores: np.ndarray, tpr: float = 0.95) -> float:
    """τ = sorted(in_scores)[round((1 - tpr) n)]."""
    ordered = np.sort(checked_scores(in_scores, "in-distribution"))
    index = min(round((1.0 - tpr) * len(ordered)), len(ordered) - 1)
    return float(ordered[index])


def fpr_at_tpr(in_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted (score ≥ τ) at the 95%-TPR threshold τ."""
    return float(np.mean(np.asarray(ood_scores) >= threshold_at_tpr(in_scores, tpr)))


def auroc(in_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score_in > score_ood) + ½ P(tie) (Mann-Whitney)."""
    scores = np.concatenate([in_scores, ood_scores]).astype(np.float64)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # midranks handle ties exactly
    ends = np.cumsum(counts)
    midranks = (ends - (counts - 1) / 2.0)[inverse]
    n_in, n_ood = len(in_scores), len(ood_scores)
    rank_sum = midranks[:n_in].sum()
    return float((rank_sum - n_in * (n_in + 1) / 2.0) / (n_in * n_ood))


def average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the precision-recall curve for `positive` scores against `negative` scores,
    as the step sum Σ (R_k - R_{k-1}) P_k over distinct thresholds (scikit-learn's definition)."""
    scores = np.concatenate([positive, negative]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_pos = np.cumsum(labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_pos / predicted
    recall = true_pos / len(positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


AUPR_METRICS = ("aupr_in", "aupr_out")


def aupr_in(in_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    return average_precision(in_scores, ood_scores)


def aupr_out(in_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    return average_precision(-np.asarray(ood_scores), -np.asarray(in_scores))


def end_to_end_accuracy(
    in_scores: np.ndarray, predictions: np.ndarray, labels: np.ndarray, threshold: float
) -> float:
    """Share of in-distribution test inputs both accepted (score ≥ τ) and correctly
    classified (Tables 12-13)."""
    return float(np.mean((np.asarray(in_scores) >= threshold) & (predictions == labels)))


def detection_metrics(
    in_scores: np.ndarray, ood_scores: np.ndarray, what: str = "OOD"
) -> dict[str, float]:
    """FPR at 95% TPR, AUROC, AUPR-In and AUPR-Out, in percent; `what` names the OOD scores
    in the error for NaN or empty scores."""
    in_scores = checked_scores(in_scores, "in-distribution")
    ood_scores = checked_scores(ood_scores, what)
    return {
        "fpr95": 100 * fpr_at_tpr(in_scores, ood_scores),
        "auroc": 100 * auroc(in_scores, ood_scores),
        "aupr_in": 100 * aupr_in(in_scores, ood_scores),
        "aupr_out": 100 * aupr_out(in_scores, ood_scores),
    }


def end_to_end_metrics(
    clean_in: np.ndarray,
    ood_scores: np.ndarray,
    threshold: float,
    attacked_in: np.ndarray | None = None,
    what: str = "OOD",
) -> dict[str, float]:
    """Metrics of an end-to-end threat (docs/protocol.md §10): `detection_metrics` of the
    in-distribution scores the threat leaves (the attacked subset where it attacks them) against
    the OOD scores (its fpr95 at 95 % TPR of those in-distribution scores, the ROC's point);
    `fpr95_clean_threshold`, the OOD share accepted at the deployed threshold τ taken from clean
    in-distribution scores; where in-distribution inputs are attacked, `in_rejected`, the share
    of them that τ rejects, and `in_images`."""
    if attacked_in is not None:
        attacked_in = checked_scores(attacked_in, "attacked in-distribution")
    in_scores = clean_in if attacked_in is None else attacked_in
    metrics = detection_metrics(in_scores, ood_scores, what)
    ood_scores = checked_scores(ood_scores, what)
    metrics["fpr95_clean_threshold"] = 100 * float(np.mean(ood_scores >= threshold))
    if attacked_in is not None:
        metrics["in_rejected"] = 100 * float(np.mean(attacked_in < threshold))
        metrics["in_images"] = float(len(attacked_in))
    return metrics
