"""Exports (atom_tf/evaluation/export.py): each format, loaded in a fresh process without
atom_tf, gives the detector's scores and decisions; bin/export.py as a user runs it."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import atom_tf
from atom_tf.data import load_in_distribution
from atom_tf.data.ood_sets import load_ood_set
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.export import FORMATS, OUTPUTS, export_detector
from atom_tf.training.trainer import TrainConfig, read_run_config, train
from tests.conftest import REPO
from tests.data.test_image_files import write_image

HERE = os.path.dirname(os.path.abspath(__file__))
# LiteRT and ONNX Runtime have kernels of their own: scores agree to this, not to the bit
TOLERANCE = {"saved_model": 1e-5, "litert": 1e-4, "onnx": 1e-4}
FAST = dict(model="small_cnn", epochs=2, num_candidates=512, num_selected=256,
            lr_decay_epochs=(1,), jit_compile=False, seed=3)  # fmt: skip


def cifar_shaped(root) -> str:
    """A CIFAR-shaped image-folder dataset (normalised by its own mean and std, cropped and
    flipped in training, named classes) and a pool: 32×32 RGB files."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 48), ("test", 40)):
        for c, name in enumerate(("left", "right")):
            for i in range(count):
                image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
                image[:, 16 * c : 16 * c + 16] += 150
                write_image(root / "set" / split / name / f"{i}.png", image)
    for i in range(64):
        write_image(root / "pool" / f"{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return str(root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    digits = tmp_path_factory.mktemp("digits")
    train(TrainConfig(method="atom", dataset="digits", **FAST), str(digits), verbose=0)
    root = tmp_path_factory.mktemp("cifar_shaped")
    cifar_shaped(root)
    cifar = root / "run"
    train(TrainConfig(method="oe", dataset=f"images:{root / 'set'}", pool="images",
                      pool_path=str(root / "pool"), in_batch=16, out_batch=16,
                      **{**FAST, "num_candidates": 64, "num_selected": 64}),
          str(cifar), verbose=0)  # fmt: skip
    return {"digits": (str(digits), "letters"), "cifar_shaped": (str(cifar), "gaussian_noise")}


@pytest.mark.parametrize("name", ["digits", "cifar_shaped"])
def test_every_format_runs_without_atom_tf_and_decides_as_the_detector(runs, name, tmp_path):
    run_dir, ood_set = runs[name]
    detector, config = atom_tf.load_detector(run_dir), read_run_config(run_dir)
    data = load_in_distribution(config["dataset"])
    ood = load_ood_set(ood_set, max_images=100)
    images = np.concatenate([data.x_test, ood]).astype(np.float32) / 255
    expected = detector.score(images)
    paths = {}
    for fmt in FORMATS:
        record = detector.export(str(tmp_path / fmt), fmt, {"class_names": data.names()})
        assert record["threshold"] == detector.threshold and record["bytes"] > 10_000
        paths[fmt] = os.path.join(tmp_path / fmt, record["artefact"])
    np.savez(tmp_path / "images.npz", images=images)
    fresh = subprocess.run(
        [sys.executable, os.path.join(HERE, "export_runtimes.py"), str(tmp_path / "images.npz"),
         str(tmp_path / "out.npz"), *(f"{fmt}={path}" for fmt, path in paths.items())],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    n_in = len(data.x_test)
    labels = detector.classify(images)
    for fmt in FORMATS:
        scores, accepted = out[f"{fmt}_score"], out[f"{fmt}_accepted"]
        np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE[fmt], err_msg=fmt)
        clear = np.abs(expected - detector.threshold) > TOLERANCE[fmt]  # not on the threshold
        assert clear.mean() > 0.9
        assert np.array_equal(accepted[clear], (expected >= detector.threshold)[clear]), fmt
        # the exported threshold accepts 95 % of the in-distribution test set, to one image
        assert abs(int(accepted[:n_in].sum()) - 0.95 * n_in) <= 1, fmt
        assert np.array_equal(out[f"{fmt}_label"], labels), fmt
        probabilities = out[f"{fmt}_probabilities"]
        assert probabilities.shape == (len(images), detector.num_classes)
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # uint8 in, divided by 255 inside: the same images (to the rounding of that division)
    np.testing.assert_allclose(out["saved_model_uint8_score"][:n_in], out["saved_model_score"][:n_in],
                               rtol=0, atol=1e-6)  # fmt: skip


def test_the_saved_model_serves_the_named_outputs_and_loads_back(runs, tmp_path):
    run_dir, _ = runs["digits"]
    detector = atom_tf.load_detector(run_dir)
    detector.export(str(tmp_path / "sm"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(tmp_path / "sm" / "saved_model"),
                            "--tag_set", "serve", "--signature_def", "serving_default"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    for output in OUTPUTS:
        assert f"outputs['{output}']" in shown.stdout
    assert "inputs['images'] tensor_info:\n      dtype: DT_FLOAT\n      shape: (-1, 32, 32, 3)" in (
        shown.stdout
    )
    exported = atom_tf.load_detector(str(tmp_path / "sm"))
    x = load_in_distribution("digits").x_test
    np.testing.assert_allclose(exported.score(x), detector.score(x), rtol=0, atol=1e-5)
    assert exported.threshold == detector.threshold
    assert exported.score(x[:0]).shape == (0,)
    with pytest.raises(InvalidConfigError, match="is an export"):
        atom_tf.load_detector(str(tmp_path / "sm"), scorer="msp")


def test_a_gradient_scorer_exports_only_as_a_saved_model(runs, tmp_path):
    run_dir, _ = runs["digits"]
    odin = atom_tf.load_detector(run_dir, scorer="odin", scorer_options={"epsilon": 0.002})
    for fmt in ("litert", "onnx"):
        with pytest.raises(InvalidConfigError, match="export it with --format=saved_model"):
            export_detector(odin, str(tmp_path / fmt), fmt)
    export_detector(odin, str(tmp_path / "sm"))
    x = load_in_distribution("digits").x_test[:64]
    exported = atom_tf.load_detector(str(tmp_path / "sm"))
    np.testing.assert_allclose(exported.score(x), odin.score(x), rtol=0, atol=1e-5)


def run_export(argv, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "export.py"), *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_export_command_writes_checks_and_refuses_in_one_line(runs, tmp_path):
    run_dir, _ = runs["digits"]
    out = tmp_path / "onnx"
    done = run_export([f"--checkpoint={run_dir}", "--format=onnx", f"--output={out}",
                       "--tpr=0.9"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # the threshold is one test image's score, which the ONNX runtime may round to either side
    share = re.search(
        r"check: the artefact accepts ([\d.]+) % of the 360 in-distribution", done.stdout
    )
    assert share and abs(float(share.group(1)) * 3.6 - 324) < 1.05, done.stdout  # 2 decimals
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["tpr"] == 0.9 and metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["scorer"]["name"] == "kplus1" and metadata["run"]["method"] == "atom"
    assert {"tensorflow", "keras", "atom_tf", "tf2onnx"} <= set(metadata["versions"])
    cases = [
        ([f"--checkpoint={run_dir}", "--format=onnx", f"--output={out}"], "is not empty"),
        ([f"--checkpoint={run_dir}", "--format=litert", "--scorer=odin", f"--output={tmp_path / 'x'}"],
         "export it with --format=saved_model"),
        ([f"--checkpoint={tmp_path / 'nothing'}", f"--output={tmp_path / 'y'}"], "nothing"),
        ([f"--checkpoint={run_dir}", f"--output={tmp_path / 'z'}", "--tpr=1.5"], "--tpr must lie"),
    ]  # fmt: skip
    for argv, needle in cases:
        result = run_export(argv, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and lines[-1].startswith("error:") and needle in lines[-1]
        assert "Traceback" not in result.stderr
