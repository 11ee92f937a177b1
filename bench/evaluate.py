#!/usr/bin/env python
"""L∞ attack rate for evaluation (OOD images per second, 40 PGD steps, 1 restart) with and
without XLA, measured in one run, on an untrained network of the given architecture (the rate
does not depend on the weights)."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app, flags

from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import AttackSettings, ThreatContext, make_linf_attack
from atom_tf.models import build_model

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture.")
flags.DEFINE_integer("batch_size", 32, "Images per attack batch.")
flags.DEFINE_integer("batches", 2, "Timed batches per configuration (after one warm-up batch).")
flags.DEFINE_integer("steps", 40, "PGD steps.")


def rate(jit: bool) -> float:
    network = build_model(FLAGS.model, 11)
    ctx = ThreatContext(
        logits_fn=lambda x: network(x, training=False), scorer=get_scorer("kplus1"), num_classes=10,
        attack=AttackSettings(steps=FLAGS.steps), score_fn=None, batch_size=FLAGS.batch_size, jit_compile=jit,
    )  # fmt: skip
    attack = make_linf_attack(ctx)
    images = np.random.default_rng(0).random((FLAGS.batch_size, 32, 32, 3), dtype=np.float32)
    attack(images, 0)  # trace and compile
    start = time.perf_counter()
    for index in range(FLAGS.batches):
        attack(images, index + 1)
    return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


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
