"""One paper-style table for a suite of runs: each method's evaluation averaged per threat,
with the paper's published rows (docs/protocol.md §8) beside the measured ones.

Writes `results.md`, `results.json`, `results.csv`, `fpr95.png` (bars of FPR95 per threat
and method) and, for a sweep of a method's strength (ε, β) or a comparison of a numeric
setting (--init_share), `tradeoff.png` from the `results.json` of each run's evaluation.
"""

from __future__ import annotations

import csv
import json
import os

from atom_tf.evaluation.threats import END_TO_END
from atom_tf.reproduce.published import THREATS, published_rows

SUITE_METRICS = ("fpr95", "auroc")


def combine(
    evaluations: dict[str, dict],
    timings: dict[str, dict[str, float]],
    dataset_label: str,
    strengths: dict[str, dict] | None = None,
    choices: dict[str, list[dict]] | None = None,
    run_settings: dict[str, dict] | None = None,
) -> dict:
    """Rows per suite entry from each evaluation's results.json, in the paper's threat order;
    `strengths` (entry: {method, setting, value}) places entries in a strength sweep,
    `choices` (entry: [{method, setting, value}, ...]) in comparisons of categorical
    settings, where `run_settings` (entry: the settings its run trained with) names what else
    the compared entries differ in."""
    strengths, choices = strengths or {}, choices or {}
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
            **end_to_end_row(results),
            **({"strength": strengths[name]} if name in strengths else {}),
            **({"choices": choices[name]} if name in choices else {}),
        }  # fmt: skip
    # the paper's threats (and any other), not the end-to-end ones: they have a table of their own
    threats = [t for t in threats if t not in END_TO_END]
    ordered = [t for t in THREATS if t in threats] + [t for t in threats if t not in THREATS]
    published = {  # the paper's rows of the methods this suite measured
        method: {t: dict(zip(SUITE_METRICS, v, strict=True)) for t, v in row.items()}
        for method, row in published_rows(dataset_label).items()
        if method in evaluations
    }
    return {"dataset": dataset_label, "threats": ordered, "rows": rows, "published": published,
            "tradeoffs": tradeoffs(rows), "comparisons": comparisons(rows, run_settings)}  # fmt: skip


E2E_THREATS = ("natural", "linf", *END_TO_END)
E2E_KEYS = ("fpr95", "auroc", "fpr95_clean_threshold", "in_rejected")


def end_to_end_row(results: dict) -> dict:
    """{'end_to_end': ...} where the evaluation ran the end-to-end threats (docs/protocol.md
    §10): their metrics averaged over all sets and per group (near / far), the attacks used
    and the in-distribution images the threshold rejects once attacked."""
    if not any(t in results["average"] for t in END_TO_END):
        return {}

    def pick(average: dict) -> dict:
        return {t: {k: average[t][k] for k in E2E_KEYS if k in average[t]}
                for t in E2E_THREATS if t in average}  # fmt: skip

    groups = {"all": results["average"], **results.get("average_by_group", {})}
    return {"end_to_end": {
        "groups": {g: pick(average) for g, average in groups.items()},
        "attack": results["settings"].get("end_to_end_attack"),
        "pgd_attack": results["settings"]["attack"].get("attack", "pgd"),
        "in_distribution": results["in_distribution"].get("attacked"),
        **attack_seconds(results),
    }}  # fmt: skip


def attack_seconds(results: dict) -> dict:
    """{'seconds': ...}: the wall seconds and images of linf's attack (the OOD sets) and of the
    end-to-end attacks (the in-distribution subset towards OOD, the OOD sets under linf_out),
    where the evaluation measured all of them."""
    seconds, ood = results.get("seconds", {}), results["ood"]
    attacked_in = results["in_distribution"].get("attacked") or {}
    try:
        linf = sum(seconds[label]["linf"] for label in ood)
        out = sum(seconds[label]["linf_out"] for label in ood)
        in_side = seconds["in_distribution"]["linf_in"]
    except KeyError:  # a threat not run, or scores cached before seconds were recorded
        return {}
    return {"seconds": {
        "linf": linf, "linf_images": sum(ood[label]["linf"]["images"] for label in ood),
        "end_to_end": in_side + out,
        "end_to_end_images": attacked_in.get("images", 0)
        + sum(ood[label]["linf_out"]["images"] for label in ood),
        **square_cost(results),
    }}  # fmt: skip


def square_cost(results: dict) -> dict:
    """Of the end-to-end ensemble (where it recorded its members' cost): Square's seconds, and
    the images settled before Square (its early stop: attacked by PGD, not by Square)."""
    costs = [per["linf_out"] for per in results.get("attack_cost", {}).values()
             if "linf_out" in per]  # fmt: skip
    attacked_in = results["in_distribution"].get("attacked") or {}
    if "attack_cost" in attacked_in:
        costs.append(attacked_in["attack_cost"])
    if not costs:
        return {}
    return {"square": sum(c["square"]["seconds"] for c in costs),
            "settled": sum(c["pgd"]["images"] - c["square"]["images"] for c in costs)}  # fmt: skip


def end_to_end_markdown(table: dict) -> list[str]:
    """ATD's table (AUROC clean / In / Out / In+Out) per method and group of OOD sets, with what
    the end-to-end attack adds over linf's attack on the OOD side and the in-distribution
    images rejected at the clean threshold."""
    rows = {n: r["end_to_end"] for n, r in table["rows"].items() if "end_to_end" in r}
    if not rows:
        return []
    lines = ["", "End-to-end robustness (docs/protocol.md §10), AUROC ↑ in percent: in-distribution "
             "images attacked towards OOD (In), OOD images attacked (Out), both (In+Out); FPR95 "
             "↓ of Out at the clean threshold; the in-distribution images that threshold rejects "
             "once attacked; and what the end-to-end attack adds over linf's (Out minus linf, "
             "FPR95 / AUROC points).", "",
             "| method | OOD sets | attack | clean | In | Out | In+Out | FPR95 Out | "
             "in-distribution rejected (In) | Out vs linf |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    cell = lambda m, k: "–" if m is None or k not in m else f"{m[k]:.2f}"  # noqa: E731
    for name, e2e in rows.items():
        rejected = e2e["in_distribution"]["rejected"] if e2e.get("in_distribution") else None
        for group, per in e2e["groups"].items():
            out, pgd = per.get("linf_out"), per.get("linf")
            gain = "–" if out is None or pgd is None else (
                f"{out['fpr95'] - pgd['fpr95']:+.2f} / {out['auroc'] - pgd['auroc']:+.2f} "
                f"(vs {e2e['pgd_attack']})")  # fmt: skip
            lines.append(
                f"| {name} | {group} | {e2e['attack']} | {cell(per.get('natural'), 'auroc')} | "
                f"{cell(per.get('linf_in'), 'auroc')} | {cell(out, 'auroc')} | "
                f"{cell(per.get('linf_both'), 'auroc')} | "
                f"{cell(out, 'fpr95_clean_threshold')} | "
                f"{'–' if rejected is None else f'{rejected:.2f}'} | {gain} |"
            )
    timed = {n: e2e["seconds"] for n, e2e in rows.items() if "seconds" in e2e}
    if timed:
        lines += ["", "Wall time of the attacks: the end-to-end ones (In and Out sides) against "
                  "linf's on the OOD sets, and per attacked image, with and without Square; "
                  "Square's share of the end-to-end time and the images the ensemble settled "
                  "before Square.", "",
                  "| method | end-to-end s (images) | linf s (images) | per image, end-to-end / "
                  "linf | without Square | Square | settled before Square |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, t in timed.items():
            # seconds of the end-to-end attacks -> their cost per image in linf's per image
            scale = max(t["linf_images"], 1) / max(t["end_to_end_images"], 1) / t["linf"]
            square = gradient = "–"
            if "square" in t:
                square = f"{100 * t['square'] / t['end_to_end']:.0f} %"
                gradient = f"{(t['end_to_end'] - t['square']) * scale:.1f}x"
            lines.append(f"| {name} | {t['end_to_end']:.0f} ({t['end_to_end_images']}) | "
                         f"{t['linf']:.0f} ({t['linf_images']}) | {t['end_to_end'] * scale:.1f}x | "
                         f"{gradient} | {square} | {t.get('settled', '–')} |")  # fmt: skip
    return lines


def _point(name: str, row: dict, value) -> dict:
    """One entry of a sweep or a comparison: what its setting buys (In+Out AUROC, None where
    the end-to-end threats did not run) and costs (accuracy, natural FPR95, training time)."""
    both = row.get("end_to_end", {}).get("groups", {}).get("all", {}).get("linf_both")
    return {"entry": name, "value": value, "accuracy": row["accuracy"],
            "natural_fpr95": row["average"].get("natural", {}).get("fpr95"),
            "in_out_auroc": None if both is None else both["auroc"],
            "train_seconds": row["seconds"].get("train"),
            "train_lower_bound": row["seconds"].get("train_lower_bound", False)}  # fmt: skip


def tradeoffs(rows: dict[str, dict]) -> dict[str, dict]:
    """Per swept method with at least two evaluated strengths: the setting and, in order of its
    value, each entry's test accuracy, natural FPR95, In+Out AUROC over all OOD sets and
    training seconds: the trade-off a user chooses from."""
    sweeps: dict[str, dict] = {}
    for name, row in rows.items():
        strength = row.get("strength")
        if not strength:
            continue
        sweep = sweeps.setdefault(
            strength["method"], {"setting": strength["setting"], "points": []}
        )
        sweep["points"].append(_point(name, row, strength["value"]))
    return {method: {**sweep, "points": sorted(sweep["points"], key=lambda p: p["value"])}
            for method, sweep in sweeps.items() if len(sweep["points"]) >= 2}  # fmt: skip


# run settings that do not change what is trained: never named as a difference
RUNTIME_SETTINGS = frozenset({"data_dir", "download", "jit_compile"})


def comparisons(
    rows: dict[str, dict], run_settings: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Per (method, categorical setting) with at least two evaluated entries (e.g. atom_adv's
    train_attack: FGSM-RS against PGD-5): each entry's value and point, in suite order, with
    `others`, the other run settings the group's entries differ in (its epochs, where FGSM-RS
    and PGD-5 runs of two lengths are compared), where `run_settings` has every entry's."""
    groups: dict[str, dict] = {}
    for name, row in rows.items():
        for choice in row.get("choices", ()):
            group = groups.setdefault(f"{choice['method']}: {choice['setting']}",
                                      {"setting": choice["setting"], "points": []})  # fmt: skip
            group["points"].append(_point(name, row, choice["value"]))
    groups = {key: group for key, group in groups.items() if len(group["points"]) >= 2}
    for group in groups.values():
        _name_other_differences(group, run_settings or {})
    return groups


def _name_other_differences(group: dict, run_settings: dict[str, dict]) -> None:
    """Sets each point's `others` (setting: value) to the settings besides the compared one
    whose values differ between the group's entries."""
    settings = [run_settings.get(p["entry"]) for p in group["points"]]
    if not all(settings):
        return
    keys = sorted({k for s in settings for k in s} - RUNTIME_SETTINGS - {group["setting"]})
    differing = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    for point, run in zip(group["points"], settings, strict=True):
        point["others"] = {k: run.get(k) for k in differing}


TRADEOFF_COLUMNS = (("accuracy", "test accuracy ↑"), ("natural_fpr95", "natural FPR95 ↓"),
                    ("in_out_auroc", "In+Out AUROC ↑"))  # fmt: skip


def _setting_text(name: str, value) -> str:
    """A run setting as a table cell: radii and step sizes in /255, lists comma-joined."""
    if name in ("epsilon", "attack_step_size") and isinstance(value, (int, float)):
        return f"{name} {value * 255:.4g}/255"
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"


def _points_table(title: str, setting: str, points: list[dict]) -> list[str]:
    columns = [*TRADEOFF_COLUMNS, ("train_seconds", "train s")]
    others = any(p.get("others") for p in points)  # a column only where entries differ more
    titles = [*(t for _, t in columns), *(["also differs in"] if others else [])]
    lines = ["", title, "", f"| {setting} | entry | " + " | ".join(titles) + " |",
             "|---|---|" + "---|" * len(titles)]  # fmt: skip
    for point in points:
        cells = ["–" if point[k] is None else f"{point[k]:.2f}" for k, _ in TRADEOFF_COLUMNS]
        cells.append(_duration(point["train_seconds"], point["train_lower_bound"], 1))
        if others:
            cells.append(", ".join(_setting_text(k, v) for k, v in point["others"].items()))
        value = point["value"]
        value = f"{value:g}" if isinstance(value, (int, float)) else str(value)
        lines.append(f"| {value} | {point['entry']} | " + " | ".join(cells) + " |")
    return lines


def tradeoff_markdown(table: dict) -> list[str]:
    """One table per strength sweep, and per comparison of a categorical setting: what each
    setting buys and costs."""
    lines = []
    for method, sweep in table.get("tradeoffs", {}).items():
        lines += _points_table(f"Trade-off over {method}'s {sweep['setting']} (In+Out: the "
                               "end-to-end attack, all OOD sets):", sweep["setting"],
                               sweep["points"])  # fmt: skip
    for key, group in table.get("comparisons", {}).items():
        lines += _points_table(f"Comparison of {key} (In+Out: the end-to-end attack, all OOD "
                               "sets):", group["setting"], group["points"])  # fmt: skip
    return lines


def tradeoff_panels(table: dict) -> list[tuple[str, str, list[dict]]]:
    """(title, setting, points in order of value) per strength sweep, and per comparison
    whose values are all numbers (e.g. --init_share): what `tradeoff.png` draws."""
    panels = [(method, sweep["setting"], sweep["points"])
              for method, sweep in table.get("tradeoffs", {}).items()]  # fmt: skip
    for key, group in table.get("comparisons", {}).items():
        values = [p["value"] for p in group["points"]]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            panels.append(
                (key, group["setting"], sorted(group["points"], key=lambda p: p["value"]))
            )
    return panels


def plot_tradeoffs(table: dict, path: str) -> None:
    """A panel per `tradeoff_panels` entry: test accuracy, natural FPR95 and In+Out AUROC
    against the setting's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = tradeoff_panels(table)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, setting, points) in zip(axes[0], panels, strict=True):
        values = [p["value"] for p in points]
        for key, label in TRADEOFF_COLUMNS:
            drawn = [(v, p[key]) for v, p in zip(values, points, strict=True)
                     if p[key] is not None]  # fmt: skip
            if drawn:
                ax.plot(*zip(*drawn, strict=True), marker="o", label=label)
        if min(values) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel(setting)
        ax.set_ylabel("%")
        ax.set_ylim(0, 105)
        ax.set_title(f"{table['dataset']}: {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mean_fpr95(row: dict, threats: list[str]) -> float | None:
    """FPR95 averaged over the threat models (the criterion for choosing q, Appendix B.7)."""
    if not all(t in row for t in threats):
        return None
    return sum(row[t]["fpr95"] for t in threats) / len(threats)


def _cell(metrics: dict | None) -> str:
    return "–" if metrics is None else f"{metrics['fpr95']:.2f} / {metrics['auroc']:.2f}"


def _duration(seconds: float | None, lower_bound: bool = False, unit: float = 60) -> str:
    """Seconds (unit 1) or minutes (60), '≥ ' for a lower bound (a resumed run whose first
    epochs were trained before epochs were timed)."""
    if seconds is None:
        return "–"
    return ("≥ " if lower_bound else "") + f"{seconds / unit:.{0 if unit == 1 else 1}f}"


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
            f"{row['end_to_end_accuracy']:.2f} | "
            f"{_duration(s.get('train'), s.get('train_lower_bound', False))} | "
            f"{_duration(s.get('evaluate'))} |"
        )
    lines += end_to_end_markdown(table)
    lines += tradeoff_markdown(table)
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
        if tradeoff_panels(table):
            plot_tradeoffs(table, os.path.join(results_dir, "tradeoff.png"))
