"""Runs a reproduction suite stage by stage as subprocesses (the commands a user would type),
so that every stage resumes on its own and a failure in one leaves the others' work intact."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time

from atom_tf.data.image_files import source_label
from atom_tf.errors import UserError
from atom_tf.files import atomic_write_json, read_json
from atom_tf.reproduce.suite import SuiteEntry
from atom_tf.reproduce.suite_report import combine, write_suite_reports
from atom_tf.training.checkpoint import read_summary, recorded_weights_sha256

EVAL_DIR = "eval_suite"


def results_dir(runs_dir: str, entry: SuiteEntry) -> str:
    """An entry's evaluation folder (one per entry, also when entries share a run)."""
    name = EVAL_DIR if entry.run_name == entry.name else f"{EVAL_DIR}_{entry.name}"
    return os.path.join(runs_dir, entry.run_name, name)


def stage_commands(
    entry: SuiteEntry, train_flagfile: str, eval_flagfile: str, runs_dir: str, bin_dir: str,
    entry_flags_dir: str = "",
) -> dict[str, list[str]]:  # fmt: skip
    """The training and evaluation command lines of an entry. The training reads the suite's
    flagfile, the entry's flags, then `<entry_flags_dir>/<run>.flags` (or the file the entry
    names) if that file exists (the entry's batch sizes, schedule or pool sample for this
    suite's dataset), then the entry's final flags (what no such file may change)."""
    run_dir = os.path.join(runs_dir, entry.run_name)
    train = [sys.executable, os.path.join(bin_dir, "train.py")]
    train += [f"--flagfile={train_flagfile}"] if train_flagfile else []
    train += [flag.replace("{runs_dir}", runs_dir) for flag in entry.train_flags]
    own = os.path.join(entry_flags_dir, f"{entry.flags_file_name}.flags") if entry_flags_dir else ""
    train += [f"--flagfile={own}"] if own and os.path.isfile(own) else []
    train += [flag.replace("{runs_dir}", runs_dir) for flag in entry.final_flags]
    train += [f"--output_dir={run_dir}"]
    evaluate = [sys.executable, os.path.join(bin_dir, "evaluate.py")]
    evaluate += [f"--flagfile={eval_flagfile}"] if eval_flagfile else []
    evaluate += [*entry.eval_flags, f"--checkpoint={run_dir}",
                 f"--results_dir={results_dir(runs_dir, entry)}"]  # fmt: skip
    return {"train": train, "evaluate": evaluate}


class Timings:
    """Wall seconds per (entry, stage), summed over invocations, kept in timings.json."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.values: dict[str, dict[str, float]] = {}
        if os.path.exists(path):
            values = read_json(path, hint="delete it (only the timing column is lost)")
            self.values = values if isinstance(values, dict) else {}

    def add(self, entry: str, stage: str, seconds: float) -> None:
        per = self.values.setdefault(entry, {})
        per[stage] = per.get(stage, 0.0) + seconds
        atomic_write_json(self.path, self.values)


def run_train_seconds(runs_dir: str, entry: SuiteEntry, timings: Timings) -> dict:
    """{'train': seconds} of an entry's run as its summary records them (every epoch, those of
    killed and resumed processes included, which the suite's own timer misses), with
    'train_lower_bound' where the run does not know them all; the suite's timer for runs
    without them."""
    summary = read_summary(os.path.join(runs_dir, entry.run_name)) or {}
    if not isinstance(summary.get("train_seconds"), (int, float)):
        train = timings.values.get(entry.run_name, {}).get("train")
        return {"train": train} if train else {}
    partial = summary.get("resumed_from_epoch") and not summary.get("train_seconds_complete")
    return {"train": summary["train_seconds"], **({"train_lower_bound": True} if partial else {})}


def run_settings(runs_dir: str, entry: SuiteEntry) -> dict:
    """The settings a run trained with (their defaults where config.json omits them)."""
    from atom_tf.training.trainer import TrainConfig, read_run_config

    return TrainConfig.from_json(read_run_config(os.path.join(runs_dir, entry.run_name))).record()


def finished_evaluation(path: str, runs_dir: str, entry: SuiteEntry) -> dict:
    """An entry's results.json, refused when the run's weights changed after it was written
    (a run trained further, or retrained, since its evaluation)."""
    hint = "run the suite again to re-evaluate it"
    results = read_json(path, hint=hint)
    if not isinstance(results, dict) or not isinstance(results.get("ood"), dict):
        raise UserError(f"{path} holds no evaluation results; {hint}")
    evaluated = (results.get("run") or {}).get("weights_sha256")
    current = recorded_weights_sha256(os.path.join(runs_dir, entry.run_name))
    if evaluated and current and evaluated != current:
        raise UserError(
            f"{entry.name}: {path} was computed from other weights than the run holds now "
            f"(trained further or retrained since); {hint}"
        )
    return results


def run_suite(
    entries: list[SuiteEntry],
    train_flagfile: str,
    eval_flagfile: str,
    runs_dir: str,
    bin_dir: str,
    dry_run: bool = False,
    tabulate_only: bool = False,
    plots: bool = True,
    chief: bool = True,
    entry_flags_dir: str = "",
) -> dict | None:
    """Trains and evaluates every entry (resuming), then writes the combined table (the chief
    only, when every worker of a cluster runs the suite). `tabulate_only` runs nothing: the
    table of the entries' finished evaluations."""
    os.makedirs(runs_dir, exist_ok=True)
    timings = Timings(os.path.join(runs_dir, "timings.json"))
    for number, entry in enumerate([] if tabulate_only else entries, 1):
        commands = stage_commands(
            entry, train_flagfile, eval_flagfile, runs_dir, bin_dir, entry_flags_dir
        )
        # The training is timed per run (entries sharing one share its time), the evaluation
        # per entry; a stage whose result existed before it ran did no work and adds no time.
        done = {
            "train": os.path.join(runs_dir, entry.run_name, "summary.json"),
            "evaluate": os.path.join(results_dir(runs_dir, entry), "results.json"),
        }
        keys = {"train": entry.run_name, "evaluate": entry.name}
        for stage, command in commands.items():
            print(
                f"[{number}/{len(entries)}] {entry.name} {stage}: {shlex.join(command)}", flush=True
            )
            if dry_run:
                continue
            finished_before = os.path.exists(done[stage])
            start = time.perf_counter()
            code = subprocess.call(command)
            if chief and code in (0, 2) and not finished_before:  # user errors cost time too
                timings.add(keys[stage], stage, time.perf_counter() - start)
            if code != 0:
                raise UserError(
                    f"{entry.name} {stage} failed (exit {code}); fix what it says and run the "
                    "same command again: finished stages are kept"
                )
    if dry_run or not chief:
        return None
    evaluations, seconds = {}, {}
    for entry in entries:
        path = os.path.join(results_dir(runs_dir, entry), "results.json")
        if not os.path.exists(path):
            raise UserError(f"{entry.name} has no finished evaluation ({path}); run the suite")
        evaluations[entry.name] = finished_evaluation(path, runs_dir, entry)
        evaluate = timings.values.get(entry.name, {}).get("evaluate")
        seconds[entry.name] = {
            **run_train_seconds(runs_dir, entry, timings),
            **({"evaluate": evaluate} if evaluate else {}),
        }
    dataset = source_label(next(iter(evaluations.values()))["dataset"])
    strengths = {e.name: dataclasses.asdict(e.strength) for e in entries if e.strength}
    compared = {e.name: run_settings(runs_dir, e) for e in entries if e.choices}
    choices = {e.name: [{**dataclasses.asdict(c), "value": compared[e.name][c.setting]}
                        for c in e.choices] for e in entries if e.choices}  # fmt: skip
    table = combine(evaluations, seconds, dataset, strengths, choices, compared)
    write_suite_reports(table, runs_dir, plots=plots)
    with open(os.path.join(runs_dir, "results.md")) as f:
        print(f"\n{f.read()}results in {runs_dir}")
    return table
