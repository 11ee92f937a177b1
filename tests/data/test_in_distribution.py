import numpy as np
import pytest
import tensorflow_datasets as tfds

from atom_tf.data import load_in_distribution
from atom_tf.errors import DatasetNotFoundError, InvalidConfigError


def test_digits_is_real_stratified_and_fixed():
    data = load_in_distribution("digits")
    assert data.x_train.shape == (1437, 32, 32, 3) and data.x_test.shape == (360, 32, 32, 3)
    assert data.x_train.dtype == np.uint8 and data.num_classes == 10
    # stratified: every class keeps its share (±1 image) in the test split
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    # grey digits replicated over RGB, with real ink (not blank)
    assert np.array_equal(data.x_train[..., 0], data.x_train[..., 2])
    assert data.x_train.mean() > 10
    again = load_in_distribution("digits")
    assert np.array_equal(data.x_test, again.x_test)


@pytest.mark.parametrize(
    "name,augment,normalized",
    [("svhn", False, False), ("cifar10", True, True), ("cifar100", True, True)],
)
def test_tfds_datasets_with_mock_data(name, augment, normalized):
    with tfds.testing.mock_data(num_examples=8):
        data = load_in_distribution(name)
    assert data.x_train.shape == (8, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.y_test.shape == (8,)
    assert data.augment is augment
    assert (data.normalization is not None) is normalized


def test_missing_dataset_fails_with_one_actionable_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_in_distribution("cifar10", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert "\n" not in message
    assert "cifar10" in message and str(tmp_path) in message and "--data_dir" in message


def test_unknown_dataset_names_the_choices():
    with pytest.raises(InvalidConfigError, match="digits"):
        load_in_distribution("mnist")
