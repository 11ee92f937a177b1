#!/usr/bin/env python
"""Training-step cost of the methods that attack during training, PGD-5 against FGSM-RS, with
every ratio measured within this one run (docs/protocol.md §12), and what averaging the
weights (--ema_momentum) adds to a step.

Times one step of each method at the CPU suite's batches (128 in-distribution + 64 outliers)
on small_cnn_32 by default, with the training PGD (5 steps, the best iterate kept) and with
FGSM with a random start (one step, the last iterate), and prints seconds, images/s and the
PGD / FGSM-RS ratio per method, and each method's cost relative to NTOM (no attack).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from bench.timing import train_step_seconds

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "small_cnn_32", "Architecture to time.")
flags.DEFINE_integer("steps", 5, "Timed steps per configuration (after one warm-up step).")
flags.DEFINE_integer("in_batch", 128, "In-distribution images per step.")
flags.DEFINE_integer("out_batch", 64, "Outliers per step.")
flags.DEFINE_list("methods", ["atom", "atom_adv", "atom_trades", "aloe", "acet"],
                  "Methods that attack during training.")  # fmt: skip
flags.DEFINE_float("ema_momentum", 0.999, "Weight averaging timed against none on the "
                   "first method's PGD-5 step (0: not timed).")  # fmt: skip


def main(argv):
    del argv
    from atom_tf.cpu import onednn_state

    print(f"{FLAGS.model}, batches {FLAGS.in_batch} + {FLAGS.out_batch}; {onednn_state()}")
    batches = dict(in_batch=FLAGS.in_batch, out_batch=FLAGS.out_batch)
    images = FLAGS.in_batch + FLAGS.out_batch
    base = train_step_seconds(FLAGS.model, "ntom", False, FLAGS.steps, **batches)
    print(f"ntom (no attack): {base:.3f} s, {images / base:.0f} images/s")
    for method in FLAGS.methods:
        times = {kind: train_step_seconds(FLAGS.model, method, False, FLAGS.steps,
                                          train_attack=kind, **batches)
                 for kind in ("pgd", "fgsm_rs")}  # fmt: skip
        pgd, fgsm = times["pgd"], times["fgsm_rs"]
        print(f"{method}: PGD-5 {pgd:.3f} s ({pgd / base:.2f}x ntom), FGSM-RS {fgsm:.3f} s "
              f"({fgsm / base:.2f}x ntom); PGD-5 / FGSM-RS = {pgd / fgsm:.2f}", flush=True)  # fmt: skip
    if FLAGS.ema_momentum and FLAGS.methods:
        method = FLAGS.methods[0]
        times: dict[float, list[float]] = {0.0: [], FLAGS.ema_momentum: []}
        for m in (0.0, FLAGS.ema_momentum, FLAGS.ema_momentum, 0.0):  # alternating, best of 2
            times[m].append(train_step_seconds(FLAGS.model, method, False, FLAGS.steps,
                                               ema_momentum=m, **batches))  # fmt: skip
        plain, averaged = min(times[0.0]), min(times[FLAGS.ema_momentum])
        print(
            f"{method} PGD-5 with weights averaged (EMA {FLAGS.ema_momentum:g}): "
            f"{averaged:.3f} s against {plain:.3f} s without; ratio {averaged / plain:.3f}"
        )


if __name__ == "__main__":
    app.run(main)
