"""The imagecorruptions compatibility layer (atom_tf/corruptions/reference.py): importable
without setuptools' pkg_resources, and leaving no stand-in behind for other code."""

import subprocess
import sys

from tests.conftest import REPO

WITHOUT_PKG_RESOURCES = r"""
import importlib.abc, sys

class NoPkgResources(importlib.abc.MetaPathFinder):  # as where setuptools >= 81 is installed
    def find_spec(self, name, path=None, target=None):
        if name == "pkg_resources":
            raise ModuleNotFoundError("No module named 'pkg_resources'")

sys.meta_path.insert(0, NoPkgResources())
import numpy as np
from atom_tf.corruptions.reference import frost_photograph_paths, reference_corrupt
assert len(frost_photograph_paths()) == 6  # before the reference is imported
image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
assert reference_corrupt(image, "frost", 3).shape == (32, 32, 3)
assert "pkg_resources" not in sys.modules  # pytest's monkeypatch takes one there for the real one
print("ok")
"""


def test_the_reference_runs_without_pkg_resources_and_leaves_none_behind():
    result = subprocess.run([sys.executable, "-c", WITHOUT_PKG_RESOURCES], cwd=REPO,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
