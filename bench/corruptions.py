#!/usr/bin/env python
"""Worst-case corruption search speed (corrupting + scoring every variant), measured in one run:
this engine (batched, `atom_tf.evaluation.corruption_threats.worst_corruptions`) against a per-image loop
over `imagecorruptions.corrupt` (through atom_tf's compatibility layer) on the same images,
both scored by the same network (the embedded demo's small_cnn, untrained: speed does not
depend on the weights) with the `kplus1` scorer.

Both use the ImageNet-C constants (the reference knows no others), 19 × 5 = 95 variants + clean.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app, flags

from atom_tf.batching import map_batches
from atom_tf.corruptions.reference import reference_corrupt
from atom_tf.data import load_pool
from atom_tf.evaluation.corruption_threats import variant_names, worst_corruptions
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import AttackSettings, ThreatContext
from atom_tf.models import build_model

FLAGS = flags.FLAGS
flags.DEFINE_integer("engine_images", 256, "Images searched with the engine (one batch).")
flags.DEFINE_integer("reference_images", 16, "Images searched with the per-image reference loop.")
flags.DEFINE_string("model", "small_cnn", "Scoring network.")


def make_scorer(network, batch_size: int):
    scorer = get_scorer("kplus1")
    score = tf.function(lambda x: scorer.score(lambda z: network(z, training=False), x, 10))
    return lambda images: map_batches(
        lambda b, _: score(tf.constant(b)).numpy(), images, batch_size
    )


def reference_search(images_uint8: np.ndarray, score_fn) -> np.ndarray:
    """Per image: the 95 reference variants, scored together with the clean image."""
    names = [v.split("@") for v in variant_names("all")]
    best = []
    for image in images_uint8:
        variants = [image] + [reference_corrupt(image, n, int(s)) for n, s in names]
        stack = np.stack(variants).astype(np.float32) / 255
        best.append(stack[np.argmax(score_fn(stack))])
    return np.stack(best)


def main(argv):
    del argv
    network = build_model(FLAGS.model, 11)
    pool = load_pool("natural_patches", seed=0)
    images = pool.read(0, max(FLAGS.engine_images, FLAGS.reference_images))
    floats = images.astype(np.float32) / 255
    engine_score = make_scorer(network, FLAGS.engine_images)
    reference_score = make_scorer(network, 96)
    engine_score(floats[: FLAGS.engine_images])
    reference_score(floats[:96] if len(floats) >= 96 else np.resize(floats, (96, 32, 32, 3)))
    ctx = ThreatContext(None, get_scorer("kplus1"), 10, AttackSettings(corruption_table="imagenet"), engine_score,
                        batch_size=FLAGS.engine_images, verbose=False)  # fmt: skip
    np.random.seed(0)
    print(
        f"{FLAGS.model} scoring, 95 variants + clean per image, ImageNet-C constants, {os.cpu_count()} CPU cores"
    )
    start = time.perf_counter()
    worst_corruptions(floats[: FLAGS.engine_images], ctx, 0)
    engine_rate = FLAGS.engine_images / (time.perf_counter() - start)
    print(
        f"atom_tf engine (batch of {FLAGS.engine_images}): {engine_rate:.2f} images/s", flush=True
    )
    start = time.perf_counter()
    reference_search(images[: FLAGS.reference_images], reference_score)
    reference_rate = FLAGS.reference_images / (time.perf_counter() - start)
    print(f"per-image imagecorruptions loop: {reference_rate:.2f} images/s")
    print(f"speed-up: {engine_rate / reference_rate:.1f}x (target >= 20x)")
    # where the time goes: corrupting alone
    ctx_free = ThreatContext(
        None, ctx.scorer, 10, ctx.attack, lambda b: np.zeros(len(b)), verbose=False
    )
    start = time.perf_counter()
    worst_corruptions(floats[: FLAGS.engine_images], ctx_free, 0)
    corrupt_rate = FLAGS.engine_images / (time.perf_counter() - start)
    start = time.perf_counter()
    engine_score(np.resize(floats, (96 * 64, 32, 32, 3)))
    score_rate = 96 * 64 / (time.perf_counter() - start) / 96
    print(
        f"  engine corrupting alone: {corrupt_rate:.1f} images/s; scoring 96 variants alone: {score_rate:.1f} images/s"
    )
    # both searches score the same 96 variants per image: no engine can beat this ratio
    print(
        f"  bound on the speed-up with this scorer (reference loop time / scoring time alone): "
        f"{score_rate / reference_rate:.1f}x"
    )


if __name__ == "__main__":
    app.run(main)
