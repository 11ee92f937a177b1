"""Run and results folders: one process at a time."""

import subprocess
import sys

import pytest

from atom_tf.errors import InvalidConfigError
from atom_tf.training.checkpoint import claim_directory
from tests.conftest import REPO

HOLD = "from atom_tf.training.checkpoint import claim_directory as c; import sys, time; c(sys.argv[1], 'r.json', {}, False, '--x'); print('held', flush=True); time.sleep(60)"


def test_a_folder_in_use_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            InvalidConfigError, match=rf"in use by another process \(pid {holder.pid}\)"
        ):
            claim_directory(str(tmp_path / "run"), "r.json", {}, False, "--x")
    finally:
        holder.kill()
        holder.wait()
    claim_directory(str(tmp_path / "run"), "r.json", {}, False, "--x")  # free again
    claim_directory(str(tmp_path / "run"), "r.json", {}, False, "--x")  # this process holds it
