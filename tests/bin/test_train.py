"""bin/train.py as a user runs it: one-line errors, and a killed run that resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import assert_same_weights_file

TRAIN = [sys.executable, os.path.join(REPO, "bin", "train.py")]
FAST = ["--dataset=digits", "--model=small_cnn", "--method=atom", "--epochs=3", "--lr_decay_epochs=2",
        "--num_candidates=1024", "--num_selected=512", "--jit_compile=false", "--deterministic",
        "--verbose=0", "--seed=5"]  # fmt: skip


def run(args, **kw):
    return subprocess.run(TRAIN + args, capture_output=True, text=True, cwd=REPO, timeout=600, **kw)


@pytest.mark.parametrize(
    "args,needle",
    [(["--method=vos"], "unknown method"), (["--dataset=cifar10", "--download=false"], "--data_dir"),
     (["--pool=tiny_images_300k", "--pool_path=/nonexistent.npy"], "--pool_path"),
     (["--num_candidates=10", "--num_selected=20"], "n must be <= N"), (["stray"], "unexpected arguments")],
)  # fmt: skip
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, needle):
    result = run([f"--output_dir={tmp_path / 'run'}", "--data_dir=" + str(tmp_path), *args])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    straight = tmp_path / "straight"
    assert run([f"--output_dir={straight}", *FAST]).returncode == 0

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([*TRAIN, f"--output_dir={resumed}", *FAST], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    latest = resumed / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # into the next epoch: mid-mining or mid-step
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "network.weights.h5").exists()
    result = run([f"--output_dir={resumed}", *FAST])
    assert result.returncode == 0, result.stderr[-2000:]

    # its training time counts the killed process's finished epochs too
    summary = json.loads((resumed / "summary.json").read_text())
    history = [json.loads(line) for line in (resumed / "history.jsonl").read_text().splitlines()]
    assert summary["resumed_from_epoch"] >= 1 and summary["train_seconds_complete"]
    assert summary["train_seconds"] >= sum(h["epoch_seconds"] for h in history) > 0

    assert assert_same_weights_file(straight / "network.weights.h5",
                                    resumed / "network.weights.h5") > 10  # fmt: skip


def offline_env(tmp_path):
    """No network: every HTTP(S) request goes to a port on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({"http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead})
    env["ATOM_TF_DOWNLOADS"] = str(tmp_path / "downloads")
    return env


CIFAR10 = ["--flagfile=configs/cifar10.flags", "--verbose=2"]
# bin/train.py with tfds's mock data standing in for the prepared CIFAR-10 files
MOCKED_TFDS = (
    "import runpy, sys, tensorflow_datasets as tfds; sys.argv[0] = 'bin/train.py'\n"
    "with tfds.testing.mock_data(num_examples=64):\n"
    "    runpy.run_path('bin/train.py', run_name='__main__')\n"
)


@pytest.mark.parametrize("tfds_in_place,needle", [(False, "--data_dir"), (True, "yourself to")])
def test_cifar10_flagfile_without_files_or_network_says_what_to_get(
    tmp_path, tfds_in_place, needle
):
    args = [*CIFAR10, f"--data_dir={tmp_path / 'tfds'}", f"--output_dir={tmp_path / 'run'}"]
    command = [sys.executable, "-c", MOCKED_TFDS, *args] if tfds_in_place else TRAIN + args
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300,
                            env=offline_env(tmp_path))  # fmt: skip
    assert time.time() - start < 60  # no minutes of retries
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], lines
    what = "cifar10" if not tfds_in_place else "300K_random_images.npy"
    assert what in lines[0] and "Traceback" not in result.stderr


def test_cifar10_flagfile_starts_with_stand_in_files(tmp_path):
    env = offline_env(tmp_path)
    os.makedirs(env["ATOM_TF_DOWNLOADS"])
    stand_in = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    np.save(os.path.join(env["ATOM_TF_DOWNLOADS"], "300K_random_images.npy"), stand_in)
    command = [sys.executable, "-c", MOCKED_TFDS, *CIFAR10, f"--output_dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:  # the start line comes once data, pool and model are built
            lines.append(line)
            if line.startswith("training ") or len(lines) > 200:
                break
    finally:
        proc.kill()
        proc.wait()
    start = lines[-1]
    assert start.startswith("training atom on cifar10"), "".join(lines[-20:])
    for part in ("densenet_bc_100", "tiny_images_300k (256 images)", "N = 400,000", "q = 0.125",
                 "100 epochs", "oneDNN "):  # fmt: skip
        assert part in start, start
