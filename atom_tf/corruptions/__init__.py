"""Batched image corruptions (docs/protocol.md §6): 19 corruptions × severities 1-5, two constant tables.

    corrupted = corrupt(images, "fog", severity=3, seed=0)            # cifar table for 32×32
    corrupted = corrupt(images, "fog", 3, seed=0, table="imagenet")   # imagecorruptions' constants

Images: [B, H, W, 3] (H, W ≥ 32), uint8 in 0..255 or float in [0,1]; shape and dtype are kept.
A seed reproduces a batch exactly.
"""

from __future__ import annotations

import numpy as np

from atom_tf.corruptions import engine
from atom_tf.corruptions.constants import TABLES
from atom_tf.errors import InvalidConfigError

CORRUPTION_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)  # fmt: skip
COMMON_CORRUPTIONS = CORRUPTION_NAMES[:15]
SEVERITIES = (1, 2, 3, 4, 5)


def default_table(images: np.ndarray) -> str:
    """`cifar` for 32×32 inputs (the paper's evaluation), `imagenet` otherwise."""
    return "cifar" if images.shape[1:3] == (32, 32) else "imagenet"


def corrupt(
    images: np.ndarray,
    name: str,
    severity: int,
    seed: int | np.random.Generator = 0,
    table: str | None = None,
) -> np.ndarray:
    """Corrupts a batch with one corruption at one severity."""
    if name not in CORRUPTION_NAMES:
        raise InvalidConfigError(
            f"unknown corruption {name!r}; choose from {list(CORRUPTION_NAMES)}"
        )
    if severity not in SEVERITIES:
        raise InvalidConfigError(f"severity must be an integer in 1..5, not {severity!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 32:
        raise InvalidConfigError(
            f"expected images of shape [B, H, W, 3] with H, W >= 32, got {images.shape}"
        )
    table = table or default_table(images)
    if table not in TABLES:
        raise InvalidConfigError(f"unknown constant table {table!r}; choose 'cifar' or 'imagenet'")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    out = getattr(engine, name)(x, TABLES[table][name][severity - 1], rng, table).astype(np.float32)
    if images.dtype == np.uint8:
        return np.uint8(np.clip(out, 0, 1) * 255)  # truncation, as imagecorruptions.corrupt
    return out.astype(images.dtype)
