"""The shipped detectors (atom_tf/pretrained.py): each loads by name and gives its
recorded test accuracy on its test set to 0.1 points; the package copy is never written."""

import json
import os

import numpy as np
import pytest

import atom_tf
from atom_tf.errors import InvalidConfigError
from atom_tf.pretrained import HERE, pretrained_names, resolve_run
from tests.conftest import REPO


def recorded(name: str) -> dict:
    with open(os.path.join(HERE, name, "summary.json")) as f:
        return json.load(f)


def test_the_shipped_detectors_are_small_and_named():
    assert pretrained_names() == [
        "cifar10_cpu_atom", "cifar10_cpu_atom_trades", "cifar10_cpu_atom_trades_ema",
        "cifar10_cpu_atom_trades_wise", "cifar10_cpu_ntom", "cifar10_cpu_oe", "digits_atom",
    ]  # fmt: skip
    for name in pretrained_names():
        assert os.path.getsize(os.path.join(HERE, name, "network.weights.h5")) <= 2 << 20


@pytest.mark.parametrize("name", pretrained_names())  # the list the test above fixes
def test_a_shipped_detector_reproduces_its_test_accuracy(name, monkeypatch):
    with open(os.path.join(HERE, name, "config.json")) as f:
        dataset = json.load(f)["dataset"]
    if dataset.startswith("images:"):  # CIFAR-10 as image files: the data link (README)
        if not os.path.exists(os.path.join(REPO, dataset.removeprefix("images:"))):
            pytest.skip(f"{dataset} is not on this machine (README: Getting the data)")
        monkeypatch.chdir(REPO)
    before = {
        f: os.path.getmtime(os.path.join(HERE, name, f))
        for f in os.listdir(os.path.join(HERE, name))
    }
    detector = atom_tf.load_detector(f"pretrained:{name}")
    from atom_tf.data import load_in_distribution

    data = load_in_distribution(dataset)
    accuracy = 100 * np.mean(detector.classify(data.x_test) == data.y_test)
    assert accuracy == pytest.approx(100 * recorded(name)["test_accuracy"], abs=0.1)
    assert abs(detector.predict(data.x_test)[0].mean() - 0.95) <= 1 / len(data.x_test)
    after = {
        f: os.path.getmtime(os.path.join(HERE, name, f))
        for f in os.listdir(os.path.join(HERE, name))
    }
    assert after == before  # thresholds go to the cached copy


def test_a_changed_copy_is_replaced_and_an_unknown_name_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ATOM_TF_CACHE", str(tmp_path))
    copy = resolve_run("pretrained:digits_atom")
    assert copy == str(tmp_path / "pretrained" / "digits_atom")
    with open(os.path.join(copy, "network.weights.h5"), "r+b") as f:
        f.truncate(1000)
    (tmp_path / "pretrained" / "digits_atom" / "threshold_kplus1.json").write_text("{}")
    assert resolve_run("pretrained:digits_atom") == copy
    assert os.path.getsize(os.path.join(copy, "network.weights.h5")) == os.path.getsize(
        os.path.join(HERE, "digits_atom", "network.weights.h5")
    )
    assert not os.path.exists(os.path.join(copy, "threshold_kplus1.json"))
    with pytest.raises(
        InvalidConfigError,
        match="choose one of cifar10_cpu_atom, cifar10_cpu_atom_trades, cifar10_cpu_atom_trades_ema, "
        "cifar10_cpu_atom_trades_wise, cifar10_cpu_ntom, cifar10_cpu_oe, digits_atom",
    ):
        resolve_run("pretrained:nothing")
    assert resolve_run("runs/x") == "runs/x"


def test_a_run_can_start_from_a_shipped_detector(tmp_path, monkeypatch):
    """--init_from=pretrained:NAME copies the shipped network (here into atom_trades', which
    fine-tunes ATOM's); an unknown name is refused before any data is loaded."""
    from atom_tf.data import load_in_distribution
    from atom_tf.training.checkpoint import load_weights_checked
    from atom_tf.training.methods import method_for
    from atom_tf.training.networks import build_network, initialise_from_run
    from atom_tf.training.trainer import TrainConfig, validate_config

    monkeypatch.setenv("ATOM_TF_CACHE", str(tmp_path))
    with open(os.path.join(HERE, "digits_atom", "config.json")) as f:
        shipped = build_network("small_cnn", method_for(json.load(f)), 10, None)
    load_weights_checked(shipped, os.path.join(HERE, "digits_atom", "network.weights.h5"))
    trades = method_for({"method": "atom_trades"})
    network = build_network("small_cnn", trades, 10, None)
    initialise_from_run(network, trades, 10, None, "pretrained:digits_atom", "digits", "small_cnn")
    images = load_in_distribution("digits").x_test[:8].astype(np.float32) / 255
    np.testing.assert_array_equal(network(images), shipped(images))
    validate_config(TrainConfig(method="atom_trades", init_from="pretrained:digits_atom"))
    with pytest.raises(InvalidConfigError, match="no pretrained detector 'nope'; choose one of"):
        validate_config(TrainConfig(method="atom_trades", init_from="pretrained:nope"))
    with pytest.raises(InvalidConfigError, match="pretrained:digits_atom trained small_cnn on"):
        initialise_from_run(
            network, trades, 10, None, "pretrained:digits_atom", "digits", "wrn_40_2"
        )
