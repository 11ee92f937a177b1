"""tfds's download-and-prepare path works offline on local files, and its failures are named."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from atom_tf.data.in_distribution import prepared_builder, tfds_images
from atom_tf.errors import DatasetNotFoundError


class AtomTfLocalTiny(tfds.core.GeneratorBasedBuilder):
    """Eight images generated locally: preparing it runs tfds's whole download_and_prepare."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(32, 32, 3)),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "test": self._generate_examples(4)}

    def _generate_examples(self, count):
        rng = np.random.default_rng(count)
        for i in range(count):
            yield i, {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": i % 2}


def test_download_and_prepare_runs_offline_and_the_images_load(tmp_path):
    builder = prepared_builder("atom_tf_local_tiny", str(tmp_path), download=True)
    assert builder.is_prepared()
    images, labels = tfds_images("atom_tf_local_tiny", "train", str(tmp_path), download=False)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert (
        labels.tolist() == [i % 2 for i in range(8)] or sorted(labels.tolist()) == [0] * 4 + [1] * 4
    )


def test_a_failed_download_names_the_real_cause(tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'some_dependency'")

    monkeypatch.setattr(AtomTfLocalTiny, "download_and_prepare", broken)
    with pytest.raises(
        DatasetNotFoundError, match=r"ModuleNotFoundError: No module named 'some_dependency'"
    ):
        prepared_builder("atom_tf_local_tiny", str(tmp_path), download=True)


def test_the_download_path_of_a_shipped_builder_imports():
    # download_and_prepare reads the builder's checksums next to its code: tfds finds that
    # code through importlib_resources (a dependency it does not declare)
    assert tfds.builder_cls("cifar10").code_path.suffix == ".py"
