import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import atom_tf  # noqa: F401  (first: it chooses the CPU kernels before TensorFlow is imported)

# isort: split
import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    """Image-file caches of each test go to a fresh folder, never to the user's cache."""
    monkeypatch.setenv("ATOM_TF_CACHE", str(tmp_path_factory.mktemp("image_cache")))
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
