#!/usr/bin/env python
"""Evaluates a trained detector under natural and attacked OOD inputs; resumable.

  python bin/evaluate.py --checkpoint=runs/digits_atom
  python bin/evaluate.py --checkpoint=runs/cifar10_atom --attack_steps=100 --attack_restarts=5

The in-distribution set, model and method come from the run's saved configuration (override
with --dataset/--model/--method). Writes results.json, results.csv, results.md, PNG plots and
per-(set, threat) scores to --results_dir (default: <run>/eval_<scorer>).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

cli.import_tensorflow_quietly()  # the settings' help lists the registries' names

from atom_tf.data.ood_sets import OOD_SETS  # noqa: E402
from atom_tf.evaluation.runner import EvalSettings  # noqa: E402
from atom_tf.evaluation.scorers import SCORERS, get_scorer  # noqa: E402
from atom_tf.evaluation.threats import AttackSettings  # noqa: E402
from atom_tf.settings import settings_of  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint", "", "Training run directory to evaluate, or pretrained:NAME (a shipped detector)."
)
flags.DEFINE_string("output_dir", "", "Alias of --checkpoint (the --output_dir of a training run).")
flags.DEFINE_string("results_dir", "", "Where results go (default: <run>/eval_<scorer>).")
flags.DEFINE_list(
    "ood_sets",
    [],
    f"OOD test sets: {OOD_SETS.choices()} (default: the embedded sets for digits, else the six "
    "standard sets of Table 1).",
)
cli.define_flags(settings_of(EvalSettings))
cli.define_flags(settings_of(AttackSettings))
cli.define_flags(o for name in SCORERS.names() for o in get_scorer(name).options)
flags.DEFINE_bool(
    "jit_compile", None, "XLA for the attacks (default: on with a GPU/TPU, off on CPU)."
)
flags.DEFINE_string("data_dir", "", "tfds data directory.")
flags.DEFINE_string(
    "ood_dir", "", "Folder holding places365/, LSUN/, LSUN_resize/, iSUN/ (default data/ood)."
)
flags.DEFINE_string("dataset", "", "Override the run's in-distribution dataset.")
flags.DEFINE_string("model", "", "Override the run's model.")
flags.DEFINE_string("method", "", "Override the run's method.")
flags.DEFINE_bool(
    "overwrite", False, "Discard results in --results_dir computed with other settings."
)
flags.DEFINE_bool("plots", True, "Write PNG plots.")
cli.define_distribution_flags()


def scorer_options(scorer: str) -> dict:
    """The options the scorer declares, from their flags."""
    return get_scorer(scorer).option_values(cli.flag_values(get_scorer(scorer).options))


def main(argv: list[str]) -> None:
    from atom_tf.data.ood_sets import EMBEDDED_SETS, STANDARD_SETS
    from atom_tf.distribution import describe_strategy, is_chief
    from atom_tf.errors import InvalidConfigError
    from atom_tf.evaluation.reports import markdown_table, write_reports
    from atom_tf.evaluation.runner import evaluate
    from atom_tf.files import is_writable
    from atom_tf.pretrained import resolve_run
    from atom_tf.training.methods import method_for
    from atom_tf.training.trainer import read_run_config, resolve_jit_compile

    run_dir = FLAGS.checkpoint or FLAGS.output_dir
    if not run_dir:
        raise InvalidConfigError("pass --checkpoint=RUN_DIR (the --output_dir of a training run)")
    run_dir = resolve_run(run_dir)  # pretrained:NAME: its copy in the cache
    overrides = {k: FLAGS[k].value for k in ("dataset", "model", "method") if FLAGS[k].value}
    config = {**read_run_config(run_dir), **overrides}
    default_sets = EMBEDDED_SETS if config["dataset"] == "digits" else STANDARD_SETS[
        "other" if config["dataset"] == "svhn" else "svhn"]  # fmt: skip
    given = cli.flag_values(settings_of(EvalSettings))
    scorer = given.pop("scorer") or method_for(config).scorer
    settings = EvalSettings(
        ood_sets=tuple(FLAGS.ood_sets or default_sets),
        scorer=scorer,
        scorer_options=scorer_options(scorer),
        attack=AttackSettings(**cli.flag_values(settings_of(AttackSettings))),
        jit_compile=resolve_jit_compile(FLAGS.jit_compile),
        **given,
    )
    results_dir = FLAGS.results_dir or os.path.join(run_dir, f"eval_{scorer}")
    strategy = cli.strategy_from_flags()
    if strategy.num_replicas_in_sync > 1:
        print(describe_strategy(strategy, {"--batch_size": FLAGS.batch_size}), flush=True)
    results = evaluate(run_dir, results_dir, settings, FLAGS.overwrite, FLAGS.data_dir or None,
                       FLAGS.ood_dir or None, overrides, strategy=strategy)  # fmt: skip
    if not is_chief(strategy):
        return
    log_dir = os.path.join(run_dir, "logs", "eval")
    if not is_writable(log_dir):  # a read-only run
        log_dir = os.path.join(results_dir, "logs")
    write_reports(results, results_dir, log_dir, plots=FLAGS.plots)
    print()
    print(markdown_table(results))
    print(f"results in {results_dir}")


if __name__ == "__main__":
    cli.run_main(main)
