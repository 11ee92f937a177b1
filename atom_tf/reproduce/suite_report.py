"""One paper-style table for a suite of runs: each method's evaluation averaged per threat,
with the paper's published rows (docs/protocol.md §8) beside the measured ones.

Writes `results.md`, `results.json`, `results.csv` and `fpr95.png` (bars of FPR95 per threat
and method) from the `results.json` of each run's evaluation.
"""

from __future__ import annotations

import csv
import json
import os

from atom_tf.reproduce.published import THREATS, published_rows

SUITE_METRICS = ("fpr95", "auroc")


def combine(
    evaluations: dict[str, dict], timings: dict[str, dict[str, float]], dataset_label: str
) -> dict:
    """Rows per suite entry from each evaluation's results.json, in the paper's threat order."""
    rows = {}
    threats: list[str] = []
    for name, results in evaluations.items():
        for threat in results["average"]:
            if threat not in threats:
                threats.append(threat)
        rows[name] = {
            "method": results["method"],
            "model": results["model"],
            "scorer": results["settings"]["scorer"],
            "accuracy": results["in_distribution"]["accuracy"],
            "end_to_end_accuracy": results["in_distribution"]["end_to_end_accuracy"],
            "average": {t: {k: results["average"][t][k] for k in SUITE_METRICS} for t in results["average"]},
            "per_set": {
                s: {t: {k: m[k] for k in SUITE_METRICS} for t, m in per.items()}
                for s, per in results["ood"].items()
            },
            "ood_sets": {s: next(iter(per.values()))["images"] for s, per in results["ood"].items()},
            "seconds": timings.get(name, {}),
        }  # fmt: skip
    ordered = [t for t in THREATS if t in threats] + [t for t in threats if t not in THREATS]
    published = {  # the paper's rows of the methods this suite measured
        method: {t: dict(zip(SUITE_METRICS, v, strict=True)) for t, v in row.items()}
        for method, row in published_rows(dataset_label).items()
        if method in evaluations
    }
    return {"dataset": dataset_label, "threats": ordered, "rows": rows, "published": published}


def mean_fpr95(row: dict, threats: list[str]) -> float | None:
    """FPR95 averaged over the threat models (the criterion for choosing q, Appendix B.7)."""
    if not all(t in row for t in threats):
        return None
    return sum(row[t]["fpr95"] for t in threats) / len(threats)


def _cell(metrics: dict | None) -> str:
    return "–" if metrics is None else f"{metrics['fpr95']:.2f} / {metrics['auroc']:.2f}"


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def suite_markdown(table: dict) -> str:
    threats = table["threats"]
    head = "| | method | " + " | ".join(threats) + " | mean FPR95 |"
    rule = "|---|---|" + "---|" * (len(threats) + 1)
    lines = [
        f"# Robust OOD detection on {table['dataset']}: measured and published",
        "",
        "FPR at 95% TPR ↓ / AUROC ↑ in percent, in-distribution positive, averaged over the OOD "
        "test sets (measured: the sets listed below; published: the paper's six, DenseNet-BC-100, "
        "docs/protocol.md §8).",
        "",
        head,
        rule,
    ]
    for source, rows in (("measured", {n: r["average"] for n, r in table["rows"].items()}),
                         ("paper", table["published"])):  # fmt: skip
        for name, row in rows.items():
            cells = [_cell(row.get(t)) for t in threats]
            mean = mean_fpr95(row, threats)
            lines.append(
                f"| {source} | {name} | "
                + " | ".join(cells)
                + f" | {'–' if mean is None else f'{mean:.2f}'} |"
            )
    lines += [
        "",
        "| method | model | scorer | test accuracy | end-to-end accuracy | train min | evaluate min |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in table["rows"].items():
        s = row["seconds"]
        lines.append(
            f"| {name} | {row['model']} | {row['scorer']} | {row['accuracy']:.2f} | "
            f"{row['end_to_end_accuracy']:.2f} | {_minutes(s.get('train'))} | "
            f"{_minutes(s.get('evaluate'))} |"
        )
    lines += ["", "Per OOD set (FPR95 / AUROC):", ""]
    lines += ["| method | OOD set | images | " + " | ".join(threats) + " |",
              "|---|---|---|" + "---|" * len(threats)]  # fmt: skip
    for name, row in table["rows"].items():
        for set_name, per in row["per_set"].items():
            cells = [_cell(per.get(t)) for t in threats]
            lines.append(
                f"| {name} | {set_name} | {row['ood_sets'][set_name]} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def plot_fpr95(table: dict, path: str) -> None:
    """Grouped bars: FPR95 per threat (groups) and method (bars), published rows hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    threats = table["threats"]
    bars = [(f"{n}", r["average"], False) for n, r in table["rows"].items()]
    bars += [(f"{m} (paper)", r, True) for m, r in table["published"].items()]
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(threats), 3.8))
    x = np.arange(len(threats))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(label.split(" ")[0] for label, _, _ in bars))  # one colour a method
    for i, (label, row, paper) in enumerate(bars):
        values = [row[t]["fpr95"] if t in row else np.nan for t in threats]
        method = label.split(" ")[0]
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label,
               color=colors[names.index(method) % len(colors)], hatch="//" if paper else None,
               alpha=0.5 if paper else 1.0, edgecolor="k", linewidth=0.4)  # fmt: skip
    ax.set_xticks(x, threats)
    ax.set_ylabel("FPR at 95% TPR (%) ↓")
    ax.set_ylim(0, 105)
    ax.set_title(f"{table['dataset']}: FPR95 per threat model")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_suite_reports(table: dict, results_dir: str, plots: bool = True) -> None:
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(results_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "method", "ood_set", "threat", *SUITE_METRICS])
        for name, row in table["rows"].items():
            for threat, m in row["average"].items():
                writer.writerow(["measured", name, "average", threat, *(f"{m[k]:.4f}" for k in SUITE_METRICS)])  # fmt: skip
            for set_name, per in row["per_set"].items():
                for threat, m in per.items():
                    writer.writerow(["measured", name, set_name, threat, *(f"{m[k]:.4f}" for k in SUITE_METRICS)])  # fmt: skip
        for method, row in table["published"].items():
            for threat, m in row.items():
                writer.writerow(["paper", method, "average", threat, *(f"{m[k]:.4f}" for k in SUITE_METRICS)])  # fmt: skip
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write(suite_markdown(table))
    if plots:
        plot_fpr95(table, os.path.join(results_dir, "fpr95.png"))
