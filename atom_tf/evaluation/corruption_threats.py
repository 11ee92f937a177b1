"""Corruption-attacked and compositional OOD (docs/protocol.md §5), two entries of the threat registry.

`corruption`: a black-box search: every corruption at every severity (19 × 5 = 95 variants, or
the paper text's 15 × 5 = 75 with `corruptions="common"`), scored in batches; per image the
variant with the most in-distribution score wins, the clean image included. The winner of
every image is recorded (`ctx.records["winners"]`: -1 = clean, else corruption index × 5 +
severity - 1), and so is every variant's score (`ctx.records["variant_scores"]`, [images,
1 + variants], column 0 the clean image's), from which the evaluation reports each corruption
alone. `compositional`: that search (reused when the corruption threat ran on the same images in the
same evaluation), then L∞ PGD in the ε-ball around the chosen image.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from atom_tf.corruptions import COMMON_CORRUPTIONS, CORRUPTION_NAMES, SEVERITIES, corrupt
from atom_tf.evaluation.threats import ThreatContext, batched, linf, register_threat


def searched_corruptions(which: str = "all") -> tuple[str, ...]:
    """The corruptions the search tries (`all` 19, else the 15 common ones), in search order."""
    return CORRUPTION_NAMES if which == "all" else COMMON_CORRUPTIONS


def variant_names(which: str = "all") -> list[str]:
    """'name@severity' for each searched variant, in search order."""
    return [f"{n}@{s}" for n in searched_corruptions(which) for s in SEVERITIES]


def worst_corruptions(
    images: np.ndarray, ctx: ThreatContext, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The most in-distribution variant of each image (clean included), its index, and the
    score of every variant ([images, 1 + variants], the clean image first).

    The next variant is corrupted (NumPy/OpenCV, one thread) while the current one is scored
    (TensorFlow): each variant has its own generator, so the overlap changes no result."""
    settings = ctx.attack
    names = searched_corruptions(settings.corruptions)
    variants = [(c, name, severity) for c, name in enumerate(names) for severity in SEVERITIES]

    def make(variant: tuple[int, str, int]) -> np.ndarray:
        c, name, severity = variant
        rng = np.random.default_rng([ctx.seed, index, c, severity])
        return corrupt(images, name, severity, rng, settings.corruption_table or None)

    best = images.copy()
    best_score = ctx.score_fn(images)
    winner = np.full(len(images), -1, dtype=np.int32)
    scores = np.empty((len(images), 1 + len(variants)), dtype=np.float32)
    scores[:, 0] = best_score
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, variants[0])
        for k, (c, _, severity) in enumerate(variants):
            variant = pending.result()
            if k + 1 < len(variants):
                pending = pool.submit(make, variants[k + 1])
            score = ctx.score_fn(variant)
            scores[:, k + 1] = score
            better = score > best_score
            best[better], best_score[better] = variant[better], score[better]
            winner[better] = c * len(SEVERITIES) + severity - 1
    return best, winner, scores


def _search(images: np.ndarray, ctx: ThreatContext, label: str) -> np.ndarray:
    """The corruption search; run once per image set: a later threat with the same context
    settings (compositional after corruption) reuses the result, which is deterministic."""
    key = ("corruption_search", ctx.attack, ctx.seed, ctx.batch_size)
    if key in ctx.shared:
        out, ctx.records["winners"], ctx.records["variant_scores"] = ctx.shared[key]
        if ctx.verbose:
            print(f"{label}: reused the corruption threat's search", flush=True)
        return out
    winners, scores = [], []

    def run(batch: np.ndarray, index: int) -> np.ndarray:
        best, winner, variant_scores = worst_corruptions(batch, ctx, index)
        winners.append(winner)
        scores.append(variant_scores)
        return best

    out = batched(images, ctx.batch_size, run, label, ctx.verbose)
    ctx.records["winners"] = np.concatenate(winners)[: len(images)]
    ctx.records["variant_scores"] = np.concatenate(scores)[: len(images)]
    ctx.shared[key] = (out, ctx.records["winners"], ctx.records["variant_scores"])
    return out


@register_threat("corruption")
def corruption(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    n = len(variant_names(ctx.attack.corruptions))
    return _search(images, ctx, f"corruption search ({n} variants + clean)")


@register_threat("compositional")
def compositional(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    corrupted = _search(images, ctx, "compositional: corruption search")
    del ctx.records["variant_scores"]  # the corruption threat's; L∞ moves every image on
    return linf(corrupted, ctx)


__all__ = [
    "compositional",
    "corruption",
    "searched_corruptions",
    "variant_names",
    "worst_corruptions",
]
