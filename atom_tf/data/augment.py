"""Per-example random crop (zero padding) and horizontal flip, stateless and batched.

docs/protocol.md §2/§3: random crop 32 with 4-pixel padding + horizontal flip. The same function
serves tf.data (in-distribution batches) and outlier mining (candidates are augmented once),
so both are reproducible from a seed alone.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def random_crop_flip(images: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
    """Crops each image of a [B, H, W, C] batch at a random offset of its zero-padded copy
    and flips it horizontally with probability 1/2. `seed` is a shape-[2] int tensor."""
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    top = tf.random.stateless_uniform([batch], seeds[0], 0, 2 * padding + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * padding + 1, dtype=tf.int32)
    rows = top[:, None] + tf.range(height)[None, :]
    cols = left[:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def seed_for(*parts: int) -> np.ndarray:
    """A shape-[2] int64 seed derived deterministically from integers (run seed, epoch, ...)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return words.astype(np.int64)
