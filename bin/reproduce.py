#!/usr/bin/env python
"""Reproduces a paper-style table: trains every method of a suite, evaluates each under the
threat models, and writes one combined table beside the paper's published rows; resumable.

  python bin/reproduce.py --flagfile=configs/reproduce_cifar10_cpu.flags

Each stage is the command a user would run (printed before it runs): `bin/train.py` with the
suite's training flagfile plus the entry's flags, then `bin/evaluate.py` with the evaluation
flagfile. Both resume, so running the same command again skips finished runs and evaluations
and continues interrupted ones. Writes <runs_dir>/<entry>/ per entry and
<runs_dir>/results.{md,json,csv}, <runs_dir>/fpr95.png and <runs_dir>/timings.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("train_flagfile", "", "Training flags shared by every entry (bin/train.py).")
flags.DEFINE_string(
    "eval_flagfile", "", "Evaluation flags shared by every entry (bin/evaluate.py)."
)
flags.DEFINE_list(
    "suite",
    ["atom", "ntom", "oe"],
    "Entries to run: atom, ntom, oe, msp, odin, mahalanobis, sofl, acet, ccu, rowl, energy, "
    "atom_energy, atom_random, atom_q<q> (ATOM with window quantile q).",
)
flags.DEFINE_string(
    "runs_dir", "runs/suite", "Runs go to <runs_dir>/<entry>; the table to <runs_dir>."
)
flags.DEFINE_multi_string(
    "train_flag",
    [],
    "A training flag added to every entry's (repeatable), e.g. --train_flag=--epochs=3.",
)
flags.DEFINE_string(
    "entry_flags_dir",
    "",
    "Folder of per-entry training flag files (<run>.flags, e.g. sofl.flags: the baselines' "
    "batches and schedules for this suite's dataset), read after the entry's own flags.",
)
flags.DEFINE_bool("dry_run", False, "Print the commands without running them.")
flags.DEFINE_bool(
    "tabulate_only", False, "Run nothing: write the table of the entries' finished evaluations."
)
flags.DEFINE_string(
    "distribution", "", "Passed to every training and evaluation (see bin/train.py --helpfull)."
)
flags.DEFINE_string("tpu", "", "Passed to every training and evaluation with --distribution.")
flags.DEFINE_string("precision", "", "Passed to every training (float32, mixed_bfloat16, ...).")
flags.DEFINE_bool("plots", True, "Write the bar chart (and each evaluation's plots).")
flags.DEFINE_list(
    "pretrained_bases", [], "RUN:NAME,...: entries that fine-tune the suite's run RUN start "
    "from the shipped detector pretrained:NAME instead, e.g. atom:cifar10_cpu_atom,"
    "oe:cifar10_cpu_oe for the CPU suites (their runs, shipped), so RUN need not be trained.",
)  # fmt: skip


def pretrained_bases(items: list[str]) -> dict[str, str]:
    """--pretrained_bases as RUN -> NAME, each NAME a shipped detector."""
    from atom_tf.errors import InvalidConfigError
    from atom_tf.pretrained import pretrained_names

    bases = dict(item.partition(":")[::2] for item in items)
    for run, name in bases.items():
        if not run or name not in pretrained_names():
            raise InvalidConfigError(
                f"--pretrained_bases: {run}:{name} must be RUN:NAME with NAME one of "
                f"{', '.join(pretrained_names())}"
            )
    return bases


def main(argv: list[str]) -> None:
    import dataclasses

    from atom_tf.distribution import is_chief_task
    from atom_tf.errors import InvalidConfigError
    from atom_tf.reproduce.suite import get_suite_entry, with_pretrained_bases
    from atom_tf.reproduce.suite_runner import run_suite

    for path, name in (
        (FLAGS.train_flagfile, "--train_flagfile"),
        (FLAGS.eval_flagfile, "--eval_flagfile"),
    ):
        if path and not os.path.isfile(path):
            raise InvalidConfigError(f"{name}: no file {path}")
    if FLAGS.entry_flags_dir and not os.path.isdir(FLAGS.entry_flags_dir):
        raise InvalidConfigError(f"--entry_flags_dir: no folder {FLAGS.entry_flags_dir}")
    bases = pretrained_bases(FLAGS.pretrained_bases)
    entries = [with_pretrained_bases(get_suite_entry(name), bases) for name in FLAGS.suite]
    both = [f"--{name}={FLAGS[name].value}" for name in ("distribution", "tpu")
            if FLAGS[name].value]  # fmt: skip
    train_only = [f"--precision={FLAGS.precision}"] if FLAGS.precision else []
    entries = [
        dataclasses.replace(
            e,
            train_flags=(*e.train_flags, *FLAGS.train_flag, *both, *train_only),
            eval_flags=(*e.eval_flags, *both),
        )
        for e in entries
    ]
    bin_dir = os.path.dirname(os.path.abspath(__file__))
    run_suite(entries, FLAGS.train_flagfile, FLAGS.eval_flagfile, FLAGS.runs_dir, bin_dir,
              dry_run=FLAGS.dry_run, tabulate_only=FLAGS.tabulate_only, plots=FLAGS.plots,
              chief=is_chief_task(),
              entry_flags_dir=FLAGS.entry_flags_dir)  # fmt: skip


if __name__ == "__main__":
    cli.run_main(main)
