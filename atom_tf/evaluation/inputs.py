"""The images a detector takes: a batch [N, H, W, 3], uint8 or float in [0, 1], checked
with one-line errors (shared by the detector of a run and of an export)."""

from __future__ import annotations

import numpy as np

from atom_tf.errors import InvalidInputError


def as_unit_float(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return (
        images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    )


def check_images(images: np.ndarray, resize: bool = False, size: int = 32) -> np.ndarray:
    """Images as the network takes them: [N, size, size, 3], uint8 or float in [0, 1]. Other
    sizes are refused unless `resize` (short side to `size`, centre crop: the rule for image
    folders); a wrong rank or channel count, other dtypes and values outside [0, 1] are
    refused in one line with a hint."""
    images = np.asarray(images)
    if images.ndim != 4:
        hint = " (one image: pass images[None])" if images.ndim == 3 else ""
        raise InvalidInputError(
            f"images must be a batch [N, H, W, 3]; got shape {images.shape}{hint}"
        )
    if images.shape[-1] != 3:
        hint = " (grey images: np.repeat(images, 3, axis=-1))" if images.shape[-1] == 1 else ""
        raise InvalidInputError(
            f"images must have 3 colour channels last; got shape {images.shape}{hint}"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InvalidInputError(
                f"images must be uint8 (0-255) or float in [0, 1]; got {images.dtype}"
            )
        if len(images) and not np.all(np.isfinite(images)):
            raise InvalidInputError("images hold NaN or infinite values")
        low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if high > 1.0 or low < 0.0:
            raise InvalidInputError(
                f"float images must lie in [0, 1]; these span [{low:g}, {high:g}]"
                + (": divide by 255, or pass uint8" if high > 1.0 else "")
            )
    if images.shape[1:3] != (size, size):
        if not resize:
            raise InvalidInputError(
                f"images must be {size}x{size}; got {images.shape[1]}x{images.shape[2]} (pass "
                f"resize=True to bring them to {size}x{size}: short side, centre crop)"
            )
        from atom_tf.data.image_files import resize_short_side_center_crop

        resized = [resize_short_side_center_crop(image, size) for image in images]
        images = np.stack(resized) if resized else np.zeros((0, size, size, 3), images.dtype)
    return images
