"""OOD test sets (docs/protocol.md §4): a registry of loaders returning uint8 [N, 32, 32, 3].

tfds sets (svhn, cifar10, dtd), image folders as distributed for ODIN (places365, lsun_c,
lsun_r, isun), seeded noise, and the embedded sets that need no download: `textures` (crops
of scikit-image's brick, grass and gravel photographs), `faces` (its LFW subset) and
`letters` (printed capitals in the digits' own 8×8 format: the near-OOD set for `digits`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from atom_tf.data.image_files import (
    IMAGE_EXTENSIONS,
    ImageSource,
    decode_images,
    is_image_spec,
    load_image_set,
    resize_short_side_center_crop,
    source_label,
    spec_path,
)
from atom_tf.data.in_distribution import prepared_builder, tfds_images, upsample_gray_to_rgb32
from atom_tf.data.outlier_pools import ImageFilePool
from atom_tf.errors import DatasetNotFoundError
from atom_tf.registry import Registry

STANDARD_SETS = {  # the six OOD test sets averaged in Table 1
    "svhn": ["svhn", "dtd", "places365", "lsun_c", "lsun_r", "isun"],  # for CIFAR in-distribution
    "other": [
        "cifar10",
        "dtd",
        "places365",
        "lsun_c",
        "lsun_r",
        "isun",
    ],  # for SVHN in-distribution
}
EMBEDDED_SETS = ["letters", "textures", "faces", "gaussian_noise", "uniform_noise"]

OodLoader = Callable[..., np.ndarray]
OOD_SETS: Registry[OodLoader] = Registry("OOD set")
register_ood_set = OOD_SETS.register
ood_set_names = OOD_SETS.names


def load_ood_set(
    name: str,
    max_images: int | None = None,
    data_dir: str | None = None,
    ood_dir: str | None = None,
    download: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Loads an OOD test set by name; at most `max_images` (a seeded random subset).

    Besides registered names: `images:PATH` (every image of a folder or .zip, made 32×32) and
    `pool_validation:PATH` (the validation split of the image-file pool at PATH, for choosing
    the mining quantile q without touching the test sets)."""
    if is_image_spec(name):
        images = load_image_set(spec_path(name), 32, f"OOD set {name}")
    elif name.startswith(POOL_VALIDATION):
        images = pool_validation_images(name[len(POOL_VALIDATION) :], seed)
    else:
        images = OOD_SETS.get(name)(
            data_dir=data_dir, ood_dir=ood_dir, download=download, seed=seed, max_images=max_images
        )
    if max_images is not None and len(images) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))
        images = images[keep]
    return images


POOL_VALIDATION = "pool_validation:"


def ood_set_label(name: str) -> str:
    """The name an OOD set has in tables and file names (`images:data/x.zip` -> `x`)."""
    if name.startswith(POOL_VALIDATION):
        return source_label("images:" + name[len(POOL_VALIDATION) :]) + "_validation"
    return source_label(name)


def unique_labels(names: list[str]) -> list[str]:
    """Labels for a list of sets, made distinct: two folders called `set` become `a/set` and
    `b/set` (their parent folders), then `set#2`, ... if those collide too."""
    plain = [ood_set_label(n) for n in names]
    labels = list(plain)
    for i, name in enumerate(names):
        if plain.count(plain[i]) > 1 and (is_image_spec(name) or name.startswith(POOL_VALIDATION)):
            parent = os.path.basename(os.path.dirname(os.path.normpath(name.split(":", 1)[1])))
            labels[i] = f"{parent}/{labels[i]}" if parent else labels[i]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label}#{seen[label]}"
    return labels


def resolved_set_name(name: str) -> str:
    """The set's name with any path made absolute and resolved (what a cached score of it
    depends on besides its content)."""
    for prefix in ("images:", POOL_VALIDATION):
        if name.startswith(prefix):
            return prefix + os.path.realpath(name[len(prefix) :])
    return name


def pool_validation_images(path: str, seed: int) -> np.ndarray:
    """One random 32×32 crop of each validation source of the image-file pool at `path`."""
    pool = ImageFilePool(path, seed, split="validation")
    return pool.read(0, len(pool.order))


def load_image_folder(folder: str, name: str) -> np.ndarray:
    """All images under `folder` (recursively), RGB, short side 32, centre crop; unreadable
    files are skipped and reported once (count and first path). Not cached: these folders are
    small and users replace their contents."""
    if not os.path.isdir(folder):
        raise DatasetNotFoundError(
            f"OOD set {name!r}: no folder {folder}; put its images in {folder} (or pass --ood_dir)"
        )
    what = f"OOD set {name!r}"
    try:
        source = ImageSource.open(folder, what)
        images = decode_images(source, source.names, 32, what, skip_bad=True)
    except DatasetNotFoundError:  # no image files at all
        images = []
    if not len(images):
        raise DatasetNotFoundError(
            f"{what}: no readable images in {folder}; put the {name} images "
            f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...) there"
        )
    return images


def _folder_set(name: str, subfolder: str) -> OodLoader:
    def load(ood_dir=None, **_) -> np.ndarray:
        root = ood_dir or os.environ.get("ATOM_OOD_DIR", "data/ood")
        return load_image_folder(os.path.join(root, subfolder), name)

    return load


for _name, _sub in [
    ("places365", "places365"),
    ("lsun_c", "LSUN"),
    ("lsun_r", "LSUN_resize"),
    ("isun", "iSUN"),
]:
    register_ood_set(_name)(_folder_set(_name, _sub))


@register_ood_set("svhn")
def svhn_test(data_dir=None, download=True, seed=0, **_) -> np.ndarray:
    """SVHN test, 1,000 images per class (10,000), seeded."""
    images, labels = tfds_images("svhn_cropped", "test", data_dir, download)
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:1000] for c in np.unique(labels)]
    )
    return images[np.sort(keep)]


@register_ood_set("cifar10")
def cifar10_test(data_dir=None, download=True, **_) -> np.ndarray:
    return tfds_images("cifar10", "test", data_dir, download)[0]


@register_ood_set("dtd")
def dtd_all(data_dir=None, download=True, **_) -> np.ndarray:
    """Describable Textures, all 5,640 images (train + validation + test), resized + centre crop."""
    import tensorflow_datasets as tfds

    builder = prepared_builder("dtd", data_dir, download)
    out = []
    for split in ("train", "validation", "test"):
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            out.append(resize_short_side_center_crop(example["image"]))
    return np.stack(out).astype(np.uint8)


def _noise(kind: str, seed: int, count: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 17])
    shape = (count, 32, 32, 3)
    values = rng.normal(0.5, 1.0, shape) if kind == "gaussian" else rng.uniform(0.0, 1.0, shape)
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


@register_ood_set("gaussian_noise")
def gaussian_noise(seed=0, max_images=None, **_) -> np.ndarray:
    """N(0.5, 1) per value, clipped to [0, 1]; 10,000 images."""
    return _noise("gaussian", seed, min(10_000, max_images or 10_000))


@register_ood_set("uniform_noise")
def uniform_noise(seed=0, max_images=None, **_) -> np.ndarray:
    """U[0, 1] per value; 10,000 images."""
    return _noise("uniform", seed, min(10_000, max_images or 10_000))


@register_ood_set("textures")
def embedded_textures(seed=0, **_) -> np.ndarray:
    """1,500 crops (side 32-128, resized to 32×32) of scikit-image's brick, grass and gravel."""
    import cv2
    import skimage.data as skd

    rng = np.random.default_rng([seed, 23])
    out = []
    for texture in (skd.brick(), skd.grass(), skd.gravel()):
        for _ in range(500):
            side = int(rng.integers(32, 129))
            top, left = (
                rng.integers(0, texture.shape[0] - side + 1),
                rng.integers(0, texture.shape[1] - side + 1),
            )
            crop = cv2.resize(
                texture[top : top + side, left : left + side],
                (32, 32),
                interpolation=cv2.INTER_AREA,
            )
            out.append(np.repeat(crop[..., None], 3, axis=-1))
    return np.stack(out).astype(np.uint8)


@register_ood_set("faces")
def embedded_faces(**_) -> np.ndarray:
    """The 100 LFW face crops scikit-image ships (25×25 grey), resized to 32×32 RGB."""
    import cv2
    import skimage.data as skd

    faces = skd.lfw_subset()[:100]  # the first 100 are faces, the rest non-faces
    resized = [
        cv2.resize(f.astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR) for f in faces
    ]
    grey = np.round(np.clip(np.stack(resized), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# Capitals that do not read as a digit (O 0, I 1, Z 2, S 5, G 6, B 8, D and Q 0 are left out).
LETTERS = "ACEFHJKLMNPRTUVWXY"


def _letter_counts(letter: str, font: int, thickness: int, angle: float, stretch: float):
    """One capital drawn as the UCI digits were made: a size-normalised 32×32 bitmap whose
    4×4 blocks are counted, giving an 8×8 image of values 0..16."""
    import cv2

    canvas = np.zeros((160, 160), np.uint8)
    cv2.putText(canvas, letter, (40, 120), font, 3.0, 255, thickness, cv2.LINE_AA)
    matrix = cv2.getRotationMatrix2D((80, 80), angle, 1.0)
    matrix[0] *= stretch
    canvas = cv2.warpAffine(canvas, matrix, (160, 160))
    rows, cols = np.nonzero(canvas > 127)
    glyph = canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 32 / max(glyph.shape)
    height, width = (max(1, round(side * scale)) for side in glyph.shape)
    box = np.zeros((32, 32), np.uint8)
    top, left = (32 - height) // 2, (32 - width) // 2
    box[top : top + height, left : left + width] = cv2.resize(
        glyph, (width, height), interpolation=cv2.INTER_AREA
    )
    return (box > 127).reshape(8, 4, 8, 4).sum(axis=(1, 3))


@register_ood_set("letters")
def embedded_letters(seed=0, max_images=None, **_) -> np.ndarray:
    """1,000 printed capitals (18 letters, OpenCV's six Hershey fonts, stroke 1, rotated
    ±12°, width ×0.8-1.2) in the format of scikit-learn's digits: 8×8 counts of a 32×32
    bitmap, upsampled to 32×32 RGB exactly as the `digits` in-distribution set is."""
    import cv2

    fonts = [
        cv2.FONT_HERSHEY_SIMPLEX,
        cv2.FONT_HERSHEY_DUPLEX,
        cv2.FONT_HERSHEY_COMPLEX,
        cv2.FONT_HERSHEY_TRIPLEX,
        cv2.FONT_HERSHEY_PLAIN,
        cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    ]
    rng = np.random.default_rng([seed, 29])
    counts = [
        _letter_counts(
            LETTERS[i % len(LETTERS)],
            fonts[rng.integers(len(fonts))],
            1,
            rng.uniform(-12.0, 12.0),
            rng.uniform(0.8, 1.2),
        )
        for i in range(min(1_000, max_images or 1_000))
    ]
    return upsample_gray_to_rgb32(np.stack(counts) / 16.0)
