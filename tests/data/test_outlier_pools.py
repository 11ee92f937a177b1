import pickle

import numpy as np
import pytest

from atom_tf.data import load_pool
from atom_tf.data.outlier_pools import natural_photographs, wrapped_runs
from atom_tf.errors import DatasetNotFoundError


def test_wrapped_runs_cover_the_run_modulo_size():
    assert wrapped_runs(8, 5, 10) == [(8, 2), (0, 3)]
    assert wrapped_runs(23, 4, 10) == [(3, 4)]


def test_tiny_images_300k_reads_contiguous_runs_with_wrap(tmp_path, rng):
    images = rng.integers(0, 256, (50, 32, 32, 3)).astype(np.uint8)
    path = tmp_path / "300K_random_images.npy"
    np.save(path, images)
    pool = load_pool("tiny_images_300k", str(path))
    assert len(pool) == 50
    assert np.array_equal(pool.read(10, 5), images[10:15])
    assert np.array_equal(pool.read(48, 4), images[[48, 49, 0, 1]])


@pytest.mark.parametrize(
    "array", [np.zeros((4, 32, 32), np.uint8), np.zeros((4, 32, 32, 3), np.float32)]
)
def test_tiny_images_300k_wrong_shape_or_dtype_is_one_line(tmp_path, array):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DatasetNotFoundError) as err:
        load_pool("tiny_images_300k", str(path))
    assert "\n" not in str(err.value) and "32 x 32 x 3 uint8" in str(err.value)


def test_missing_pool_file_names_the_flag(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--pool_path"):
        load_pool("tiny_images_300k", str(tmp_path / "none.npy"))


def test_tiny_images_80m_layout_validation_split_and_cifar_exclusion(tmp_path, rng, monkeypatch):
    import atom_tf.data.outlier_pools as pools

    monkeypatch.setattr(pools, "TINY_80M_VALIDATION", 3)
    images = rng.integers(0, 256, (12, 32, 32, 3)).astype(np.uint8)
    # raw file: per image 3×32×32 in Fortran (column-major) order within each channel
    raw = np.stack([im.transpose(2, 1, 0) for im in images])
    (tmp_path / "tiny_images.bin").write_bytes(raw.tobytes())
    np.savetxt(tmp_path / "80mn_cifar_idxs.txt", [6, 8], fmt="%d")  # 1-based: images 5 and 7
    pool = load_pool("tiny_images_80m", str(tmp_path / "tiny_images.bin"))
    expected = images[[3, 4, 6, 8, 9, 10, 11]]  # 0..2 reserved, 5 and 7 excluded
    assert len(pool) == len(expected)
    assert np.array_equal(pool.read(0, len(expected)), expected)
    assert np.array_equal(pool.read(5, 4), expected[[5, 6, 0, 1]])


def test_tiny_images_80m_wrong_size_is_refused(tmp_path):
    (tmp_path / "tiny_images.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DatasetNotFoundError, match="multiple of 3072"):
        load_pool("tiny_images_80m", str(tmp_path / "tiny_images.bin"))


def test_imagenet_rc_crops_come_from_the_source_images(tmp_path, rng):
    source = rng.integers(1, 256, (6, 64, 64, 3)).astype(np.uint8)
    flat = source.transpose(0, 3, 1, 2).reshape(6, -1)
    for b, part in ((1, flat[:4]), (2, flat[4:])):
        with open(tmp_path / f"train_data_batch_{b}", "wb") as f:
            pickle.dump({"data": part, "labels": list(range(len(part)))}, f)
    pool = load_pool("imagenet_rc", str(tmp_path), seed=3)
    crops = pool.read(0, 12)
    assert crops.shape == (12, 32, 32, 3) and crops.dtype == np.uint8
    for i, crop in enumerate(crops):
        padded = np.pad(source[i % 6], ((4, 4), (4, 4), (0, 0)))
        assert any(
            np.array_equal(crop, padded[t : t + 32, s : s + 32])
            for t in range(41)
            for s in range(41)
        )
    assert np.array_equal(crops, load_pool("imagenet_rc", str(tmp_path), seed=3).read(0, 12))


def test_natural_patches_are_deterministic_varied_and_exclude_test_sets():
    import skimage.data as skd

    pool = load_pool("natural_patches", seed=5)
    a = pool.read(1000, 100)  # crosses a block boundary
    assert a.shape == (100, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, load_pool("natural_patches", seed=5).read(1000, 100))
    assert np.array_equal(a[30:40], pool.read(1030, 10))
    assert not np.array_equal(a, load_pool("natural_patches", seed=6).read(1000, 100))
    assert a.reshape(100, -1).std(axis=0).mean() > 20  # varied patches
    photos = natural_photographs()
    held_out = [skd.brick(), skd.grass(), skd.gravel()]
    for texture in held_out:
        assert not any(
            p.shape[:2] == texture.shape[:2] and np.array_equal(p[..., 0], texture) for p in photos
        )


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_imagenet_batches_load_arrays_and_refuse_anything_that_would_run(tmp_path, protocol):
    from atom_tf.data.outlier_pools import read_imagenet_batch

    data = np.arange(2 * 12288, dtype=np.int64).astype(np.uint8).reshape(2, 12288)
    good = tmp_path / "train_data_batch_1"
    with open(good, "wb") as f:
        pickle.dump({"data": data, "labels": [1, 2], "mean": np.zeros(3)}, f, protocol=protocol)
    assert np.array_equal(read_imagenet_batch(str(good))["data"], data)
    marker = tmp_path / "it_ran"
    bad = tmp_path / "train_data_batch_2"
    with open(bad, "wb") as f:
        pickle.dump({"data": _Marker(marker)}, f, protocol=protocol)
    with pytest.raises(DatasetNotFoundError, match=r"asks to call posix\.system.*nothing in it"):
        read_imagenet_batch(str(bad))
    assert not marker.exists()
    (tmp_path / "train_data_batch_3").write_bytes(b"\x80\x04truncated")
    with pytest.raises(DatasetNotFoundError, match="not an Imagenet64 batch file"):
        read_imagenet_batch(str(tmp_path / "train_data_batch_3"))
