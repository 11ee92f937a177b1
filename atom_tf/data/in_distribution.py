"""In-distribution datasets: a registry of named loaders returning uint8 32×32×3 arrays.

Images are kept as uint8 in memory (SVHN train is 225 MB) and turned into floats in [0,1]
inside tf.data. `digits` is the embedded default: scikit-learn's 1,797 real handwritten digits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

import numpy as np

from atom_tf.data.image_files import is_image_spec, load_classification, spec_path
from atom_tf.errors import DatasetNotFoundError, describe_cause
from atom_tf.registry import Registry

# CIFAR statistics (docs/protocol.md §7), in [0,1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


@dataclasses.dataclass(frozen=True)
class InDistributionData:
    """Train and test images (uint8, [N, 32, 32, 3]) with integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: bool  # random crop + flip during training (docs/protocol.md §2)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None
    class_names: tuple[str, ...] = ()  # label i's name; empty: the labels' numbers

    def names(self) -> list[str]:
        """The class names, label 0 first (the label numbers where a dataset has none)."""
        return list(self.class_names) or [str(i) for i in range(self.num_classes)]


IN_DISTRIBUTION: Registry[Callable[..., InDistributionData]] = Registry("in-distribution dataset")
register_in_distribution = IN_DISTRIBUTION.register
in_distribution_names = IN_DISTRIBUTION.names


def load_in_distribution(
    name: str, data_dir: str | None = None, download: bool = True
) -> InDistributionData:
    """Loads a registered in-distribution dataset by name, or image files: `images:PATH`
    (a folder or .zip with train/<class>/ and test/<class>/, see atom_tf.data.image_files)."""
    if is_image_spec(name):
        return load_image_files(name)
    return IN_DISTRIBUTION.get(name)(data_dir=data_dir, download=download)


def load_image_files(name: str) -> InDistributionData:
    """Image files (any size, made 32×32), cropped and flipped in training and normalised by
    the training images' own per-channel mean and std."""
    arrays = load_classification(spec_path(name))
    mean, std = tuple(arrays["mean"].tolist()), tuple(arrays["std"].tolist())
    return InDistributionData(
        name,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        len(arrays["classes"]),
        True,
        (mean, std),
        tuple(str(c) for c in arrays["classes"]),
    )


TFDS_DOWNLOAD_RETRIES = 2


@contextlib.contextmanager
def _few_download_retries():
    """tfds retries a failed connection 10 times with exponential backoff: on a machine without
    network it takes 3.5 minutes to say so. Two retries still ride out a brief server error."""
    from tensorflow_datasets.core.download import downloader

    saved, downloader.MAX_RETRIES = downloader.MAX_RETRIES, TFDS_DOWNLOAD_RETRIES
    try:
        yield
    finally:
        downloader.MAX_RETRIES = saved


def prepared_builder(tfds_name: str, data_dir: str | None, download: bool):
    """A tfds builder whose data is on disk (downloaded if allowed), or one actionable line."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir or os.environ.get("TFDS_DATA_DIR"))
    where = builder.data_dir
    hint = (
        "; download it with network access, or pass --data_dir (or set TFDS_DATA_DIR) "
        f"to a directory holding {tfds_name}/"
    )
    if download:
        try:
            with _few_download_retries():
                builder.download_and_prepare()
        except Exception as err:  # tfds raises many types (network, checksum, disk)
            raise DatasetNotFoundError(
                f"dataset {tfds_name!r} is not in {where} and could not be downloaded "
                f"({describe_cause(err)}){hint}"
            ) from err
    elif not builder.is_prepared():
        raise DatasetNotFoundError(
            f"dataset {tfds_name!r} is not in {where} and downloading is off{hint}"
        )
    return builder


def tfds_images(
    tfds_name: str,
    split: str,
    data_dir: str | None,
    download: bool,
    label_key: str | None = "label",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads a whole tfds split into uint8 numpy arrays."""
    import tensorflow_datasets as tfds

    builder = prepared_builder(tfds_name, data_dir, download)
    images, labels = [], []
    for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(4096)):
        images.append(np.asarray(batch["image"], dtype=np.uint8))
        if label_key is not None:
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), (np.concatenate(labels) if label_key is not None else None)


def _tfds_in_distribution(
    name: str, tfds_name: str, num_classes: int, augment: bool, normalize: bool
) -> Callable[..., InDistributionData]:
    def load(data_dir: str | None = None, download: bool = True) -> InDistributionData:
        x_train, y_train = tfds_images(tfds_name, "train", data_dir, download)
        x_test, y_test = tfds_images(tfds_name, "test", data_dir, download)
        label = prepared_builder(tfds_name, data_dir, download).info.features["label"]
        return InDistributionData(
            name,
            x_train,
            y_train,
            x_test,
            y_test,
            num_classes,
            augment,
            (CIFAR_MEAN, CIFAR_STD) if normalize else None,
            tuple(getattr(label, "names", None) or ()),
        )

    return load


# SVHN: no augmentation, no normalisation (docs/protocol.md §2, §7).
register_in_distribution("svhn")(_tfds_in_distribution("svhn", "svhn_cropped", 10, False, False))
register_in_distribution("cifar10")(_tfds_in_distribution("cifar10", "cifar10", 10, True, True))
register_in_distribution("cifar100")(_tfds_in_distribution("cifar100", "cifar100", 100, True, True))


def upsample_gray_to_rgb32(images: np.ndarray) -> np.ndarray:
    """[N, h, w] grey values in [0,1] -> [N, 32, 32, 3] uint8 by bilinear (antialiased) resize."""
    import tensorflow as tf

    resized = tf.image.resize(images[..., None].astype(np.float32), (32, 32), antialias=True)
    rgb = np.repeat(np.clip(resized.numpy(), 0.0, 1.0), 3, axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


@register_in_distribution("digits")
def load_digits(data_dir: str | None = None, download: bool = True) -> InDistributionData:
    """scikit-learn's 1,797 handwritten digits (8×8, 0..16), upsampled to 32×32 RGB.

    Fixed stratified split (seed 0): 1,437 train / 360 test images. No download needed.
    """
    del data_dir, download
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = upsample_gray_to_rgb32(digits.images / 16.0)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return InDistributionData("digits", x_train, y_train, x_test, y_test, 10, False, None)
