#!/usr/bin/env python
"""Trains an OOD detector (ATOM, NTOM, OE or a baseline); resumable: run it again to continue.

python bin/train.py --flagfile=configs/digits.flags --output_dir=runs/digits_atom
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

cli.import_tensorflow_quietly()  # the settings' help lists the registries' names

from atom_tf.training.trainer import TrainConfig, train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/digits_atom", "Run directory: checkpoints, logs, flags.")
flags.DEFINE_bool("overwrite", False, "Replace a previous run in --output_dir.")
flags.DEFINE_integer("verbose", 1, "0: silent, 1: progress bars, 2: one line per epoch.")
cli.define_flags(TrainConfig.settings())  # every setting of a run, from its declaration
cli.define_distribution_flags()


def main(argv: list[str]) -> None:
    values = cli.flag_values(TrainConfig.settings())
    config = TrainConfig.from_json(values)
    summary = train(
        config,
        FLAGS.output_dir,
        overwrite=FLAGS.overwrite,
        verbose=FLAGS.verbose,
        flags_text=FLAGS.flags_into_string(),
        strategy=cli.strategy_from_flags(),
    )
    print(f"test accuracy {summary['test_accuracy']:.2%}; run in {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run_main(main)
