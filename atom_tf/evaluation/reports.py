"""Reports of an evaluation: results.json, results.csv, results.md (laid out like the paper's
Table 1), PNG plots (score histograms, ROC curves) and TensorBoard summaries."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from atom_tf.evaluation.robustness_checks import SUCCESS
from atom_tf.evaluation.runner import scores_file
from atom_tf.evaluation.threats import END_TO_END, IN_ATTACKED, ood_side
from atom_tf.files import atomic_write_text

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out")
CSV_METRICS = (*METRICS, "fpr95_clean_threshold", "in_rejected")  # the last two: end-to-end threats


def markdown_table(results: dict) -> str:
    threats = results["settings"]["threats"]
    ind = results["in_distribution"]
    lines = [
        f"# {results['method'].upper()} on {results['dataset']} ({results['model']}), scorer "
        f"`{results['settings']['scorer']}`",
        "",
        f"In-distribution test accuracy {ind['accuracy']:.2f}%, end-to-end accuracy at the 95%-TPR "
        f"threshold {ind['end_to_end_accuracy']:.2f}% (TPR {ind['tpr']:.2f}%, {ind['test_images']} images).",
        "",
        "FPR at 95% TPR ↓ / AUROC ↑, in percent (in-distribution positive).",
        "",
        "| OOD set | images | " + " | ".join(threats) + " |",
        "|---|---|" + "---|" * len(threats),
    ]
    for name, per_threat in results["ood"].items():
        images = next(iter(per_threat.values()))["images"]
        cells = [f"{per_threat[t]['fpr95']:.2f} / {per_threat[t]['auroc']:.2f}" for t in threats]
        lines.append(f"| {name} | {images} | " + " | ".join(cells) + " |")
    avg = results["average"]
    lines.append(
        "| **average** | | "
        + " | ".join(f"**{avg[t]['fpr95']:.2f} / {avg[t]['auroc']:.2f}**" for t in threats)
        + " |"
    )
    a = results["settings"]["attack"]
    attack = a.get("attack", "pgd")  # results written before --attack: PGD
    square = (
        f"; square: {a.get('queries', 1000)} queries" if attack in ("square", "ensemble") else ""
    )
    lines += ["", f"L∞ attack ({attack}): ε = {a['epsilon'] * 255:.0f}/255, {a['steps']} steps of "
              f"{a['step_size'] * 255:.0f}/255, {a['restarts']} restart(s)"
              f"{', adaptive objective' if a['adaptive'] else ''}{square}"
              f"{end_to_end_attack(results)}."]  # fmt: skip
    for table in (end_to_end_table(results), group_table(results), winners_table(results),
                  corruption_types_table(results), attack_winners_table(results),
                  attack_cost_table(results), robustness_table(results)):  # fmt: skip
        if table:
            lines += ["", table]
    return "\n".join(lines) + "\n"


def end_to_end_attack(results: dict) -> str:
    """'; end-to-end threats: ATTACK, N in-distribution images' where they were run."""
    given = results["settings"]
    if "end_to_end_attack" not in given:
        return ""
    count = results["in_distribution"].get("attacked", {}).get("images")
    return f"; end-to-end threats: {given['end_to_end_attack']}" + (
        f", {count} in-distribution images attacked" if count else "")  # fmt: skip


E2E_COLUMNS = dict(zip(END_TO_END, ("In", "Out", "In+Out"), strict=True))  # ATD's names


def end_to_end_table(results: dict) -> str:
    """ATD's layout (docs/protocol.md §10): AUROC clean / In / Out / In+Out per OOD set, the
    FPR95 at the clean threshold, and the in-distribution images that threshold rejects."""
    threats = [t for t in E2E_COLUMNS if t in results["settings"]["threats"]]
    if not threats:
        return ""
    shown = (["natural"] if "natural" in results["settings"]["threats"] else []) + threats
    names = ["clean" if t == "natural" else E2E_COLUMNS[t] for t in shown]
    fpr_threats = [t for t in ("linf_out", "linf_both") if t in threats]
    attacked = results["in_distribution"].get("attacked")
    lines = ["End-to-end threats: AUROC ↑ with in-distribution images attacked too (In), OOD "
             "images attacked (Out) or both (In+Out); FPR95 ↓ at the deployed threshold (from "
             "clean in-distribution scores).", "",
             "| OOD set | " + " | ".join(f"AUROC {n}" for n in names)
             + "".join(f" | FPR95 at τ, {E2E_COLUMNS[t]}" for t in fpr_threats) + " |",
             "|---|" + "---|" * (len(names) + len(fpr_threats))]  # fmt: skip
    rows = [*results["ood"].items(), ("**average**", results["average"])]
    for name, per in rows:
        cells = [f"{per[t]['auroc']:.2f}" for t in shown]
        cells += [f"{per[t]['fpr95_clean_threshold']:.2f}" for t in fpr_threats]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if attacked:
        lines += ["", f"In-distribution side: {attacked['images']} test images attacked towards "
                  f"OOD ({attacked['attack']}); rejected at the threshold: "
                  f"{attacked['rejected']:.2f}% (clean: {attacked['rejected_clean']:.2f}%); mean "
                  f"score {attacked['mean_score_clean']:.4g} clean, {attacked['mean_score']:.4g} "
                  "attacked."]  # fmt: skip
    return "\n".join(lines)


def group_table(results: dict) -> str:
    """FPR95 / AUROC averaged over the near- and the far-OOD sets (OpenOOD's split)."""
    groups = results.get("average_by_group")
    if not groups:
        return ""
    threats = results["settings"]["threats"]
    lines = ["FPR95 ↓ / AUROC ↑ per group of OOD sets (near: "
             f"{', '.join(results['groups']['near']) or '–'}; far: "
             f"{', '.join(results['groups']['far']) or '–'}):", "",
             "| group | " + " | ".join(threats) + " |", "|---|" + "---|" * len(threats)]  # fmt: skip
    for group, per in groups.items():
        cells = [f"{per[t]['fpr95']:.2f} / {per[t]['auroc']:.2f}" for t in threats]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robustness_checks_of(results: dict) -> list[dict]:
    """The gradient-masking checks of results, one entry per side and set (results of an
    earlier version held one OOD set's as a dict)."""
    checks = results.get("robustness_checks") or []
    return [checks] if isinstance(checks, dict) else checks


def _success(checks: dict) -> tuple[str, str]:
    """The key and the column name of what the attacker raises in one entry of the checks."""
    key, _, column, _ = SUCCESS[checks.get("side", "ood")]
    return key, column


def _numeric_order(points: dict[str, dict]) -> dict[str, dict]:
    """Points keyed by a number's text (ε, steps) in the number's order: a JSON file written
    with sorted keys reads them back as "1", "16", "2", ..."""
    return dict(sorted(points.items(), key=lambda item: float(item[0])))


def robustness_table(results: dict) -> str:
    """The gradient-masking checks: per side and set, FPR95 (or the in-distribution share
    rejected) / AUROC against ε and against steps, Square's share, and the warnings
    (docs/protocol.md §11)."""
    lines: list[str] = []
    for checks in robustness_checks_of(results):
        eps, steps = _numeric_order(checks["epsilon"]), _numeric_order(checks["steps"])
        if "clean" in checks:
            eps = {"0 (clean)": checks["clean"], **eps}
        key, name = _success(checks)
        cell = lambda m, key=key: f"{m[key]:.1f} / {m['auroc']:.1f}"  # noqa: E731
        what = (f"{checks['images']} in-distribution images attacked towards OOD; {name} / "
                "AUROC against clean OOD" if key == "rejected" else
                f"{checks['images']} images of {checks['set']}; {name} / AUROC")  # fmt: skip
        lines += [("\n" if lines else "") + f"Gradient-masking checks ({what} under L∞ PGD):",
                  "", "| ε (/255) | " + " | ".join(eps) + " |", "|---|" + "---|" * len(eps),
                  "| | " + " | ".join(cell(m) for m in eps.values()) + " |", "",
                  "| steps | " + " | ".join(steps) + " |", "|---|" + "---|" * len(steps),
                  "| | " + " | ".join(cell(m) for m in steps.values()) + " |", "",
                  f"Square (no gradients) beats PGD and APGD on "
                  f"{checks['square_beats_white_box']:.1f} % of the images."]  # fmt: skip
        lines += [f"**Warning**: {w}" for w in checks["warnings"]] or ["Every check passed."]
    return "\n".join(lines)


def plot_epsilon_curve(results: dict, path: str) -> None:
    """The success of the L∞ threat (FPR95, or the in-distribution share rejected) and AUROC
    against ε (log scale), a panel per side and set of the checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = robustness_checks_of(results)
    fig, axes = plt.subplots(1, len(entries), figsize=(4.6 * len(entries), 3.2), squeeze=False)
    for ax, checks in zip(axes[0], entries, strict=True):
        key, name = _success(checks)
        eps = [int(e) for e in _numeric_order(checks["epsilon"])]
        for metric, label in ((key, f"{name} ↑ = attack wins"), ("auroc", "AUROC (%)")):
            ax.plot(eps, [checks["epsilon"][str(e)][metric] for e in eps], "o-", label=label)
        ax.set_xscale("log", base=2)
        title = "in-distribution images" if key == "rejected" else checks["set"]
        ax.set(xlabel="ε (× 1/255)", ylim=(-2, 102), title=f"ε-curve on {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attack_winners_table(results: dict) -> str:
    """Which member of the attack ensemble fooled the detector most, per set and threat (% of
    OOD images; a Square share above a few percent hints at gradient masking)."""
    rows = [(label, threat, shares) for label, per_set in results.get("attack_winners", {}).items()
            for threat, shares in per_set.items()]  # fmt: skip
    if not rows:
        return ""
    names = list(rows[0][2])
    lines = ["Which attack of the ensemble won each OOD image (%):", "",
             "| OOD set | threat | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
    for label, threat, shares in rows:
        lines.append(
            f"| {label} | {threat} | " + " | ".join(f"{shares[n]:.1f}" for n in names) + " |"
        )
    return "\n".join(lines)


def attack_cost_table(results: dict) -> str:
    """What each member of the attack ensemble cost, per attacked side: the images it attacked
    (fewer than all where the early stop settled them) and its wall seconds."""
    rows = [(label, side, cost) for label, per_set in results.get("attack_cost", {}).items()
            for side, cost in per_set.items()]  # fmt: skip
    attacked_in = results["in_distribution"].get("attacked") or {}
    if "attack_cost" in attacked_in:
        rows.insert(0, ("in-distribution", "linf_in", attacked_in["attack_cost"]))
    if not rows:
        return ""
    names = list(rows[0][2])
    lines = ["What each attack of the ensemble cost: images attacked / wall seconds (an image "
             "settled past every score of the other side is attacked no further):", "",
             "| images | attack | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
    for label, side, cost in rows:
        cells = " | ".join(f"{cost[n]['images']} / {cost[n]['seconds']:.1f}" for n in names)
        lines.append(f"| {label} | {side} | {cells} |")
    return "\n".join(lines)


def write_reports(
    results: dict, results_dir: str, log_dir: str | None = None, plots: bool = True
) -> None:
    atomic_write_text(os.path.join(results_dir, "results.json"), json.dumps(results, indent=2))
    with open(os.path.join(results_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["dataset", "method", "scorer", "ood_set", "threat", "images", *CSV_METRICS]
        )
        for name, per_threat in results["ood"].items():
            for threat, m in per_threat.items():
                writer.writerow([results["dataset"], results["method"], results["settings"]["scorer"], name, threat,
                                 m["images"], *(f"{m[k]:.4f}" if k in m else "" for k in CSV_METRICS)])  # fmt: skip
        for threat, m in results["average"].items():
            writer.writerow([results["dataset"], results["method"], results["settings"]["scorer"], "average", threat,
                             "", *(f"{m[k]:.4f}" if k in m else "" for k in CSV_METRICS)])  # fmt: skip
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write(markdown_table(results))
    if plots:
        plot_scores(results, results_dir)
        if robustness_checks_of(results):
            plot_epsilon_curve(results, os.path.join(results_dir, "epsilon_curve.png"))
    if log_dir:
        write_tensorboard(results, log_dir)


def _scores(results_dir: str, label: str, threat: str | None = None) -> np.ndarray:
    with np.load(os.path.join(results_dir, scores_file(label, threat))) as saved:
        return saved["scores"]


def winners_table(results: dict) -> str:
    """Which corruptions fool the detector most: winning counts per corruption (all severities
    and OOD sets together), per threat model."""
    per_threat: dict[str, dict[str, int]] = {}
    for per_set in results.get("corruption_winners", {}).values():
        for threat, counts in per_set.items():
            totals = per_threat.setdefault(threat, {})
            for variant, count in counts.items():
                name = variant.split("@")[0]
                totals[name] = totals.get(name, 0) + count
    if not per_threat:
        return ""
    threats = sorted(per_threat)
    names = sorted(
        {n for t in per_threat.values() for n in t},
        key=lambda n: -sum(per_threat[t].get(n, 0) for t in threats),
    )
    lines = ["Which corruption fooled the detector most (winning variant per OOD image, all sets):", "",
             "| corruption type | " + " | ".join(threats) + " |", "|---|" + "---|" * len(threats)]  # fmt: skip
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(str(per_threat[t].get(name, 0)) for t in threats) + " |"
        )
    return "\n".join(lines)


def corruption_types_table(results: dict) -> str:
    """Each corruption alone (the worst of the clean image and its five severities), averaged
    over the OOD sets, the most damaging first; beside it the FPR95 of each severity alone."""
    per_set = list(results.get("corruption_types", {}).values())
    if not per_set:
        return ""

    def mean(name: str, key: str) -> np.ndarray:
        return np.mean([np.asarray(s[name][key], dtype=float) for s in per_set], axis=0)

    names = sorted(per_set[0], key=lambda n: (-mean(n, "fpr95"), mean(n, "auroc")))
    lines = ["Each corruption alone (worst of the clean image and severities 1-5), averaged over "
             f"{len(per_set)} OOD set(s): FPR95 / AUROC, and FPR95 at each severity alone:", "",
             "| corruption | FPR95 / AUROC | 1 | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        by_severity = " | ".join(f"{v:.1f}" for v in mean(name, "fpr95_by_severity"))
        lines.append(f"| {name} | {mean(name, 'fpr95'):.2f} / {mean(name, 'auroc'):.2f} | "
                     f"{by_severity} |")  # fmt: skip
    return "\n".join(lines)


def plot_scores(results: dict, results_dir: str) -> None:
    """One PNG per threat: score histograms (in-distribution vs each OOD set) and ROC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean_in = _scores(results_dir, "in_distribution")
    for threat in results["settings"]["threats"]:
        in_scores = _scores(results_dir, "in_distribution", "linf_in") if (
            threat in IN_ATTACKED) else clean_in  # fmt: skip
        sets = list(results["ood"])
        fig, axes = plt.subplots(1, len(sets) + 1, figsize=(4 * (len(sets) + 1), 3.4))
        for ax, name in zip(axes[:-1], sets, strict=True):
            ood = _scores(results_dir, name, ood_side(threat))
            bins = np.linspace(min(in_scores.min(), ood.min()), max(in_scores.max(), ood.max()), 50)
            ax.hist(in_scores, bins, alpha=0.6, density=True, label="in-distribution")
            ax.hist(ood, bins, alpha=0.6, density=True, label=name)
            ax.axvline(results["threshold"], color="k", ls="--", lw=1, label="95% TPR threshold")
            m = results["ood"][name][threat]
            ax.set_title(f"{name}: FPR95 {m['fpr95']:.1f}%, AUROC {m['auroc']:.1f}%", fontsize=9)
            ax.set_xlabel("detection score")
        axes[0].legend(fontsize=7)
        ax = axes[-1]
        for name in sets:
            ood = _scores(results_dir, name, ood_side(threat))
            thresholds = np.unique(np.concatenate([in_scores, ood]))[::-1]
            tpr = [(in_scores >= t).mean() for t in thresholds]
            fpr = [(ood >= t).mean() for t in thresholds]
            ax.plot([0, *fpr], [0, *tpr], label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(
            xlabel="FPR (OOD accepted)",
            ylabel="TPR (in-distribution accepted)",
            title=f"ROC, {threat}",
        )
        ax.legend(fontsize=7)
        fig.suptitle(
            f"{results['method'].upper()} on {results['dataset']}: {threat} OOD", fontsize=10
        )
        fig.tight_layout()
        fig.savefig(os.path.join(results_dir, f"scores_{threat}.png"), dpi=90)
        plt.close(fig)


def write_tensorboard(results: dict, log_dir: str) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=0):
        for name, per_threat in results["ood"].items():
            for threat, m in per_threat.items():
                for key in METRICS:
                    if key in m:  # AUPR is left out where the ensemble stopped early
                        tf.summary.scalar(f"eval/{threat}/{name}/{key}", m[key])
        for threat, m in results["average"].items():
            for key in METRICS:
                if key in m:
                    tf.summary.scalar(f"eval/{threat}/average/{key}", m[key])
        tf.summary.scalar("eval/in_distribution/accuracy", results["in_distribution"]["accuracy"])
        tf.summary.scalar(
            "eval/in_distribution/end_to_end_accuracy",
            results["in_distribution"]["end_to_end_accuracy"],
        )
    writer.flush()
