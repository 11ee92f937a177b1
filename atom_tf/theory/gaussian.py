"""The Gaussian data model of Section 3 / Appendix A.2 (docs/protocol.md §9), made executable.

(μ, σ, ν)-model: P_X = N(μ, σ²I) in R^d; test OOD family Q = {N(-μ + v, σ²I): ‖v‖₂ ≤ ν};
linear detectors G_θ(x) = sign(θᵀx) (+1: in-distribution); ℓ∞ perturbations of size ε.
Closed forms (eq. 16, 22-24):
    FNR(G_θ)              = Φ(-μᵀθ / (σ‖θ‖₂))
    sup_Q robust FPR(G_θ) = Φ(-μᵀθ / (σ‖θ‖₂) + ν/σ + ε‖θ‖₁ / (σ‖θ‖₂))
attained by v* = ν θ/‖θ‖₂ and δ* = ε sign(θ).
Learners: the in-distribution mean (eq. 28, Proposition 3's setting), the naive averaging
detector (eq. 2 / 33) and outlier mining (eq. 47-49).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import expit, ndtr


@dataclasses.dataclass(frozen=True)
class GaussianModel:
    mu: np.ndarray
    sigma: float
    nu: float

    @property
    def d(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def from_family(cls, d: int, n0: int, nu_ratio: float = 0.25, seed: int = 0) -> GaussianModel:
        """An instance of eq. (15): ‖μ‖₂² = d (random direction), σ² = √(d n₀), ν = ‖μ‖₂/4."""
        rng = np.random.default_rng(seed)
        direction = rng.standard_normal(d)
        mu = direction / np.linalg.norm(direction) * math.sqrt(d)
        return cls(mu, (d * n0) ** 0.25, nu_ratio * math.sqrt(d))

    def sample_in(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points from P_X = N(μ, σ²I)."""
        return self.mu + self.sigma * rng.standard_normal((n, self.d))

    def sample_ood(self, n: int, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """n points from Q_v = N(-μ + v, σ²I), ‖v‖₂ ≤ ν."""
        return -self.mu + v + self.sigma * rng.standard_normal((n, self.d))

    def sample_ideal_aux(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """U_X: per point, v uniform in the ν-ball, then N(-μ + v, σ²I)."""
        directions = rng.standard_normal((n, self.d))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        radii = self.nu * rng.random(n) ** (1.0 / self.d)  # uniform in the ball
        return (
            -self.mu + radii[:, None] * directions + self.sigma * rng.standard_normal((n, self.d))
        )

    def sample_mixture_aux(
        self, n: int, rng: np.random.Generator, far: float = 10.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """U_mix: uniform mixture of N(-μ, σ²I) (informative) and N(far·μ, σ²I) (not).
        Returns the points and a boolean array, True for the informative component."""
        informative = rng.random(n) < 0.5
        means = np.where(informative[:, None], -self.mu, far * self.mu)
        return means + self.sigma * rng.standard_normal((n, self.d)), informative


def margin(model: GaussianModel, theta: np.ndarray) -> float:
    """μᵀθ / (σ‖θ‖₂), the key quantity of both error rates."""
    return float(model.mu @ theta / (model.sigma * np.linalg.norm(theta)))


def fnr(model: GaussianModel, theta: np.ndarray) -> float:
    """FNR(G_θ) = Φ(-μᵀθ / (σ‖θ‖₂)) (eq. 16)."""
    return float(ndtr(-margin(model, theta)))


def worst_robust_fpr(model: GaussianModel, theta: np.ndarray, epsilon: float) -> float:
    """sup over Q of the ℓ∞-robust FPR (eq. 22-24)."""
    l1_l2 = np.abs(theta).sum() / np.linalg.norm(theta)
    return float(
        ndtr(-margin(model, theta) + model.nu / model.sigma + epsilon * l1_l2 / model.sigma)
    )


def worst_case_shift(model: GaussianModel, theta: np.ndarray) -> np.ndarray:
    """The v* in the ν-ball that maximises the FPR: ν θ/‖θ‖₂."""
    return model.nu * theta / np.linalg.norm(theta)


def in_distribution_mean(x_in: np.ndarray) -> np.ndarray:
    """θ_n = (1/n) Σ x_i (eq. 28): learning from in-distribution data alone."""
    return x_in.mean(axis=0)


def naive_detector(x_in: np.ndarray, x_aux: np.ndarray) -> np.ndarray:
    """θ_{n,n'} = (Σ x_i - Σ x'_i) / (n + n') (eq. 2 / 33)."""
    return (x_in.sum(axis=0) - x_aux.sum(axis=0)) / (len(x_in) + len(x_aux))


def mining_confidence(x_in: np.ndarray, x_aux: np.ndarray) -> np.ndarray:
    """f(x') = sigmoid(x'ᵀθ_int / d) with θ_int the in-distribution mean (eq. 47-48)."""
    theta_int = in_distribution_mean(x_in)
    return expit(x_aux @ theta_int / x_in.shape[1])


PAPER_WINDOW = (float(expit(-1.5)), float(expit(-0.5)))  # [a, b] of Proposition 1's proof


def mining_detector(
    x_in: np.ndarray, x_aux: np.ndarray, window: tuple[float, float] = PAPER_WINDOW
) -> tuple[np.ndarray | None, np.ndarray]:
    """θ_om = -mean of the auxiliary points whose confidence f lies in [a, b] (eq. 49).

    Returns θ_om (None when the window keeps no point) and the boolean mask of kept points."""
    confidence = mining_confidence(x_in, x_aux)
    keep = (confidence >= window[0]) & (confidence <= window[1])
    return (-x_aux[keep].mean(axis=0) if keep.any() else None), keep


def quantile_window_detector(
    x_in: np.ndarray, x_aux: np.ndarray, quantile: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """ATOM's selection rule in the Gaussian model: sort the auxiliary points by ascending OOD
    score 1 - f(x') and keep positions [q n', q n' + size); θ = -mean of the kept points."""
    order = np.argsort(1.0 - mining_confidence(x_in, x_aux), kind="stable")
    start = min(int(quantile * len(x_aux)), len(x_aux) - size)
    keep = np.zeros(len(x_aux), dtype=bool)
    keep[order[start : start + size]] = True
    return -x_aux[keep].mean(axis=0), keep


def monte_carlo_fnr(
    model: GaussianModel, theta: np.ndarray, n: int, rng: np.random.Generator
) -> float:
    """Fraction of in-distribution samples rejected: θᵀx ≤ 0."""
    return float(np.mean(model.sample_in(n, rng) @ theta <= 0))


def monte_carlo_worst_fpr(
    model: GaussianModel, theta: np.ndarray, epsilon: float, n: int, rng: np.random.Generator
) -> float:
    """Fraction of samples from Q_{v*}, each moved by the explicit worst perturbation
    δ* = ε sign(θ), that are accepted: θᵀ(x + δ*) > 0."""
    x = model.sample_ood(n, worst_case_shift(model, theta), rng) + epsilon * np.sign(theta)
    return float(np.mean(x @ theta > 0))
