"""Gradient-masking checks (docs/protocol.md §11): does a low FPR95 under attack come from
robustness, or from an attack that cannot find its way?

On a subset of OOD images, with the clean in-distribution threshold (or, on the in-distribution
side of the end-to-end threats, a subset of in-distribution images attacked towards OOD: there
the share of them the clean threshold rejects takes FPR95's place, and AUROC is read against
clean OOD scores):
- the ε-curve: the L∞ threat at ε ∈ {1, 2, 4, 8, 16, 32, 64}/255 (the step size scaled with
  ε). At the largest ε almost every OOD image must pass as in-distribution (FPR95 ≥ 90 %) and
  the AUROC must lie below the clean one, and neither may the FPR95 fall nor the AUROC rise as
  ε grows. The AUROC half matters where the threshold is degenerate: a detector whose lowest
  5 % of in-distribution scores tie at its floor accepts every OOD image clean (FPR95 100 %),
  and its FPR95 says nothing about the attack;
- the steps: 40, 100 and 200 iterations: more must never help the detector (FPR95 or AUROC);
- Square (no gradients) against the white-box PGD and APGD at the evaluation's ε: Square
  doing better on more than a few percent of the images is the classic sign of a masked
  gradient.

Each failed check is a warning line naming the detector and the check.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from atom_tf.evaluation.metrics import auroc, fpr_at_tpr, threshold_at_tpr
from atom_tf.evaluation.threats import ThreatContext, get_threat

CHECKS_VERSION = 2  # in the key of saved checks: 2 added the clean point and the AUROC checks
# per side: the key of what the attacker raises (in %), its name in warnings, its column in
# tables, and what it means
SUCCESS = {"ood": ("fpr95", "FPR95", "FPR95", "OOD images pass as in-distribution"),
           "in": ("rejected", "share rejected", "rejected (%)",
                  "in-distribution images are rejected as OOD")}  # fmt: skip
EPSILONS = (1, 2, 4, 8, 16, 32, 64)  # × 1/255
STEPS = (40, 100, 200)
LARGE_EPSILON_FPR95 = 90.0  # % of OOD images accepted at the largest ε, at least
TOLERANCE = 2.0  # percentage points FPR95 may fall, or AUROC rise, as the attack grows (noise)
SQUARE_SHARE = 5.0  # % of images on which Square may beat the white-box attacks


def _attacked(images: np.ndarray, ctx: ThreatContext, **changes) -> np.ndarray:
    """Detection scores of the images under the L∞ threat with some attack settings changed
    (a context of its own: nothing is shared with, or cached for, the main evaluation)."""
    attack = dataclasses.replace(ctx.attack, **changes)
    context = dataclasses.replace(ctx, attack=attack, records={}, shared={}, compiled={},
                                  verbose=False)  # fmt: skip
    return ctx.score_fn(get_threat("linf")(images, context))


def robustness_checks(
    in_scores: np.ndarray,
    images: np.ndarray,
    ctx: ThreatContext,
    detector: str,
    ood_scores: np.ndarray | None = None,
) -> dict:
    """The three checks on `images` (float in [0, 1]) against the detector behind `ctx`;
    returns their numbers and the warnings they raise. `ctx.side` "ood": the images are OOD
    and each point is FPR95 / AUROC against the clean in-distribution scores `in_scores`.
    "in": the images are in-distribution, attacked towards OOD; each point is the share the
    95 %-TPR threshold of `in_scores` rejects / AUROC against the clean `ood_scores`."""
    metric, metric_name, _, meaning = SUCCESS[ctx.side]
    if ctx.side == "ood":
        success = lambda scores: 100 * fpr_at_tpr(in_scores, scores)  # noqa: E731
        area = lambda scores: 100 * auroc(in_scores, scores)  # noqa: E731
    else:
        if ood_scores is None:
            raise ValueError("the in-distribution side's checks need clean OOD scores")
        threshold = threshold_at_tpr(in_scores)
        success = lambda scores: 100 * float(np.mean(np.asarray(scores) < threshold))  # noqa: E731
        area = lambda scores: 100 * auroc(scores, ood_scores)  # noqa: E731
    point = lambda scores: {metric: success(scores), "auroc": area(scores)}  # noqa: E731
    base = ctx.attack
    clean = point(ctx.score_fn(images))
    by_epsilon = {
        str(e): point(_attacked(images, ctx, attack="pgd", epsilon=e / 255,
                                step_size=base.step_size * (e / 255) / base.epsilon))
        for e in EPSILONS
    }  # fmt: skip
    by_steps = {str(s): point(_attacked(images, ctx, attack="pgd", steps=s)) for s in STEPS}
    white_box = np.maximum(
        ctx.attacker_gain(_attacked(images, ctx, attack="pgd")),
        ctx.attacker_gain(_attacked(images, ctx, attack="apgd")),
    )
    square = ctx.attacker_gain(_attacked(images, ctx, attack="square"))
    square_share = 100 * float(np.mean(square > white_box + 1e-6))
    side = "OOD images" if ctx.side == "ood" else "in-distribution images"
    warnings = []
    largest = by_epsilon[str(EPSILONS[-1])]
    if largest[metric] < LARGE_EPSILON_FPR95:
        warnings.append(
            f"{detector}: the ε-curve check failed: at ε = {EPSILONS[-1]}/255 only "
            f"{largest[metric]:.1f} % of {meaning} (expected ≥ {LARGE_EPSILON_FPR95:.0f} %): "
            "the attack may be lost on a masked gradient"
        )
    if largest["auroc"] > clean["auroc"] - TOLERANCE:
        warnings.append(
            f"{detector}: the ε-curve check failed on {side}: at ε = {EPSILONS[-1]}/255 AUROC "
            f"is {largest['auroc']:.1f} %, clean {clean['auroc']:.1f} %: the attack may be lost "
            "on a masked gradient"
        )
    # what a stronger attack must not do: lower its success (sign 1) or raise AUROC (sign -1)
    for name, label, sign, worse in ((metric, metric_name, 1, "falls"),
                                     ("auroc", "AUROC", -1, "rises")):  # fmt: skip
        curve = [by_epsilon[str(e)][name] for e in EPSILONS]
        if any(
            sign * (later - earlier) < -TOLERANCE for earlier, later in itertools.pairwise(curve)
        ):
            curve_text = ", ".join(f"{v:.1f}" for v in curve)
            warnings.append(
                f"{detector}: the ε-curve check failed on {side}: {label} {worse} as ε grows "
                f"[{curve_text}]"
            )
        more = [by_steps[str(s)][name] for s in STEPS]
        if any(sign * (later - more[0]) < -TOLERANCE for later in more[1:]):
            warnings.append(
                f"{detector}: the steps check failed on {side}: {label} "
                f"{[round(v, 1) for v in more]} at {list(STEPS)} steps {worse} with more steps"
            )
    if square_share > SQUARE_SHARE:
        warnings.append(
            f"{detector}: the black-box check failed: Square (no gradients) beats PGD and APGD "
            f"on {square_share:.1f} % of {side} (over {SQUARE_SHARE:.0f} %): gradient "
            "masking is likely"
        )
    return {"side": ctx.side, "images": len(images), "clean": clean, "epsilon": by_epsilon,
            "steps": by_steps, "square_beats_white_box": square_share, "warnings": warnings}  # fmt: skip
