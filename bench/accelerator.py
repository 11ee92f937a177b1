#!/usr/bin/env python
"""One script for a lent GPU or TPU (about 5 minutes): how fast the full protocol would run.

Measures, in one run on whatever device TensorFlow sees: the DenseNet-BC-100 ATOM training
step (64 + 128 images, PGD-5 on 64 outliers) with XLA on and off in each precision
(float32, mixed_bfloat16, mixed_float16), the mining scoring rate and the L∞ PGD-40 attack
rate in the fastest configuration, then extrapolates the wall time of the full CIFAR-10
protocol (docs/protocol.md §2-5): 100 epochs of 782 steps with N = 400,000 candidates scored per
epoch, and the four-threat evaluation of the six OOD test sets (54,565 images: each attacked
twice with PGD-40 (L∞, compositional) and scored 1 + 95 times (natural, corruption search)).
The corruption synthesis runs on the CPU and is timed by bench/corruptions.py, not here.

    python bench/accelerator.py            # on the accelerator
    python bench/accelerator.py --quick    # a check that it runs (small_cnn, 1 step)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import app, flags

from bench.timing import linf_attack_rate, scoring_rate, train_step_seconds

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Tiny settings (small_cnn, 1 timed step): checks the script.")
flags.DEFINE_list(
    "precisions", ["float32", "mixed_bfloat16", "mixed_float16"], "Precisions to time."
)

EPOCHS, STEPS_PER_EPOCH, CANDIDATES = 100, 50_000 // 64, 400_000
OOD_TEST_IMAGES = (
    10_000 + 5_640 + 10_000 + 10_000 + 10_000 + 8_925
)  # docs/protocol.md §4's six sets
GOALS = {"train_h": 1.0, "evaluate_min": 15.0}  # on one H200 (issue 10)


def main(argv):
    del argv
    tf.get_logger().setLevel("ERROR")  # every configuration builds a new model: retracing notes
    devices = tf.config.list_logical_devices()
    accelerators = [d.name for d in devices if d.device_type in ("GPU", "TPU")]
    print(f"TensorFlow {tf.__version__}; devices: {', '.join(d.name for d in devices)}")
    if not accelerators:
        print("note: no GPU or TPU visible; the numbers below are for the CPU")
    model = "small_cnn" if FLAGS.quick else "densenet_bc_100"
    steps, score_images, batches = (1, 512, 1) if FLAGS.quick else (5, 16_384, 3)
    best = None
    for precision in FLAGS.precisions:
        times = {}
        for jit in (True, False):
            times[jit] = train_step_seconds(model, "atom", jit, steps, precision)
            print(f"ATOM step, {model}, {precision}, XLA {'on ' if jit else 'off'}: "
                  f"{times[jit] * 1e3:.1f} ms ({192 / times[jit]:.0f} images/s)", flush=True)  # fmt: skip
        print(f"  XLA off / on time ratio: {times[False] / times[True]:.2f} (> 1: XLA faster)")
        for jit, seconds in times.items():
            if best is None or seconds < best[2]:
                best = (precision, jit, seconds)
    precision, jit, step = best
    print(f"fastest: {precision}, XLA {'on' if jit else 'off'}, {step * 1e3:.1f} ms per step")
    score = scoring_rate(model, score_images, jit, precision)
    attack = linf_attack_rate(model, jit, 256, batches, 40, precision)
    print(f"mining scoring: {score:,.0f} images/s; L-inf PGD-40: {attack:,.0f} images/s")
    train_h = EPOCHS * (STEPS_PER_EPOCH * step + CANDIDATES / score) / 3600
    evaluate_min = OOD_TEST_IMAGES * (2 / attack + 96 / score) / 60
    print(f"extrapolated full protocol: ATOM training {train_h:.2f} h (goal < {GOALS['train_h']:g} h), "
          f"four-threat evaluation {evaluate_min:.1f} min (goal < {GOALS['evaluate_min']:g} min)")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
