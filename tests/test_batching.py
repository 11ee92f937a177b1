"""atom_tf.batching.map_batches: every call sees one fixed batch shape (one trace), the
padding never reaches the result, progress counts real items."""

import numpy as np

from atom_tf.batching import map_batches


def test_batches_are_padded_to_one_shape_and_the_padding_is_dropped():
    items = np.arange(10, dtype=np.float32).reshape(10, 1) + 1
    shapes, indices, progress = [], [], []

    def fn(batch, index):
        shapes.append(batch.shape)
        indices.append(index)
        return batch[:, 0] * 2

    out = map_batches(fn, items, 4, progress.append)
    assert shapes == [(4, 1)] * 3  # 4 + 4 + 2 real rows, the last padded with 2 zero rows
    assert indices == [0, 1, 2]
    assert progress == [4, 8, 10]
    np.testing.assert_array_equal(out, items[:, 0] * 2)


def test_an_exact_multiple_is_not_padded_and_empty_input_gives_an_empty_result():
    items = np.ones((6, 2, 2), np.uint8)
    seen = []
    out = map_batches(lambda b, i: seen.append(b.copy()) or b.sum(axis=(1, 2)), items, 3)
    assert len(seen) == 2 and all(b.min() == 1 for b in seen)  # no zero rows added
    np.testing.assert_array_equal(out, np.full(6, 4))
    assert map_batches(lambda b, i: b, np.zeros((0, 3)), 4).shape == (0,)
