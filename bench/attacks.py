#!/usr/bin/env python
"""Images per second of the L∞ attacks (PGD, APGD, Square) against a (K+1)-way network, with
XLA on and off, printed with their ratios to PGD measured in this one run (the machines are
noisy: only ratios from one run compare).

PGD and APGD run `--steps` iterations (a forward and a backward pass each); Square runs
`--queries` forward passes, so its ratio says what a query budget costs in PGD steps.
`forward` is `--queries` bare forward passes of the batch: Square / forward is what Square's
own work (windows, random draws, keeping the better images) adds to its queries.

    python bench/attacks.py --models=small_cnn_32,densenet_bc_100 --batch=128
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["small_cnn_32", "densenet_bc_100"], "Architectures.")
flags.DEFINE_integer("batch", 128, "Images per attack batch.")
flags.DEFINE_integer("steps", 40, "PGD and APGD iterations.")
flags.DEFINE_integer("queries", 1000, "Square queries.")
flags.DEFINE_list("xla", ["false", "true"], "XLA settings to measure.")
flags.DEFINE_integer("repeats", 2, "Timed repeats of each measurement (the best is kept).")


def repeated_forward(logits_fn, images, passes: int):
    """`passes` forward passes of `images`, each moved by a negligible amount so that none is
    hoisted out of the loop; returns the images."""
    import tensorflow as tf

    def body(i, total):
        moved = images + tf.cast(i, tf.float32) * 1e-7
        return i + 1, total + tf.reduce_sum(logits_fn(moved))

    _, total = tf.while_loop(lambda i, _: i < passes, body, (tf.constant(0), tf.constant(0.0)))
    return images + 0.0 * total


def attacks_for(network, eps: float, seed) -> dict:
    """{name: images -> adversarial images} of each attack against `network`."""
    from atom_tf.attacks.apgd import apgd_attack
    from atom_tf.attacks.objectives import kplus1_ce
    from atom_tf.attacks.pgd import pgd_attack
    from atom_tf.attacks.square import square_attack

    def logits(x):
        return network(x, training=False)

    return {
        "pgd": lambda x: pgd_attack(logits, x, kplus1_ce, epsilon=eps, steps=FLAGS.steps,
                                    step_size=eps / 8, seed=seed)[0],
        "apgd": lambda x: apgd_attack(logits, x, kplus1_ce, epsilon=eps, steps=FLAGS.steps,
                                      seed=seed)[0],
        "square": lambda x: square_attack(logits, x, kplus1_ce, epsilon=eps,
                                          queries=FLAGS.queries, seed=seed)[0],
        "forward": lambda x: repeated_forward(logits, x, FLAGS.queries),
    }  # fmt: skip


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from atom_tf.cpu import onednn_state
    from atom_tf.models import build_model
    from bench.timing import best_seconds

    images = tf.constant(np.random.default_rng(0).random((FLAGS.batch, 32, 32, 3)), tf.float32)
    seed = tf.constant([0, 1], tf.int64)
    eps = 8 / 255
    print(f"batch {FLAGS.batch}, {FLAGS.steps} steps, {FLAGS.queries} queries, "
          f"best of {FLAGS.repeats}; {onednn_state()}")  # fmt: skip
    for name in FLAGS.models:
        network = build_model(name, 11)
        attacks = attacks_for(network, eps, seed)
        for xla in FLAGS.xla:
            rates = {}
            for attack, fn in attacks.items():
                compiled = tf.function(fn, jit_compile=xla == "true")
                seconds = best_seconds(lambda c=compiled: c(images).numpy(), FLAGS.repeats)
                rates[attack] = FLAGS.batch / seconds
            line = ", ".join(f"{a} {r:.1f} img/s ({r / rates['pgd']:.2f}x pgd)"
                             for a, r in rates.items())  # fmt: skip
            print(f"{name}, XLA {xla}: {line}; Square / {FLAGS.queries} bare forward passes "
                  f"= {rates['forward'] / rates['square']:.2f}x the time", flush=True)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
