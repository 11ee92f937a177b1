"""Image files as datasets: a folder, or a .zip of that folder, in Keras' layout.

- In-distribution (`--dataset=images:PATH`): `PATH/train/<class>/*` and `PATH/test/<class>/*`
  (`keras.utils.image_dataset_from_directory`'s layout per split); classes are the sorted
  folder names and must be the same in both splits.
- Outlier pool (`--pool=images --pool_path=PATH`): every image under PATH.
- OOD test set (`--ood_sets=images:PATH`): every image under PATH.

Images are decoded once (OpenCV, threads) and cached as uint8 arrays under
`$ATOM_TF_CACHE` (default `~/.cache/atom_tf/images`), keyed by the source's path, size and
modification time (for a folder: every file's), so the second run starts in seconds.
Images that are not `size`×`size` are resized so that their short side is `size` (area
interpolation when shrinking, bilinear when enlarging) and centre-cropped: docs/protocol.md §4's rule
for folder OOD sets.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Callable

import numpy as np

from atom_tf.errors import DatasetNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Bounds on what one file may cost: its stored (uncompressed) bytes and its decoded pixels. A
# zip bomb or a 100,000 x 100,000 PNG fails with the file named, before memory runs out.
MAX_FILE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 50_000_000  # e.g. 7,000 x 7,000; OpenCV's own default is 2**30
MAX_BATCH_BYTES = 256 << 20  # encoded bytes held at once while decoding
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
CACHE_FORMAT = 1  # bump when what a cache file holds changes
PREFIX = "images:"


class CacheError(DatasetNotFoundError):
    """A cache file that this version cannot use."""


def resize_short_side_center_crop(image: np.ndarray, size: int = 32) -> np.ndarray:
    """Resizes so the short side is `size` (area interpolation), then centre-crops to size²."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def is_image_file(name: str) -> bool:
    base = os.path.basename(name)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")


@dataclasses.dataclass
class ImageSource:
    """The image files of a folder or a zip, as '/'-separated names relative to its root
    (a zip holding one top-level folder is read from inside that folder)."""

    path: str
    names: list[str]
    fingerprint: str  # changes when any file changes
    _zip: zipfile.ZipFile | None = None
    _prefix: str = ""

    @classmethod
    def open(cls, path: str, what: str) -> ImageSource:
        if os.path.isdir(path):
            names, stats = [], []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(root, f)
                    rel = os.path.relpath(full, path).replace(os.sep, "/")
                    if is_image_file(rel):
                        st = os.stat(full)
                        check_file_size(full, st.st_size, what)
                        names.append(rel)
                        stats.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
            fingerprint = hashlib.sha256("\n".join(stats).encode()).hexdigest()
            source = cls(path, names, fingerprint)
        elif os.path.isfile(path):
            if not zipfile.is_zipfile(path):
                raise DatasetNotFoundError(
                    f"{what}: {path} is neither a folder nor a .zip of image files"
                )
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise DatasetNotFoundError(f"{what}: {path} is a damaged zip ({err})") from err
            infos = [
                i for i in archive.infolist()
                if is_image_file(i.filename) and not i.filename.startswith("__MACOSX/")
            ]  # fmt: skip
            for info in infos:
                check_file_size(f"{path}:{info.filename}", info.file_size, what)
            members = [i.filename for i in infos]
            tops = {n.split("/", 1)[0] for n in members}
            prefix = ""
            if len(tops) == 1 and all("/" in n for n in members):
                prefix = f"{tops.pop()}/"
                members = [n[len(prefix) :] for n in members]
            st = os.stat(path)
            fingerprint = f"zip:{st.st_size}:{st.st_mtime_ns}"
            source = cls(path, sorted(members), fingerprint, archive, prefix)
        else:
            raise DatasetNotFoundError(f"{what}: no folder or .zip at {path}")
        if not source.names:
            raise DatasetNotFoundError(
                f"{what}: no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) in {path}"
            )
        return source

    def read(self, name: str) -> bytes:
        """The file's bytes, at most MAX_FILE_BYTES (a member whose header understates its
        size, or a file grown since it was listed, fails with its name)."""
        try:
            if self._zip is not None:
                with self._zip.open(self._prefix + name) as member:
                    data = member.read(MAX_FILE_BYTES + 1)
            else:
                with open(os.path.join(self.path, name), "rb") as f:
                    data = f.read(MAX_FILE_BYTES + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise DatasetNotFoundError(
                f"cannot read {self.location(name)} ({type(err).__name__}: {err}); replace it"
            ) from err
        check_file_size(self.location(name), len(data), "")
        return data

    def location(self, name: str) -> str:
        return f"{self.path}:{name}" if self._zip is not None else os.path.join(self.path, name)


def check_file_size(location: str, size: int, what: str) -> None:
    if size > MAX_FILE_BYTES:
        raise DatasetNotFoundError(
            f"{what + ': ' if what else ''}{location} holds more than {MAX_FILE_BYTES >> 20} MiB "
            f"({size:,} bytes uncompressed); no image file needs that: remove it"
        )


def too_many_pixels(data: bytes) -> int | None:
    """The pixel count from an image file's header when it exceeds MAX_IMAGE_PIXELS."""
    import io
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as err:  # Pillow's own bound, far above ours
        found = re.search(r"\((\d+) pixels\)", str(err))
        return int(found[1]) if found else MAX_IMAGE_PIXELS + 1
    except Exception:  # not a format Pillow reads: OpenCV's own bound applied
        return None
    return width * height if width * height > MAX_IMAGE_PIXELS else None


def undecodable(what: str, location: str, data: bytes) -> DatasetNotFoundError:
    """The error for a file that did not decode: too many pixels, or not an image."""
    pixels = too_many_pixels(data)
    if pixels is not None:
        return DatasetNotFoundError(
            f"{what}: {location} is too large to decode ({pixels:,} pixels; at most "
            f"{MAX_IMAGE_PIXELS:,}); remove it or shrink it"
        )
    return DatasetNotFoundError(f"{what}: cannot decode {location}; remove or replace it")


def decode_image(data: bytes) -> np.ndarray | None:
    """RGB uint8 [h, w, 3] (grey and alpha images made RGB), or None if it does not decode."""
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. more pixels than OPENCV_IO_MAX_IMAGE_PIXELS
        image = None
    if image is not None:
        return np.ascontiguousarray(image[..., ::-1])
    if too_many_pixels(data) is not None:
        return None
    try:  # formats OpenCV lacks (GIF, palette TIFF): Pillow
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:  # Pillow raises many types for files it cannot read
        return None


def decode_images(
    source: ImageSource,
    names: list[str],
    size: int,
    what: str,
    skip_bad: bool = False,
    chunk: int = 2048,
) -> np.ndarray:
    """Decodes `names` of `source` to uint8 [N, size, size, 3] (short side + centre crop).

    An undecodable file fails with its name, or with `skip_bad` is left out (one warning)."""
    out = np.empty((len(names), size, size, 3), dtype=np.uint8)
    kept, bad = 0, []

    def convert(item: tuple[str, bytes]) -> np.ndarray | None:
        image = decode_image(item[1])
        return None if image is None else resize_short_side_center_crop(image, size)

    def batches():  # at most `chunk` files and MAX_BATCH_BYTES of encoded bytes at a time
        batch, held = [], 0
        for name in names:
            data = source.read(name)
            batch.append((name, data))
            held += len(data)
            if len(batch) == chunk or held >= MAX_BATCH_BYTES:
                yield batch
                batch, held = [], 0
        if batch:
            yield batch

    workers = max(1, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # OpenCV releases the GIL
        for batch in batches():
            for (name, data), image in zip(batch, pool.map(convert, batch), strict=True):
                if image is None:
                    if not skip_bad or too_many_pixels(data) is not None:
                        raise undecodable(what, source.location(name), data)
                    bad.append(source.location(name))
                    continue
                out[kept] = image
                kept += 1
    if bad:
        print(f"warning: {what}: skipped {len(bad)} unreadable file(s), first: {bad[0]}")
    return out[:kept]


def cache_dir() -> str:
    return os.environ.get("ATOM_TF_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "atom_tf", "images"
    )


def cached_arrays(
    source: ImageSource, kind: str, build: Callable[[], dict[str, np.ndarray]], what: str
) -> dict[str, np.ndarray]:
    """`build()`'s arrays, stored once per (source, kind) in the cache folder."""
    key = hashlib.sha256(
        f"{os.path.abspath(source.path)}|{source.fingerprint}|{kind}".encode()
    ).hexdigest()[:24]
    path = os.path.join(cache_dir(), f"{kind}-{key}.npz")
    if os.path.exists(path):
        try:
            with np.load(path) as saved:
                arrays = {k: saved[k] for k in saved.files}
            meta = json.loads(str(arrays.pop("meta")))
        except Exception as err:  # a damaged file: numpy/zipfile raise many types
            raise CacheError(
                f"{what}: cache file {path} cannot be read ({type(err).__name__}); delete it "
                "and run again"
            ) from err
        if meta.get("format") != CACHE_FORMAT:
            raise CacheError(
                f"{what}: cache file {path} was written by another atom_tf version (format "
                f"{meta.get('format')}, this one reads {CACHE_FORMAT}); delete it and run again"
            )
        return arrays
    arrays = build()
    os.makedirs(cache_dir(), exist_ok=True)
    meta = json.dumps({"format": CACHE_FORMAT, "source": os.path.abspath(source.path)})
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, meta=np.array(meta), **arrays)
    os.replace(tmp, path)
    return arrays


def is_image_spec(name: str) -> bool:
    return name.startswith(PREFIX)


def spec_path(name: str) -> str:
    return name[len(PREFIX) :]


def source_label(name: str) -> str:
    """A short name for tables: `images:data/cifar10.zip` -> `cifar10`."""
    if not is_image_spec(name):
        return name
    base = os.path.basename(os.path.normpath(spec_path(name)))
    return base[:-4] if base.lower().endswith(".zip") else base


def load_classification(path: str, size: int = 32) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test (uint8 images, int64 labels), class names and the
    per-channel mean and std of the training images in [0, 1]."""
    what = f"dataset images:{path}"
    source = ImageSource.open(path, what)
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for name in source.names:
        parts = name.split("/")
        if len(parts) >= 3 and parts[0] in splits:
            splits[parts[0]].setdefault(parts[1], []).append(name)
    missing = [s for s, classes in splits.items() if not classes]
    if missing:
        raise DatasetNotFoundError(
            f"{what}: no {' or '.join(f'{s}/<class>/' for s in missing)} images; expected "
            "train/<class>/<image> and test/<class>/<image> (one folder per class)"
        )
    train_classes, test_classes = sorted(splits["train"]), sorted(splits["test"])
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DatasetNotFoundError(
            f"{what}: class folders differ between splits (only in train: {only_train or '-'}; "
            f"only in test: {only_test or '-'})"
        )

    def build() -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"classes": np.array(train_classes)}
        for split, by_class in splits.items():
            names = [n for c in train_classes for n in by_class[c]]
            labels = np.concatenate(
                [np.full(len(by_class[c]), i, np.int64) for i, c in enumerate(train_classes)]
            )
            arrays[f"x_{split}"] = decode_images(source, names, size, what)
            arrays[f"y_{split}"] = labels
        unit = arrays["x_train"].reshape(-1, 3).astype(np.float64) / 255.0
        arrays["mean"], arrays["std"] = unit.mean(axis=0), unit.std(axis=0)
        return arrays

    return cached_arrays(source, f"classification{size}", build, what)


def load_image_set(path: str, size: int, what: str) -> np.ndarray:
    """Every image under `path` (sorted by name) as uint8 [N, size, size, 3], cached."""
    source = ImageSource.open(path, what)
    arrays = cached_arrays(
        source,
        f"images{size}",
        lambda: {"x": decode_images(source, source.names, size, what)},
        what,
    )
    return arrays["x"]


def smallest_side(path: str, what: str, sample: int = 256) -> int:
    """The smallest short side among (an even sample of) the images under `path`."""
    source = ImageSource.open(path, what)
    step = max(1, len(source.names) // sample)
    sides = []
    for name in source.names[::step]:
        data = source.read(name)
        image = decode_image(data)
        if image is None:
            raise undecodable(what, source.location(name), data)
        sides.append(min(image.shape[:2]))
    return min(sides)
