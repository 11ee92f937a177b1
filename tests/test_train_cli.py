"""bin/train.py as a user runs it: one-line errors, and a killed run that resumes exactly."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.conftest import REPO

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


def weights(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(
            lambda name, d: out.__setitem__(name, np.asarray(d)) if hasattr(d, "shape") else None
        )
    return out


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

    a, b = weights(straight / "network.weights.h5"), weights(resumed / "network.weights.h5")
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert np.array_equal(a[name], b[name]), name
