#!/usr/bin/env python
"""The attacks' input gradients with and without the batch norms' scale folded into the next
convolution (atom_tf/models/layers.py, `input_gradients_only`), alternating in one process.

Prints, for the same weights: how far the two input gradients are apart (relative to the
largest entry) and how many of their signs agree; then the ATOM training step (64 + 128
images, PGD-5 on 64 outliers, XLA off) and the evaluation's L∞ PGD-40 (one batch) timed with
the fold off and on in alternating rounds, their medians and ratios (> 1: the fold is faster).

    python bench/scale_folding.py [--model=densenet_bc_100] [--rounds=3] [--steps=2]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from atom_tf.models.layers import Conv2D, FusedBatchNorm, input_gradients_only
from bench.timing import fit_step_seconds, linf_attack, train_step_model

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture (atom_tf.models).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds (off, on).")
flags.DEFINE_integer("steps", 2, "Timed training steps per round and setting.")
flags.DEFINE_integer("attack_batch", 64, "Images of the PGD-40 timing.")


def unfold(network: keras.Model) -> None:
    """Undoes `link_scale_folds`: the batch norms' scale is applied as its own pass again."""
    for layer in network.layers:
        if isinstance(layer, Conv2D):
            layer._folded_norm = None
        if isinstance(layer, FusedBatchNorm):
            layer._folds = False


def input_gradient(network: keras.Model, images: tf.Tensor) -> tf.Tensor:
    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape, input_gradients_only():
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.log_softmax(network(x, training=False))[:, -1])
        return tape.gradient(loss, x)

    return gradient(images)


def main(argv):
    del argv
    from atom_tf.cpu import onednn_state

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; {onednn_state()}")
    variants = {}
    for name in ("off", "on"):
        trainer, data = train_step_model(FLAGS.model, "atom", jit=False)
        if name == "off":
            unfold(trainer.network)
        variants[name] = trainer, data
    weights = variants["off"][0].network.get_weights()
    variants["on"][0].network.set_weights(weights)
    rng = np.random.default_rng(0)
    images = rng.random((FLAGS.attack_batch, 32, 32, 3), np.float32)
    off, on = (input_gradient(variants[n][0].network, tf.constant(images[:16])) for n in variants)
    print(f"input gradients, fold on against off: largest difference "
          f"{float(tf.reduce_max(tf.abs(on - off)) / tf.reduce_max(tf.abs(off))):.1e} of the "
          f"largest entry; signs equal {float(tf.reduce_mean(tf.cast(tf.sign(on) == tf.sign(off), tf.float32))):.4%}")  # fmt: skip
    attacks = {name: linf_attack(trainer.network, False, len(images))
               for name, (trainer, _) in variants.items()}  # fmt: skip
    for attack in attacks.values():
        attack(images, 0)  # traces
    step_times = {name: [] for name in variants}
    attack_times = {name: [] for name in variants}
    for round_ in range(FLAGS.rounds):
        for name, (trainer, data) in variants.items():
            seconds = fit_step_seconds(trainer, data, FLAGS.steps)
            step_times[name] += seconds
            start = time.perf_counter()
            attacks[name](images, round_ + 1)
            attack_times[name].append(time.perf_counter() - start)
            print(f"round {round_ + 1}, fold {name}: steps "
                  f"{', '.join(f'{t:.2f}' for t in seconds)} s; PGD-40 "
                  f"{attack_times[name][-1]:.2f} s", flush=True)  # fmt: skip
    step = {name: statistics.median(t) for name, t in step_times.items()}
    attack = {name: statistics.median(t) for name, t in attack_times.items()}
    print(f"ATOM step ({FLAGS.model}, XLA off), median: fold off {step['off']:.2f} s, on "
          f"{step['on']:.2f} s: {step['off'] / step['on']:.2f}x")  # fmt: skip
    print(f"PGD-40 on {FLAGS.attack_batch} images, median: fold off {attack['off']:.2f} s, on "
          f"{attack['on']:.2f} s: {attack['off'] / attack['on']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
