"""Batch detection over image files (bin/detect.py): each image's label, class name, score
and whether it is accepted as in-distribution, written as CSV or JSON lines, with a summary.

Images come from a folder (searched recursively), a .zip, a glob (`photos/*.jpg`) or a tfds
split (`tfds:cifar10/test`); any size, brought to the detector's (short side, centre crop).
A file that does not decode is named on stderr and skipped, and counted in the summary.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

from atom_tf.data.image_files import (
    ImageSource,
    decode_image,
    is_image_file,
    resize_short_side_center_crop,
)
from atom_tf.errors import DatasetNotFoundError, InvalidConfigError
from atom_tf.files import atomic_write_json

TFDS_PREFIX = "tfds:"
OUTPUT_FORMATS = (".csv", ".jsonl")
COLUMNS = ("file", "label", "class_name", "score", "accepted")


@dataclasses.dataclass
class Summary:
    images: int = 0
    accepted: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    per_class: dict[str, int] = dataclasses.field(default_factory=dict)  # accepted, by label
    seconds: float = 0.0

    def lines(self, source: str, output: str) -> list[str]:
        share = 100 * self.accepted / self.images if self.images else 0.0
        rate = self.images / self.seconds if self.seconds else 0.0
        classes = ", ".join(
            f"{k} {v}" for k, v in sorted(self.per_class.items(), key=lambda kv: -kv[1])
        )
        return [
            f"{self.images} images from {source} in {self.seconds:.1f} s ({rate:.0f} images/s): "
            f"{self.accepted} accepted ({share:.1f} %), {self.images - self.accepted} rejected as "
            f"out-of-distribution; {len(self.skipped)} unreadable skipped",
            f"accepted per class: {classes or 'none'}",
            f"detections in {output}",
        ]


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def image_batches(spec: str, size: int, batch_size: int, summary: Summary,
                  data_dir: str | None = None) -> tuple[int, Iterator[tuple[list[str], np.ndarray]]]:  # fmt: skip
    """How many files `spec` names, and (file names, uint8 [B, size, size, 3]) batches of
    their images; unreadable files are reported on stderr and left out (`summary.skipped`)."""
    if spec.startswith(TFDS_PREFIX):
        return tfds_batches(spec, size, batch_size, data_dir)
    if is_glob(spec):
        files = sorted(f for f in glob.glob(spec, recursive=True)
                       if os.path.isfile(f) and is_image_file(f))  # fmt: skip
        if not files:
            raise DatasetNotFoundError(f"--images: no image files match {spec}")
        read, names = read_file, files
    else:
        source = ImageSource.open(spec, "--images")
        read, names = source.read, source.names
    return len(names), decoded_batches(names, read, size, batch_size, summary)


def decoded_batches(names: list[str], read, size: int, batch_size: int, summary: Summary):
    for start in range(0, len(names), batch_size):
        kept, images = [], []
        for name in names[start : start + batch_size]:
            try:
                image = decode_image(read(name))
            except (DatasetNotFoundError, OSError):
                image = None
            if image is None:
                print(f"warning: cannot decode {name}; skipped", file=sys.stderr)
                summary.skipped.append(name)
                continue
            kept.append(name)
            images.append(resize_short_side_center_crop(image, size))
        if kept:
            yield kept, np.stack(images)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tfds_batches(spec: str, size: int, batch_size: int, data_dir: str | None):
    from atom_tf.data.in_distribution import tfds_images

    name, _, split = spec.removeprefix(TFDS_PREFIX).partition("/")
    if not name or not split:
        raise InvalidConfigError(f"--images: write a tfds split as tfds:NAME/SPLIT; got {spec}")
    images, _ = tfds_images(name, split, data_dir, download=True, label_key=None)

    def batches():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if batch.shape[1:3] != (size, size):
                batch = np.stack([resize_short_side_center_crop(i, size) for i in batch])
            yield [f"{name}/{split}/{i}" for i in range(start, start + len(batch))], batch

    return len(images), batches()


def detections(detector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) of a batch, in one pass where the detector offers it (an export)."""
    if hasattr(detector, "outputs"):
        out = detector.outputs(images)
        return out["label"], out["score"]
    return detector.classify(images), detector.score(images)


def detect_images(
    detector,
    spec: str,
    output: str,
    class_names: list[str],
    batch_size: int = 256,
    data_dir: str | None = None,
    progress: bool = True,
) -> Summary:
    """Writes `output` (.csv or .jsonl: COLUMNS per image) for the images of `spec`; returns
    the summary. The file appears complete or not at all (written beside it, then renamed)."""
    import keras

    if not output.endswith(OUTPUT_FORMATS):
        raise InvalidConfigError(f"--output must end with .csv or .jsonl; got {output}")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise InvalidConfigError(f"--output: the folder {parent} does not exist")
    size = getattr(detector, "image_size", 32)
    summary, partial = Summary(), output + ".partial"
    start = time.perf_counter()
    total, batches = image_batches(spec, size, batch_size, summary, data_dir)
    bar = keras.utils.Progbar(total, unit_name="image", verbose=1 if progress else 0)
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f) if output.endswith(".csv") else None
        if writer:
            writer.writerow(COLUMNS)
        for names, images in batches:
            labels, scores = detections(detector, images)
            for name, label, score in zip(names, labels, scores, strict=True):
                accepted = bool(score >= detector.threshold)
                class_name = (
                    class_names[int(label)] if int(label) < len(class_names) else str(label)
                )
                row = (name, int(label), class_name, float(score), accepted)
                if writer:
                    writer.writerow(row)
                else:
                    f.write(json.dumps(dict(zip(COLUMNS, row, strict=True))) + "\n")
                summary.images += 1
                if accepted:
                    summary.accepted += 1
                    summary.per_class[class_name] = summary.per_class.get(class_name, 0) + 1
            bar.update(summary.images + len(summary.skipped))  # files read so far
    summary.seconds = time.perf_counter() - start
    if not summary.images:
        os.remove(partial)
        raise DatasetNotFoundError(
            f"--images: none of the {len(summary.skipped)} files of {spec} could be decoded"
        )
    os.replace(partial, output)
    atomic_write_json(output + ".summary.json", {**dataclasses.asdict(summary), "source": spec})
    return summary
