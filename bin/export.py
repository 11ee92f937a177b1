#!/usr/bin/env python
"""Exports a trained detector as one self-contained artefact, threshold included.

  python bin/export.py --checkpoint=runs/digits_atom --format=saved_model --output=exports/digits_atom
  python bin/export.py --checkpoint=runs/digits_atom --format=litert --output=exports/digits_atom_litert
  python bin/export.py --checkpoint=runs/digits_atom --format=onnx --tpr=0.99 --output=exports/digits_atom_onnx

Writes the artefact (saved_model/, detector.tflite or detector.onnx) and metadata.json (class
names, threshold and its TPR, scorer and constants, the run's config digest, versions) into
--output, then checks it: the artefact, loaded through its own runtime, scores the run's
in-distribution test images and prints the share it accepts. Its serving function takes
`images` [N, H, W, 3] float32 in [0, 1] (the SavedModel also `serve_uint8`) and returns
probabilities, label, score and accepted (atom_tf/evaluation/export.py).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

cli.import_tensorflow_quietly()

from atom_tf.evaluation.export import FORMATS  # noqa: E402
from atom_tf.evaluation.scorers import SCORERS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", "", "Training run directory to export, or pretrained:NAME.")
flags.DEFINE_enum("format", "saved_model", FORMATS, "Artefact format.")
flags.DEFINE_string("output", "", "Folder to write the artefact and metadata.json into.")
flags.DEFINE_float("tpr", 0.95, "Share of the in-distribution test set the threshold accepts.")
flags.DEFINE_string("scorer", "", f"Detection score: {SCORERS.choices()} (default: the method's).")
flags.DEFINE_bool("overwrite", False, "Replace what --output holds.")


def main(argv: list[str]) -> None:
    import numpy as np
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # the SavedModel writer's and converters' INFO lines

    from atom_tf.errors import InvalidConfigError
    from atom_tf.evaluation.detector import load_run
    from atom_tf.evaluation.export import describe_run, load_export

    if not FLAGS.checkpoint or not FLAGS.output:
        raise InvalidConfigError("pass --checkpoint=RUN_DIR and --output=FOLDER")
    if not 0.0 < FLAGS.tpr < 1.0:
        raise InvalidConfigError(f"--tpr must lie in (0, 1); got {FLAGS.tpr}")
    detector, config, data = load_run(FLAGS.checkpoint, FLAGS.scorer or None)
    if FLAGS.tpr != 0.95:
        detector.calibrate(data.x_test, FLAGS.tpr)
    metadata = describe_run(config, detector.run_state, FLAGS.tpr)
    record = detector.export(FLAGS.output, FLAGS.format, metadata, overwrite=FLAGS.overwrite)
    print(f"exported the {record['scorer']['name']} detector of {FLAGS.checkpoint} as "
          f"{FLAGS.format}: {os.path.join(FLAGS.output, record['artefact'])} "
          f"({record['bytes'] / 2**20:.2f} MiB, {record['seconds']:.1f} s), threshold "
          f"{record['threshold']:.6g}")  # fmt: skip
    accepted = load_export(FLAGS.output).predict(data.x_test)[0]
    print(f"check: the artefact accepts {100 * np.mean(accepted):.2f} % of the {len(accepted)} "
          f"in-distribution test images (threshold set at {100 * FLAGS.tpr:g} %)")  # fmt: skip


if __name__ == "__main__":
    cli.run_main(main)
