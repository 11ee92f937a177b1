"""Fixed-shape batching: every batch is padded to the same size, so a compiled function is
traced once (the padding rows are dropped from the result)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def map_batches(
    fn: Callable[[np.ndarray, int], np.ndarray],
    items: np.ndarray,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Concatenates fn(batch, batch_index)[:len(batch)] over fixed-size, zero-padded batches;
    `on_batch(done)` is called after each batch (progress)."""
    outputs = []
    for index, first in enumerate(range(0, len(items), batch_size)):
        batch = items[first : first + batch_size]
        pad = batch_size - len(batch)
        if pad:
            batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
        outputs.append(np.asarray(fn(batch, index))[: batch_size - pad])
        if on_batch is not None:
            on_batch(first + batch_size - pad)
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
