"""Runs a reproduction suite stage by stage as subprocesses (the commands a user would type),
so that every stage resumes on its own and a failure in one leaves the others' work intact."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from atom_tf.data.image_files import source_label
from atom_tf.errors import UserError
from atom_tf.evaluation.suite import SuiteEntry
from atom_tf.evaluation.suite_report import combine, write_suite_reports

EVAL_DIR = "eval_suite"


def stage_commands(
    entry: SuiteEntry, train_flagfile: str, eval_flagfile: str, runs_dir: str, bin_dir: str
) -> dict[str, list[str]]:
    run_dir = os.path.join(runs_dir, entry.name)
    train = [sys.executable, os.path.join(bin_dir, "train.py")]
    train += [f"--flagfile={train_flagfile}"] if train_flagfile else []
    train += [*entry.train_flags, f"--output_dir={run_dir}"]
    evaluate = [sys.executable, os.path.join(bin_dir, "evaluate.py")]
    evaluate += [f"--flagfile={eval_flagfile}"] if eval_flagfile else []
    evaluate += [*entry.eval_flags, f"--checkpoint={run_dir}",
                 f"--results_dir={os.path.join(run_dir, EVAL_DIR)}"]  # fmt: skip
    return {"train": train, "evaluate": evaluate}


class Timings:
    """Wall seconds per (entry, stage), summed over invocations, kept in timings.json."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.values: dict[str, dict[str, float]] = {}
        if os.path.exists(path):
            with open(path) as f:
                self.values = json.load(f)

    def add(self, entry: str, stage: str, seconds: float) -> None:
        per = self.values.setdefault(entry, {})
        per[stage] = per.get(stage, 0.0) + seconds
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.values, f, indent=2)
        os.replace(tmp, self.path)


def run_suite(
    entries: list[SuiteEntry],
    train_flagfile: str,
    eval_flagfile: str,
    runs_dir: str,
    bin_dir: str,
    dry_run: bool = False,
    plots: bool = True,
    chief: bool = True,
) -> dict | None:
    """Trains and evaluates every entry (resuming), then writes the combined table (the chief
    only, when every worker of a cluster runs the suite)."""
    os.makedirs(runs_dir, exist_ok=True)
    timings = Timings(os.path.join(runs_dir, "timings.json"))
    for number, entry in enumerate(entries, 1):
        for stage, command in stage_commands(
            entry, train_flagfile, eval_flagfile, runs_dir, bin_dir
        ).items():
            print(
                f"[{number}/{len(entries)}] {entry.name} {stage}: {shlex.join(command)}", flush=True
            )
            if dry_run:
                continue
            start = time.perf_counter()
            code = subprocess.call(command)
            if chief and code in (0, 2):  # a user error costs wall time too
                timings.add(entry.name, stage, time.perf_counter() - start)
            if code != 0:
                raise UserError(
                    f"{entry.name} {stage} failed (exit {code}); fix what it says and run the "
                    "same command again: finished stages are kept"
                )
    if dry_run or not chief:
        return None
    evaluations = {}
    for entry in entries:
        with open(os.path.join(runs_dir, entry.name, EVAL_DIR, "results.json")) as f:
            evaluations[entry.name] = json.load(f)
    dataset = source_label(next(iter(evaluations.values()))["dataset"])
    table = combine(evaluations, timings.values, dataset)
    write_suite_reports(table, runs_dir, plots=plots)
    with open(os.path.join(runs_dir, "results.md")) as f:
        print(f"\n{f.read()}results in {runs_dir}")
    return table
