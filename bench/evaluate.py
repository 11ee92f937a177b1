#!/usr/bin/env python
"""L∞ attack rate for evaluation (OOD images per second, 40 PGD steps, 1 restart) with and
without XLA, measured in one run, on an untrained network of the given architecture (the rate
does not depend on the weights)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import app, flags

from bench.timing import linf_attack_rate

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture.")
flags.DEFINE_integer("batch_size", 32, "Images per attack batch.")
flags.DEFINE_integer("batches", 2, "Timed batches per configuration (after one warm-up batch).")
flags.DEFINE_integer("steps", 40, "PGD steps.")


def rate(jit: bool) -> float:
    return linf_attack_rate(FLAGS.model, jit, FLAGS.batch_size, FLAGS.batches, FLAGS.steps)


def main(argv):
    del argv
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, {FLAGS.model}, {FLAGS.steps}-step PGD, "
          f"batches of {FLAGS.batch_size}")  # fmt: skip
    eager = rate(False)
    print(f"L-inf attack, XLA off: {eager:.2f} OOD images/s", flush=True)
    xla = rate(True)
    print(f"L-inf attack, XLA on : {xla:.2f} OOD images/s")
    print(f"XLA on / XLA off rate ratio = {xla / eager:.2f} (> 1 means XLA is faster)")


if __name__ == "__main__":
    app.run(main)
