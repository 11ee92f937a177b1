"""The three experiments of `bin/theory.py` (Propositions 3/4, Proposition 1, window sweep)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import expit

from atom_tf.theory import gaussian as th


@dataclasses.dataclass(frozen=True)
class TheorySettings:
    """Defaults: an instance of eq. (15) with n₀ = 1, ε = 1/8: d = 4,500 ≥ n₀/ε⁴ + n₀ log²d ≈ 4,167,
    σ² = √(d n₀) ≈ 67, ν = ‖μ‖₂/4. Runs in seconds on 2 cores."""

    d: int = 4500
    n0: int = 1
    epsilon: float = 0.125
    nu_ratio: float = 0.25
    n_in: int = 1000
    n_aux: int = 1000
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def family_condition(self) -> tuple[float, bool]:
        """(n₀/ε⁴ + n₀ log² d, whether d reaches it): eq. (15)'s requirement on d."""
        need = self.n0 / self.epsilon**4 + self.n0 * math.log(self.d) ** 2
        return need, self.d >= need


def errors(model: th.GaussianModel, theta: np.ndarray | None, epsilon: float) -> dict[str, float]:
    if theta is None:  # an empty window: no detector, count it as failing everywhere
        return {"fnr": 1.0, "fpr": 1.0, "cos": float("nan")}
    cos = float(model.mu @ theta / (np.linalg.norm(model.mu) * np.linalg.norm(theta)))
    return {
        "fnr": th.fnr(model, theta),
        "fpr": th.worst_robust_fpr(model, theta, epsilon),
        "cos": cos,
    }


def sample_complexity(s: TheorySettings) -> list[dict]:
    """Propositions 3 vs 4: in-distribution mean vs naive detector with ideal auxiliary data
    (n' = n from U_X), mean errors over seeds, per in-distribution sample size n."""
    rows = []
    for n in s.sizes:
        per_seed = []
        for seed in s.seeds:
            model = th.GaussianModel.from_family(s.d, s.n0, s.nu_ratio, seed)
            rng = np.random.default_rng([seed, n, 1])
            x_in = model.sample_in(n, rng)
            alone = errors(model, th.in_distribution_mean(x_in), s.epsilon)
            ideal = errors(
                model, th.naive_detector(x_in, model.sample_ideal_aux(n, rng)), s.epsilon
            )
            per_seed.append((alone, ideal))
        rows.append({
            "n": n,
            "in_only_fnr": np.mean([a["fnr"] for a, _ in per_seed]),
            "in_only_fpr": np.mean([a["fpr"] for a, _ in per_seed]),
            "ideal_aux_fnr": np.mean([b["fnr"] for _, b in per_seed]),
            "ideal_aux_fpr": np.mean([b["fpr"] for _, b in per_seed]),
        })  # fmt: skip
    return rows


def naive_vs_mining(s: TheorySettings) -> list[dict]:
    """Proposition 1: with U_mix auxiliary data, the naive detector vs outlier mining, per seed."""
    rows = []
    for seed in s.seeds:
        model = th.GaussianModel.from_family(s.d, s.n0, s.nu_ratio, seed)
        rng = np.random.default_rng([seed, 2])
        x_in = model.sample_in(s.n_in, rng)
        x_aux, informative = model.sample_mixture_aux(s.n_aux, rng)
        naive = th.naive_detector(x_in, x_aux)
        mined, keep = th.mining_detector(x_in, x_aux)
        rows.append({
            "seed": seed,
            "naive": {**errors(model, naive, s.epsilon),
                      "scale": float(np.linalg.norm(naive) / np.linalg.norm(model.mu))},
            "mining": errors(model, mined, s.epsilon),
            "kept_informative": float(keep[informative].mean()),
            "kept_far": float(keep[~informative].mean()),
        })  # fmt: skip
    return rows


WINDOWS_T = {  # windows on t = x'ᵀθ_int / d, i.e. f ∈ [sigmoid(lo), sigmoid(hi)]
    "all (no mining)": (-math.inf, math.inf),
    "paper [-1.5, -0.5]": (-1.5, -0.5),
    "narrow [-1.05, -0.95]": (-1.05, -0.95),
    "too hard [-0.5, 0.5]": (-0.5, 0.5),
    "too easy [-3, -1.5]": (-3.0, -1.5),
    "far [5, 15]": (5.0, 15.0),
}
QUANTILES = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def window_sweep(s: TheorySettings) -> list[dict]:
    """Too-easy or too-hard windows fail: confidence windows [a, b] and ATOM's quantile windows
    (keep n'/4 points from position q n' of the ascending OOD-score order), mean over seeds."""
    results: dict[str, list] = {}
    for seed in s.seeds:
        model = th.GaussianModel.from_family(s.d, s.n0, s.nu_ratio, seed)
        rng = np.random.default_rng([seed, 3])
        x_in = model.sample_in(s.n_in, rng)
        x_aux, informative = model.sample_mixture_aux(s.n_aux, rng)
        for name, (lo, hi) in WINDOWS_T.items():
            theta, keep = th.mining_detector(x_in, x_aux, (float(expit(lo)), float(expit(hi))))
            results.setdefault(name, []).append(
                (errors(model, theta, s.epsilon), keep, informative)
            )
        for q in QUANTILES:
            theta, keep = th.quantile_window_detector(x_in, x_aux, q, s.n_aux // 4)
            results.setdefault(f"q = {q}", []).append(
                (errors(model, theta, s.epsilon), keep, informative)
            )
    return [
        {
            "window": name,
            "fnr": float(np.mean([e["fnr"] for e, _, _ in runs])),
            "fpr": float(np.mean([e["fpr"] for e, _, _ in runs])),
            "kept": float(np.mean([k.sum() for _, k, _ in runs])),
            "kept_informative_share": float(
                np.mean([k[i].sum() / max(k.sum(), 1) for _, k, i in runs])
            ),
        }
        for name, runs in results.items()
    ]
