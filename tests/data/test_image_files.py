"""Image-file datasets: folders and zips in Keras' layout, the decode cache, one-line errors."""

import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from atom_tf.data import image_files, load_in_distribution, load_pool
from atom_tf.data.image_files import CACHE_FORMAT, resize_short_side_center_crop, source_label
from atom_tf.data.ood_sets import load_ood_set, ood_set_label
from atom_tf.data.outlier_pools import pool_validation_size
from atom_tf.errors import DatasetNotFoundError
from tests.conftest import REPO

CLASSES = ("bird", "cat", "deer")


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))  # RGB -> BGR file


def make_classification(root, rng, per_class=(4, 2), shapes=((32, 32), (40, 56))):
    """PNG images (lossless) of two sizes; returns {split: [(class index, RGB array)]}."""
    made = {}
    for split, count in zip(("train", "test"), per_class, strict=True):
        made[split] = []
        for c, name in enumerate(CLASSES):
            for i in range(count):
                h, w = shapes[i % len(shapes)]
                image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                write_image(root / split / name / f"{i:03d}.png", image)
                made[split].append((c, image))
    return made


def zip_folder(folder, path, top=""):
    with zipfile.ZipFile(path, "w") as z:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, top + os.path.relpath(full, folder))
    return path


def test_classification_from_folder_and_zip(tmp_path, rng):
    made = make_classification(tmp_path / "set", rng)
    folder = load_in_distribution(f"images:{tmp_path / 'set'}")
    archive = zip_folder(tmp_path / "set", tmp_path / "set.zip", top="set/")  # one top folder
    zipped = load_in_distribution(f"images:{archive}")
    for data in (folder, zipped):
        assert data.num_classes == 3 and data.augment
        assert data.x_train.shape == (12, 32, 32, 3) and data.x_test.shape == (6, 32, 32, 3)
        for split in ("train", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            assert y.tolist() == [c for c, _ in made[split]]  # sorted class folders
            for got, (_, image) in zip(x, made[split], strict=True):
                assert np.array_equal(got, resize_short_side_center_crop(image, 32))
    assert np.array_equal(folder.x_train, zipped.x_train)
    mean, std = folder.normalization
    pixels = folder.x_train.reshape(-1, 3) / 255.0
    assert np.allclose(mean, pixels.mean(0)) and np.allclose(std, pixels.std(0))
    assert source_label(f"images:{archive}") == "set"


def test_second_load_reads_the_cache_and_a_changed_source_is_decoded_again(
    tmp_path, rng, monkeypatch
):
    make_classification(tmp_path / "set", rng)
    archive = zip_folder(tmp_path / "set", tmp_path / "set.zip")
    first = load_in_distribution(f"images:{archive}")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(image_files, "decode_images", no_decoding)
    again = load_in_distribution(f"images:{archive}")
    assert np.array_equal(first.x_train, again.x_train)
    os.utime(archive, ns=(1, 1))  # a different modification time: another source
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_in_distribution(f"images:{archive}")


def test_a_cache_from_another_version_or_damaged_is_refused(tmp_path, rng):
    make_classification(tmp_path / "set", rng)
    spec = f"images:{tmp_path / 'set'}"
    load_in_distribution(spec)
    (cache,) = [
        os.path.join(os.environ["ATOM_TF_CACHE"], f)
        for f in os.listdir(os.environ["ATOM_TF_CACHE"])
    ]
    with np.load(cache) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["meta"] = np.array(f'{{"format": {CACHE_FORMAT + 1}}}')
    np.savez(cache, **arrays)
    with pytest.raises(DatasetNotFoundError, match=r"another atom_tf version.*delete it"):
        load_in_distribution(spec)
    with open(cache, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(DatasetNotFoundError, match=r"cannot be read.*delete it"):
        load_in_distribution(spec)


def test_layout_errors_name_the_problem(tmp_path, rng):
    with pytest.raises(DatasetNotFoundError, match=r"no folder or \.zip"):
        load_in_distribution(f"images:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="no images"):
        load_in_distribution(f"images:{tmp_path / 'empty'}")
    flat = tmp_path / "flat"
    write_image(flat / "a" / "0.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with pytest.raises(DatasetNotFoundError, match="no train/<class>/ or test/<class>/"):
        load_in_distribution(f"images:{zip_folder(flat, tmp_path / 'flat.zip')}")
    make_classification(tmp_path / "differ", rng)
    os.rename(tmp_path / "differ" / "test" / "deer", tmp_path / "differ" / "test" / "elk")
    with pytest.raises(
        DatasetNotFoundError, match=r"only in train: \['deer'\].*only in test: \['elk'\]"
    ):
        load_in_distribution(f"images:{tmp_path / 'differ'}")
    make_classification(tmp_path / "bad", rng)
    (tmp_path / "bad" / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetNotFoundError, match=r"cannot decode .*broken\.jpg"):
        load_in_distribution(f"images:{tmp_path / 'bad'}")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"neither a folder nor a \.zip"):
        load_in_distribution(f"images:{tmp_path / 'plain.txt'}")


def test_pool_serves_random_crops_of_padded_sources_and_holds_out_validation(tmp_path, rng):
    sources = rng.integers(1, 256, (40, 64, 64, 3), dtype=np.uint8)
    for i, image in enumerate(sources):
        write_image(tmp_path / "pool" / f"c{i % 3}" / f"{i:03d}.png", image)
    pool = load_pool("images", str(tmp_path / "pool"), seed=3)
    assert len(pool.order) == 40 - pool_validation_size(40)
    crops = pool.read(0, 2 * len(pool.order))
    assert crops.shape == (72, 32, 32, 3)
    names = sorted(f"c{i % 3}/{i:03d}.png" for i in range(40))  # decoding order: sorted names
    by_name = {f"c{i % 3}/{i:03d}.png": sources[i] for i in range(40)}
    ordered = np.stack([by_name[n] for n in names])
    padded = np.pad(ordered, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for k, crop in enumerate(crops):
        source = padded[pool.order[k % len(pool.order)]]
        windows = np.lib.stride_tricks.sliding_window_view(source, (32, 32, 3))[..., 0, :, :, :]
        assert (windows == crop).all(axis=(-3, -2, -1)).any(), k  # a window of its source
    validation = load_ood_set(f"pool_validation:{tmp_path / 'pool'}")
    assert len(validation) == pool_validation_size(40)
    assert not set(pool.order) & set(np.random.default_rng(0).permutation(40)[: len(validation)])
    assert ood_set_label(f"pool_validation:{tmp_path / 'pool'}") == "pool_validation"


def test_pool_of_32_pixel_images_serves_them_unchanged(tmp_path, rng):
    sources = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    for i, image in enumerate(sources):
        write_image(tmp_path / "small" / f"{i:03d}.png", image)
    pool = load_pool("images", str(tmp_path / "small"))
    served = pool.read(0, len(pool.order))
    assert np.array_equal(served, sources[pool.order])


def test_ood_image_set_from_a_zip(tmp_path, rng):
    images = rng.integers(0, 256, (5, 64, 48, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        write_image(tmp_path / "unseen" / "n01" / f"val_{i}.png", image)
    archive = zip_folder(tmp_path / "unseen", tmp_path / "unseen.zip")
    loaded = load_ood_set(f"images:{archive}")
    assert np.array_equal(loaded, np.stack([resize_short_side_center_crop(i, 32) for i in images]))
    assert ood_set_label(f"images:{archive}") == "unseen"


def test_train_cli_reports_a_bad_image_folder_in_one_line(tmp_path, rng):
    make_classification(tmp_path / "set", rng)
    os.rename(tmp_path / "set" / "test", tmp_path / "set" / "val")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", "train.py"), f"--dataset=images:{tmp_path / 'set'}",
         f"--output_dir={tmp_path / 'run'}", "--verbose=0"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "test/<class>/" in lines[0] and "Traceback" not in result.stderr


def test_formats_opencv_cannot_read_are_decoded_by_pillow(tmp_path, rng):
    from PIL import Image

    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.gif")  # GIF: palette-quantised by Pillow
    expected = np.asarray(Image.open(tmp_path / "a.gif").convert("RGB"))
    assert np.array_equal(load_ood_set(f"images:{tmp_path}"), expected[None])


def test_zip_bombs_and_huge_images_fail_naming_the_file_before_memory_runs_out(tmp_path, rng):
    import struct
    import zlib

    import psutil

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "set/ok.png", cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        )
        archive.writestr("set/huge.png", bytes(image_files.MAX_FILE_BYTES + 1))
    assert bomb.stat().st_size < 1 << 20
    before = psutil.Process().memory_info().rss
    with pytest.raises(
        DatasetNotFoundError, match=r"bomb\.zip:set/huge\.png holds more than 64 MiB"
    ):
        load_ood_set(f"images:{bomb}")
    assert psutil.Process().memory_info().rss - before < 32 << 20
    # a PNG whose header claims 100,000 x 100,000 pixels
    png = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    write_image(tmp_path / "big" / "a.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "big" / "b.png").write_bytes(bytes(png))
    with pytest.raises(
        DatasetNotFoundError, match=r"b\.png is too large to decode \(10,000,000,000 pixels"
    ):
        load_ood_set(f"images:{tmp_path / 'big'}")
