#!/usr/bin/env python
"""The paper's Gaussian model (Section 3, Appendix A.2): prints three tables, writes a plot.

python bin/theory.py --output_dir=runs/theory
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("d", 4500, "Dimension d (eq. 15 wants d >= n0/eps^4 + n0 log^2 d).")
flags.DEFINE_integer("n0", 1, "n0 of the parameter family (sigma^2 = sqrt(d n0)).")
flags.DEFINE_float("epsilon", 0.125, "L-inf perturbation size.")
flags.DEFINE_float("nu_ratio", 0.25, "nu / ||mu||_2 (the family allows <= 1/4).")
flags.DEFINE_integer(
    "n_in", 1000, "In-distribution samples for Proposition 1 and the window sweep."
)
flags.DEFINE_integer(
    "n_aux", 1000, "Auxiliary samples from U_mix (n' = n: the naive limit is -7/4 mu)."
)
flags.DEFINE_list(
    "sizes",
    ["1", "2", "4", "8", "16", "32", "64", "128", "256"],
    "In-distribution sample sizes for Propositions 3 vs 4.",
)
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (instances and samples).")
flags.DEFINE_string("output_dir", "runs/theory", "Where theory.json and theory.png go.")


def main(argv: list[str]) -> None:
    from atom_tf.errors import InvalidConfigError
    from atom_tf.theory.experiments import (
        TheorySettings,
        naive_vs_mining,
        sample_complexity,
        window_sweep,
    )
    from atom_tf.theory.report import format_tables, plot

    try:
        sizes = tuple(int(v) for v in FLAGS.sizes)
        seeds = tuple(int(v) for v in FLAGS.seeds)
    except ValueError as err:
        raise InvalidConfigError(f"--sizes and --seeds take integers ({err})") from err
    if FLAGS.d < 2 or min(sizes) < 1 or FLAGS.n_in < 1 or FLAGS.n_aux < 2 or not seeds:
        raise InvalidConfigError(
            "--d >= 2, --sizes >= 1, --n_in >= 1, --n_aux >= 2 and a seed are needed"
        )
    s = TheorySettings(
        FLAGS.d, FLAGS.n0, FLAGS.epsilon, FLAGS.nu_ratio, FLAGS.n_in, FLAGS.n_aux, sizes, seeds
    )
    results = {
        "settings": {
            **s.__dict__,
            "sigma": (s.d * s.n0) ** 0.25,
            "eq15_requirement": s.family_condition()[0],
        },
        "sample_complexity": sample_complexity(s),
        "naive_vs_mining": naive_vs_mining(s),
        "window_sweep": window_sweep(s),
    }
    print(format_tables(results, s))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "theory.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    plot(results, os.path.join(FLAGS.output_dir, "theory.png"))
    print(f"wrote {FLAGS.output_dir}/theory.json and theory.png")


if __name__ == "__main__":
    cli.run_main(main)
