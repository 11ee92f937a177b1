#!/usr/bin/env python
"""What the safety checks cost, as ratios measured in this one run:

- `Detector.score` with its input check (rank, channels, size, dtype, value range) against the
  same batched scoring without it, on uint8 and on float images;
- the digests that key cached results (the test set's SHA-256 and the weights file's) against
  one scoring pass over that test set.

    python bench/detector.py --model=small_cnn_32 --images=10000
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "small_cnn_32", "Architecture.")
flags.DEFINE_integer("images", 10_000, "Images scored (CIFAR-10's test set size by default).")
flags.DEFINE_integer("repeats", 3, "Timed repeats of each measurement (the best is kept).")


def main(argv: list[str]) -> None:
    del argv
    from atom_tf.evaluation.detector import Detector
    from atom_tf.evaluation.scorers import get_scorer
    from atom_tf.files import sha256_of_arrays, sha256_of_file
    from atom_tf.models import build_model
    from bench.timing import best_seconds

    network = build_model(FLAGS.model, 11)
    detector = Detector(network, 10, get_scorer("kplus1"))
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (FLAGS.images, 32, 32, 3), dtype=np.uint8)
    floats = uint8.astype(np.float32) / 255
    print(f"{FLAGS.model}, {FLAGS.images:,} images, best of {FLAGS.repeats}")
    for name, images in (("uint8", uint8), ("float", floats)):
        checked = best_seconds(lambda im=images: detector.score(im), FLAGS.repeats)
        unchecked = best_seconds(lambda im=images: detector._batched(detector._score, im),
                                 FLAGS.repeats)  # fmt: skip
        print(f"score {name}: checked {checked:.3f} s, unchecked {unchecked:.3f} s, "
              f"ratio {checked / unchecked:.3f}")  # fmt: skip
    labels = rng.integers(0, 10, FLAGS.images)
    scoring = best_seconds(lambda: detector.score(uint8), FLAGS.repeats)
    data_digest = best_seconds(lambda: sha256_of_arrays(uint8, labels), FLAGS.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "network.weights.h5")
        network.save_weights(path)
        weights_digest = best_seconds(lambda: sha256_of_file(path), FLAGS.repeats)
        size = os.path.getsize(path)
    print(
        f"test-set SHA-256: {data_digest:.4f} s = {data_digest / scoring:.4f} of one scoring pass"
    )
    print(f"weights SHA-256 ({size / 1e6:.1f} MB): {weights_digest:.4f} s = "
          f"{weights_digest / scoring:.4f} of one scoring pass")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
