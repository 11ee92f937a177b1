"""Gradient-masking checks (docs/protocol.md §11): does a low FPR95 under attack come from
robustness, or from an attack that cannot find its way?

On a subset of OOD images, with the clean in-distribution threshold:
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

from atom_tf.evaluation.metrics import auroc, fpr_at_tpr
from atom_tf.evaluation.threats import ThreatContext, get_threat

CHECKS_VERSION = 2  # in the key of saved checks: 2 added the clean point and the AUROC checks
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
    in_scores: np.ndarray, images: np.ndarray, ctx: ThreatContext, detector: str
) -> dict:
    """The three checks on `images` (clean OOD, float in [0, 1]) against the detector behind
    `ctx`; returns their numbers and the warnings they raise."""
    fpr = lambda scores: 100 * fpr_at_tpr(in_scores, scores)  # noqa: E731
    area = lambda scores: 100 * auroc(in_scores, scores)  # noqa: E731
    base = ctx.attack
    clean_scores = ctx.score_fn(images)
    clean = {"fpr95": fpr(clean_scores), "auroc": area(clean_scores)}
    by_epsilon = {}
    for e in EPSILONS:
        scores = _attacked(images, ctx, attack="pgd", epsilon=e / 255,
                           step_size=base.step_size * (e / 255) / base.epsilon)  # fmt: skip
        by_epsilon[str(e)] = {"fpr95": fpr(scores), "auroc": area(scores)}
    by_steps = {}
    for steps in STEPS:
        scores = _attacked(images, ctx, attack="pgd", steps=steps)
        by_steps[str(steps)] = {"fpr95": fpr(scores), "auroc": area(scores)}
    white_box = np.maximum(
        _attacked(images, ctx, attack="pgd"), _attacked(images, ctx, attack="apgd")
    )
    square = _attacked(images, ctx, attack="square")
    square_share = 100 * float(np.mean(square > white_box + 1e-6))
    warnings = []
    largest = by_epsilon[str(EPSILONS[-1])]
    if largest["fpr95"] < LARGE_EPSILON_FPR95:
        warnings.append(
            f"{detector}: the ε-curve check failed: at ε = {EPSILONS[-1]}/255 only "
            f"{largest['fpr95']:.1f} % of OOD images pass as in-distribution (expected ≥ "
            f"{LARGE_EPSILON_FPR95:.0f} %): the attack may be lost on a masked gradient"
        )
    if largest["auroc"] > clean["auroc"] - TOLERANCE:
        warnings.append(
            f"{detector}: the ε-curve check failed: at ε = {EPSILONS[-1]}/255 AUROC is "
            f"{largest['auroc']:.1f} %, clean {clean['auroc']:.1f} %: the attack may be lost on "
            "a masked gradient"
        )
    # what a stronger attack must not do: lower FPR95 (sign 1) or raise AUROC (sign -1)
    for metric, sign, worse in (("fpr95", 1, "falls"), ("auroc", -1, "rises")):
        curve = [by_epsilon[str(e)][metric] for e in EPSILONS]
        if any(
            sign * (later - earlier) < -TOLERANCE for earlier, later in itertools.pairwise(curve)
        ):
            curve_text = ", ".join(f"{v:.1f}" for v in curve)
            warnings.append(
                f"{detector}: the ε-curve check failed: {metric.upper()} {worse} as ε grows "
                f"[{curve_text}]"
            )
        more = [by_steps[str(s)][metric] for s in STEPS]
        if any(sign * (later - more[0]) < -TOLERANCE for later in more[1:]):
            warnings.append(
                f"{detector}: the steps check failed: {metric.upper()} "
                f"{[round(v, 1) for v in more]} at {list(STEPS)} steps {worse} with more steps"
            )
    if square_share > SQUARE_SHARE:
        warnings.append(
            f"{detector}: the black-box check failed: Square (no gradients) beats PGD and APGD "
            f"on {square_share:.1f} % of OOD images (over {SQUARE_SHARE:.0f} %): gradient "
            "masking is likely"
        )
    return {"images": len(images), "clean": clean, "epsilon": by_epsilon, "steps": by_steps,
            "square_beats_white_box": square_share, "warnings": warnings}  # fmt: skip
