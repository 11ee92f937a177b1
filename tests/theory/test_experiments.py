import math

import numpy as np
import pytest

from atom_tf.theory import gaussian as th
from atom_tf.theory.experiments import (
    TheorySettings,
    naive_vs_mining,
    sample_complexity,
    window_sweep,
)


def small_model(seed=0, d=64, sigma_scale=1.0):
    """Moderate errors (0.05-0.5) so Monte-Carlo estimates are precise."""
    model = th.GaussianModel.from_family(d, 1, seed=seed)
    return th.GaussianModel(model.mu, model.sigma * sigma_scale, model.nu)


def test_family_instance_follows_eq_15():
    model = th.GaussianModel.from_family(4500, 2, seed=1)
    assert np.linalg.norm(model.mu) ** 2 == pytest.approx(4500)
    assert model.sigma**2 == pytest.approx(math.sqrt(4500 * 2))
    assert model.nu == pytest.approx(np.linalg.norm(model.mu) / 4)
    assert TheorySettings().family_condition()[1]


def test_sampler_moments():
    model = small_model(d=16)
    rng = np.random.default_rng(0)
    x = model.sample_in(200_000, rng)
    np.testing.assert_allclose(x.mean(0), model.mu, atol=0.05)
    np.testing.assert_allclose(x.std(0), model.sigma, rtol=0.01)
    aux = model.sample_ideal_aux(100_000, rng)
    np.testing.assert_allclose(aux.mean(0), -model.mu, atol=0.05)  # v is symmetric
    shift = aux + model.mu  # v + noise: total variance σ² + E‖v‖²/d per coordinate
    expected_var = model.sigma**2 + model.nu**2 * model.d / (model.d + 2) / model.d
    assert shift.var(0).mean() == pytest.approx(expected_var, rel=0.02)
    mix, informative = model.sample_mixture_aux(100_000, rng)
    assert informative.mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(mix[informative].mean(0), -model.mu, atol=0.06)
    np.testing.assert_allclose(mix[~informative].mean(0), 10 * model.mu, atol=0.06)


def test_ideal_aux_shifts_stay_in_the_nu_ball():
    model = small_model(d=8)
    rng = np.random.default_rng(1)
    # with σ → 0 the samples are -μ + v exactly
    tight = th.GaussianModel(model.mu, 1e-12, model.nu)
    v = tight.sample_ideal_aux(5000, rng) + model.mu
    norms = np.linalg.norm(v, axis=1)
    assert norms.max() <= model.nu + 1e-9
    assert np.mean(norms <= model.nu * 0.5 ** (1 / 8)) == pytest.approx(
        0.5, abs=0.03
    )  # uniform volume


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_forms_match_monte_carlo(seed):
    model = small_model(seed, d=64, sigma_scale=3.0)
    rng = np.random.default_rng(seed)
    theta = model.mu + 0.5 * model.sigma * rng.standard_normal(64) / 2  # an imperfect detector
    n = 400_000
    fnr = th.fnr(model, theta)
    assert 0.01 < fnr < 0.5
    assert th.monte_carlo_fnr(model, theta, n, rng) == pytest.approx(
        fnr, abs=4 * math.sqrt(fnr / n) + 1e-4
    )
    eps = 0.05
    fpr = th.worst_robust_fpr(model, theta, eps)
    assert 0.01 < fpr < 0.99
    assert th.monte_carlo_worst_fpr(model, theta, eps, n, rng) == pytest.approx(
        fpr, abs=4 * math.sqrt(fpr / n) + 1e-4
    )
    # any other shift in the ball or a weaker perturbation does no better than the worst case
    other_v = model.nu * rng.standard_normal(64) / math.sqrt(64) / 1.5
    x = model.sample_ood(n, other_v, rng) + 0.5 * eps * np.sign(theta)
    assert np.mean(x @ theta > 0) < fpr


def test_naive_detector_with_u_mix_tends_to_minus_seven_quarters_mu():
    model = small_model(d=32)
    rng = np.random.default_rng(2)
    x_in = model.sample_in(100_000, rng)
    x_aux, _ = model.sample_mixture_aux(100_000, rng)
    theta = th.naive_detector(x_in, x_aux)
    np.testing.assert_allclose(theta, -1.75 * model.mu, atol=0.1)


def test_in_distribution_mean_and_ideal_aux_detector_point_along_mu():
    model = small_model(d=32)
    rng = np.random.default_rng(3)
    x_in = model.sample_in(50_000, rng)
    np.testing.assert_allclose(th.in_distribution_mean(x_in), model.mu, atol=0.1)
    theta = th.naive_detector(x_in, model.sample_ideal_aux(50_000, rng))
    np.testing.assert_allclose(theta, model.mu, atol=0.1)


def test_mining_detector_keeps_the_informative_component():
    s = TheorySettings(seeds=(0,))
    model = th.GaussianModel.from_family(s.d, s.n0, seed=0)
    rng = np.random.default_rng(4)
    x_in = model.sample_in(500, rng)
    x_aux, informative = model.sample_mixture_aux(500, rng)
    theta, keep = th.mining_detector(x_in, x_aux)
    assert keep[informative].mean() > 0.99 and not keep[~informative].any()
    np.testing.assert_allclose(theta, -x_aux[informative & keep].mean(0))
    assert th.fnr(model, theta) < 1e-3 and th.worst_robust_fpr(model, theta, s.epsilon) < 1e-3
    empty, none_kept = th.mining_detector(x_in, x_aux, (0.0, 1e-300))
    assert empty is None and not none_kept.any()
    # ATOM's rule: the q-window of ascending OOD scores; q = 0 takes the hardest (far) points
    _, first = th.quantile_window_detector(x_in, x_aux, 0.0, 100)
    assert not first[informative].any()


def test_experiments_reproduce_the_papers_claims_on_defaults():
    s = TheorySettings(seeds=(0, 1, 2, 3, 4))
    for row in naive_vs_mining(s):
        assert row["naive"]["fnr"] > 0.99 and row["naive"]["cos"] < -0.99
        assert row["mining"]["fnr"] <= 1e-3 and row["mining"]["fpr"] <= 1e-3
    for row in sample_complexity(s):
        assert row["ideal_aux_fnr"] + row["ideal_aux_fpr"] < row["in_only_fnr"] + row["in_only_fpr"]
    sweep = {r["window"]: r for r in window_sweep(TheorySettings(seeds=(0, 1)))}
    assert sweep["paper [-1.5, -0.5]"]["fpr"] < 1e-3
    assert sweep["all (no mining)"]["fnr"] > 0.99 and sweep["far [5, 15]"]["fnr"] > 0.99
