"""Batch detection (atom_tf/evaluation/detect.py) through bin/detect.py as a user runs it: a
folder with a corrupt file, a zip, a glob, an empty folder, a wrong model path."""

import csv
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import atom_tf
from atom_tf.data import load_in_distribution
from atom_tf.data.ood_sets import load_ood_set
from atom_tf.training.trainer import TrainConfig, train
from tests.conftest import REPO
from tests.data.test_image_files import write_image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(TrainConfig(method="atom", dataset="digits", model="small_cnn", epochs=2,
                      num_candidates=512, num_selected=256, lr_decay_epochs=(1,),
                      jit_compile=False, seed=3), str(path), verbose=0)  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 digits test images (48×48, upsampled: other sizes are resized), 8 letters, one
    corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    digits = load_in_distribution("digits").x_test[:12]
    for i, image in enumerate(digits):
        write_image(
            root / "digits" / f"{i:02d}.png", np.repeat(np.repeat(image, 3, 0), 3, 1)[:48, :48]
        )
    for i, image in enumerate(load_ood_set("letters", max_images=8)):
        write_image(root / "letters" / f"{i}.png", image)
    (root / "letters" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def detect(argv, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "detect.py"), "--progress=false",
                           *argv], cwd=cwd, capture_output=True, text=True, timeout=600)  # fmt: skip


def test_a_folder_is_detected_and_a_corrupt_file_skipped(run_dir, folder, tmp_path):
    out = tmp_path / "detections.csv"
    result = detect([f"--model={run_dir}", f"--images={folder}", f"--output={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: cannot decode letters/broken.png; skipped" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20 and {r["file"] for r in rows} >= {"digits/00.png", "letters/0.png"}
    summary = json.loads((tmp_path / "detections.csv.summary.json").read_text())
    assert summary["images"] == 20 and summary["skipped"] == ["letters/broken.png"]
    accepted = [r for r in rows if r["accepted"] == "True"]
    assert summary["accepted"] == len(accepted)
    assert f"20 images from {folder}" in result.stdout and "1 unreadable skipped" in result.stdout
    # the same decisions as the library gives for the same (resized) images
    detector = atom_tf.load_detector(run_dir)
    digits = [r for r in rows if r["file"].startswith("digits/")]
    assert all(r["class_name"] == r["label"] for r in digits)  # digits' classes are named 0-9
    images = np.stack([load_in_distribution("digits").x_test[int(r["file"][7:9])] for r in digits])
    scores = detector.score(np.repeat(np.repeat(images, 3, 1), 3, 2)[:, :48, :48], resize=True)
    np.testing.assert_allclose([float(r["score"]) for r in digits], scores, rtol=0, atol=1e-5)


def test_a_zip_and_a_glob_give_the_same_rows_as_jsonl(run_dir, folder, tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((folder / "digits").iterdir()):
            z.write(f, f"digits/{f.name}")
    zipped = detect([f"--model={run_dir}", f"--images={archive}",
                     f"--output={tmp_path / 'z.jsonl'}"], tmp_path)  # fmt: skip
    globbed = detect([f"--model={run_dir}", f"--images={folder}/digits/*.png",
                      f"--output={tmp_path / 'g.jsonl'}"], tmp_path)  # fmt: skip
    assert zipped.returncode == 0 and globbed.returncode == 0, zipped.stderr[-2000:]
    z = [json.loads(line) for line in (tmp_path / "z.jsonl").read_text().splitlines()]
    g = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert len(z) == len(g) == 12
    assert [r["score"] for r in z] == [r["score"] for r in g]
    assert set(z[0]) == {"file", "label", "class_name", "score", "accepted"}


def test_mistakes_are_one_error_line_with_status_2(run_dir, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ([f"--model={run_dir}", f"--images={tmp_path / 'empty'}"], "no images"),
        ([f"--model={tmp_path / 'nowhere'}", f"--images={folder}"], "neither a training run"),
        ([f"--model={folder}", f"--images={folder}"], "neither a training run"),
        ([f"--model={run_dir}", f"--images={folder}", "--output=d.txt"], ".csv or .jsonl"),
        ([f"--model={run_dir}", f"--images={tmp_path}/*.jpg"], "no image files match"),
    ]  # fmt: skip
    for argv, needle in cases:
        result = detect([*argv], tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert lines[-1].startswith("error:") and needle in lines[-1], lines[-1]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "detections.csv").exists()
