"""Tables and the figure for `bin/theory.py`."""

from __future__ import annotations

import numpy as np


def _e(x: float) -> str:
    return f"{x:.2e}"


def format_tables(results: dict, s) -> str:
    need, ok = s.family_condition()
    st = results["settings"]
    lines = [
        f"Gaussian model: d={s.d}, n0={s.n0}, eps={s.epsilon}, sigma={st['sigma']:.3g}, nu=||mu||*{s.nu_ratio}, "
        f"seeds={len(s.seeds)}; eq. (15) needs d >= {need:.0f}: {'yes' if ok else 'NO'}",
        "",
        "1. Propositions 3 vs 4: in-distribution data only vs with ideal auxiliary data (n' = n), mean over seeds",
        f"{'n':>6} | {'in-only FNR':>12} {'in-only FPR':>12} | {'+aux FNR':>12} {'+aux FPR':>12}",
    ]
    for r in results["sample_complexity"]:
        lines.append(f"{r['n']:>6} | {_e(r['in_only_fnr']):>12} {_e(r['in_only_fpr']):>12} | "
                     f"{_e(r['ideal_aux_fnr']):>12} {_e(r['ideal_aux_fpr']):>12}")  # fmt: skip
    lines += [
        "",
        f"2. Proposition 1: U_mix auxiliary data (n = {s.n_in}, n' = {s.n_aux}); robust FPR is the worst over Q",
        f"{'seed':>4} | {'naive cos':>9} {'|t|/|mu|':>8} {'FNR':>9} {'FPR':>9} | {'mining cos':>10} "
        f"{'FNR':>9} {'FPR':>9} | kept from N(-mu) / N(10mu)",
    ]
    for r in results["naive_vs_mining"]:
        n, m = r["naive"], r["mining"]
        lines.append(f"{r['seed']:>4} | {n['cos']:>9.4f} {n['scale']:>8.3f} {_e(n['fnr']):>9} {_e(n['fpr']):>9} | "
                     f"{m['cos']:>10.4f} {_e(m['fnr']):>9} {_e(m['fpr']):>9} | "
                     f"{r['kept_informative']:.1%} / {r['kept_far']:.1%}")  # fmt: skip
    lines += [
        "",
        "3. Window sweep (mean over seeds): confidence windows on t = x'θ_int/d, and ATOM's quantile windows",
        f"{'window':>24} | {'kept':>7} {'informative':>11} | {'FNR':>9} {'FPR':>9}",
    ]
    for r in results["window_sweep"]:
        lines.append(f"{r['window']:>24} | {r['kept']:>7.1f} {r['kept_informative_share']:>11.1%} | "
                     f"{_e(r['fnr']):>9} {_e(r['fpr']):>9}")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    sc = results["sample_complexity"]
    n = [r["n"] for r in sc]
    ax = axes[0]
    ax.plot(
        n,
        [r["in_only_fnr"] + r["in_only_fpr"] for r in sc],
        "o-",
        label="in-distribution only (Prop. 3)",
    )
    ax.plot(
        n,
        [r["ideal_aux_fnr"] + r["ideal_aux_fpr"] for r in sc],
        "s-",
        label="+ ideal auxiliary (Prop. 4)",
    )
    ax.set(
        xscale="log",
        xlabel="in-distribution samples n",
        ylabel="FNR + worst robust FPR",
    )
    ax.set_ylim(0, 2)
    ax.legend()
    ax.set_title("Benefit of auxiliary OOD data")
    ax = axes[1]
    nm = results["naive_vs_mining"]
    x = np.arange(len(nm))
    ax.bar(x - 0.2, [r["naive"]["cos"] for r in nm], 0.4, label="naive (eq. 2)")
    ax.bar(x + 0.2, [r["mining"]["cos"] for r in nm], 0.4, label="outlier mining (eq. 49)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(
        xticks=x,
        xticklabels=[f"seed {r['seed']}" for r in nm],
        ylabel="cos(θ, μ)",
        ylim=(-1.05, 1.05),
    )
    ax.legend()
    ax.set_title("U_mix: naive points away from μ, mining along μ")
    ax = axes[2]
    ws = results["window_sweep"]
    y = np.arange(len(ws))
    ax.barh(y - 0.2, [r["fnr"] for r in ws], 0.4, label="FNR")
    ax.barh(y + 0.2, [r["fpr"] for r in ws], 0.4, label="worst robust FPR")
    ax.set(
        yticks=y,
        yticklabels=[r["window"] for r in ws],
        xlabel="error (mean over seeds)",
        xlim=(0, 1),
    )
    ax.invert_yaxis()
    ax.legend()
    ax.set_title("Which outliers to mine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
