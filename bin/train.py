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

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/digits_atom", "Run directory: checkpoints, logs, flags.")
flags.DEFINE_bool("overwrite", False, "Replace a previous run in --output_dir.")
flags.DEFINE_string(
    "dataset", "digits", "In-distribution dataset: digits, svhn, cifar10, cifar100."
)
flags.DEFINE_string(
    "model", "small_cnn", "Architecture: small_cnn, densenet_bc_100, wrn_40_4, wrn_40_2."
)
flags.DEFINE_string(
    "method",
    "atom",
    "Training method: atom, ntom, oe, standard, acet, sofl, rowl, energy, atom_energy, ccu.",
)
flags.DEFINE_string(
    "mining",
    "",
    "Outlier selection: window (informative mining), random, or fixed (one random sample for "
    "all epochs); empty = the method's default.",
)
flags.DEFINE_string(
    "pool",
    "natural_patches",
    "Auxiliary outlier pool: natural_patches, tiny_images_300k, tiny_images_80m, imagenet_rc.",
)
flags.DEFINE_string("pool_path", "", "File (or folder, imagenet_rc) of the outlier pool.")
flags.DEFINE_integer("num_candidates", 0, "N, candidates scored per epoch (0: 4 n).")
flags.DEFINE_integer("num_selected", 0, "n, outliers kept per epoch (0: 2 x training set).")
flags.DEFINE_float("quantile", 0.0, "q: the window [qN, qN + n) of ascending OOD scores.")
flags.DEFINE_integer("epochs", 20, "Training epochs.")
flags.DEFINE_float("learning_rate", 0.1, "Initial SGD learning rate.")
flags.DEFINE_list(
    "lr_decay_epochs", ["10", "15", "18"], "Epochs at which the rate is multiplied by --lr_decay."
)
flags.DEFINE_float("lr_decay", 0.1, "Learning-rate factor at each decay epoch.")
flags.DEFINE_float("momentum", 0.9, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay added to every gradient (PyTorch style).")
flags.DEFINE_integer("in_batch", 64, "In-distribution images per step (global).")
flags.DEFINE_integer("out_batch", 128, "Outliers per step (global); half are attacked by ATOM.")
flags.DEFINE_float("epsilon", 8 / 255, "L-inf radius of the training attack.")
flags.DEFINE_integer("attack_steps", 5, "PGD steps of the training attack.")
flags.DEFINE_float("attack_step_size", 2 / 255, "PGD step size of the training attack.")
flags.DEFINE_integer("seed", 1, "Random seed (weights, order, augmentation, attacks, mining).")
flags.DEFINE_string(
    "data_dir", "", "tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
flags.DEFINE_bool(
    "download",
    True,
    "Download what is not on disk: tfds datasets, and pools with a public file "
    "(tiny_images_300k) when --pool_path is empty.",
)
flags.DEFINE_bool(
    "jit_compile",
    None,
    "Compile the train step and scoring with XLA "
    "(default: on with a GPU/TPU, off on CPU where XLA convolutions are slower).",
)
flags.DEFINE_bool(
    "deterministic", False, "TensorFlow op determinism (bit-identical resume on CPU)."
)
flags.DEFINE_integer("verbose", 1, "0: silent, 1: progress bars, 2: one line per epoch.")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras mixed precision (float16 with dynamic loss scaling); logits, objectives, PGD and "
    "scorers stay float32.",
)
flags.DEFINE_string(
    "init_from", "", "Start from this finished run's network (fine-tuning: sofl, energy)."
)
flags.DEFINE_integer("reject_classes", 5, "R, SOFL's reject classes (paper: 10 for CIFAR-100).")
flags.DEFINE_float("margin_in", -23.0, "Energy regulariser margin m_in (energy, atom_energy).")
flags.DEFINE_float("margin_out", -5.0, "Energy regulariser margin m_out (energy, atom_energy).")
flags.DEFINE_float(
    "mixture_learning_rate",
    1e-5,
    "CCU's mixtures' learning rate (decayed with the base schedule).",
)
cli.define_distribution_flags()


def main(argv: list[str]) -> None:
    import dataclasses

    from atom_tf.errors import InvalidConfigError
    from atom_tf.training.trainer import TrainConfig, train

    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
    try:
        values["lr_decay_epochs"] = tuple(int(e) for e in FLAGS.lr_decay_epochs)
    except ValueError as err:
        raise InvalidConfigError(
            f"--lr_decay_epochs must be integers: {FLAGS.lr_decay_epochs}"
        ) from err
    config = TrainConfig(**values)
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
