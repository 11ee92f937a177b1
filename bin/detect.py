#!/usr/bin/env python
"""Runs a detector over image files: per image its label, class name, score and whether it
is accepted as in-distribution.

  python bin/detect.py --model=runs/digits_atom --images=photos/ --output=detections.csv
  python bin/detect.py --model=exports/digits_atom --images=photos.zip --output=detections.jsonl
  python bin/detect.py --model=runs/cifar10_cpu/atom --images='shots/**/*.jpg' --output=d.csv
  python bin/detect.py --model=runs/cifar10_cpu/atom --images=tfds:cifar10/test --output=d.csv

--model is a training run or an export of one (bin/export.py). --images is a folder (searched
recursively), a .zip, a glob or a tfds split (tfds:NAME/SPLIT); images of any size are brought
to the detector's (short side, centre crop). A file that does not decode is named on stderr
and skipped. Writes --output (.csv or .jsonl; columns file, label, class_name, score,
accepted) and OUTPUT.summary.json; prints a summary (images, share accepted, per-class counts,
images/s). Exit status 0 when at least one image was read (skipped files included), 2 with one
`error:` line otherwise: no images there, a model folder that is neither a run nor an export.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags

from atom_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "", "A training run, an export (bin/export.py) or pretrained:NAME.")
flags.DEFINE_string("images", "", "A folder, a .zip, a glob or tfds:NAME/SPLIT.")
flags.DEFINE_string("output", "detections.csv", "Where the detections go (.csv or .jsonl).")
flags.DEFINE_integer("batch_size", 256, "Images per batch.")
flags.DEFINE_string("data_dir", "", "tfds data directory (for tfds:NAME/SPLIT).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv: list[str]) -> None:
    import atom_tf
    from atom_tf.errors import InvalidConfigError
    from atom_tf.evaluation.detect import detect_images
    from atom_tf.evaluation.export import is_export
    from atom_tf.pretrained import resolve_run

    if not FLAGS.model or not FLAGS.images:
        raise InvalidConfigError("pass --model=RUN_OR_EXPORT and --images=PATH")
    if FLAGS.batch_size < 1:
        raise InvalidConfigError(f"--batch_size must be >= 1; got {FLAGS.batch_size}")
    model = resolve_run(FLAGS.model)
    if not is_export(model) and not os.path.isfile(os.path.join(model, "config.json")):
        raise InvalidConfigError(
            f"--model: {model} is neither a training run (config.json) nor an export "
            "(metadata.json of bin/export.py)"
        )
    detector = atom_tf.load_detector(model)
    summary = detect_images(detector, FLAGS.images, FLAGS.output, detector.class_names or [],
                            FLAGS.batch_size, FLAGS.data_dir or None, FLAGS.progress)  # fmt: skip
    print("\n".join(summary.lines(FLAGS.images, FLAGS.output)))


if __name__ == "__main__":
    cli.run_main(main)
