#!/usr/bin/env python
"""What exporting a detector costs and how fast each runtime runs it, measured in this run:
per model and format (SavedModel, LiteRT, ONNX) the export's seconds and size, and images/s
of `Detector.score` (Keras) and of each format's own runtime (`tf.saved_model.load`, the
ai-edge-litert interpreter, onnxruntime) on the same images, with the ratio to Keras.

    python bench/export.py --models=small_cnn_32,densenet_bc_100 --images=1024
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["small_cnn_32", "densenet_bc_100"], "Architectures.")
flags.DEFINE_integer("images", 1024, "Images scored per runtime (after a warm-up batch).")
flags.DEFINE_integer("batch_size", 256, "Images per call.")


def rate(fn, images: np.ndarray, batch_size: int) -> float:
    fn(images[:batch_size])  # warm-up (tracing, allocation)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        fn(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # the converters' INFO lines
    from atom_tf.cpu import onednn_state
    from atom_tf.evaluation.detector import Detector
    from atom_tf.evaluation.export import FORMATS, export_detector, runtime
    from atom_tf.evaluation.scorers import get_scorer
    from bench.timing import network

    print(
        f"{os.cpu_count()} CPU cores; {onednn_state()}; {FLAGS.images} images, batch {FLAGS.batch_size}"
    )
    images = np.random.default_rng(0).random((FLAGS.images, 32, 32, 3), dtype=np.float32)
    print("| model | format | export s | size MiB | images/s | vs Keras |")
    print("|---|---|---|---|---|---|")
    for model in FLAGS.models:
        detector = Detector(network(model), 10, get_scorer("kplus1"), threshold=-0.5)
        keras_rate = rate(detector.score, images, FLAGS.batch_size)
        print(f"| {model} | Keras (`Detector.score`) | | | {keras_rate:.0f} | 1.00 |", flush=True)
        for fmt in FORMATS:
            with tempfile.TemporaryDirectory() as tmp:
                record = export_detector(detector, tmp, fmt)
                run = runtime(tmp, record)
                speed = rate(lambda x, run=run: run(x)["score"], images, FLAGS.batch_size)
            print(f"| {model} | {fmt} | {record['seconds']:.1f} | {record['bytes'] / 2**20:.2f} | "
                  f"{speed:.0f} | {speed / keras_rate:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
