"""The entry points start quietly: no TensorFlow start-up lines, user errors in one line."""

import os
import subprocess
import sys

from atom_tf.cli import STARTUP_NOISE
from tests.conftest import REPO


def test_startup_noise_pattern_matches_only_startup_noise():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796012346.388988    7527 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796012346.389637    7527 cudart_stub.cc:31] Could not find cuda drivers",
        "E0000 00:00:1796012350.009086    7527 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    ]
    kept = [
        "E0000 00:00:1796012350.009086    7527 some_op.cc:52] real error",
        "W0000 00:00:1796012350.009086    7527 allocator.cc:52] memory warning",
        "error: unknown method 'vos'",
    ]
    assert all(STARTUP_NOISE.match(line) for line in noise)
    assert not any(STARTUP_NOISE.match(line) for line in kept)


def test_a_user_mistake_prints_exactly_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", "train.py"), "--method=vos",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )  # fmt: skip
    assert result.returncode == 2
    from atom_tf.training.methods import method_names

    assert result.stderr.splitlines() == [
        f"error: unknown method 'vos'; choose one of {method_names()}"
    ]
