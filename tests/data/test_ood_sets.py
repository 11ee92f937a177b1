import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from atom_tf.data.ood_sets import load_image_folder, load_ood_set, resize_short_side_center_crop
from atom_tf.errors import DatasetNotFoundError


@pytest.mark.parametrize(
    "name", ["letters", "textures", "faces", "gaussian_noise", "uniform_noise"]
)
def test_embedded_sets_need_no_download_and_are_seeded(name):
    a = load_ood_set(name, max_images=50, seed=1)
    assert a.dtype == np.uint8 and a.shape[1:] == (32, 32, 3) and 0 < len(a) <= 50
    assert np.array_equal(a, load_ood_set(name, max_images=50, seed=1))


def test_noise_sets_follow_the_protocol():
    g = load_ood_set("gaussian_noise").astype(float) / 255
    u = load_ood_set("uniform_noise").astype(float) / 255
    assert len(g) == len(u) == 10_000
    # N(0.5, 1) clipped: about 31% of values at each bound
    assert np.mean(g == 0) == pytest.approx(0.3085, abs=0.01) and np.mean(g == 1) == pytest.approx(
        0.3085, abs=0.01
    )
    assert u.mean() == pytest.approx(0.5, abs=0.01) and u.std() == pytest.approx(
        np.sqrt(1 / 12), abs=0.01
    )


def test_textures_come_from_the_held_out_photographs():
    import skimage.data as skd

    textures = load_ood_set("textures")
    assert len(textures) == 1500
    assert np.array_equal(textures[..., 0], textures[..., 1])  # grey photographs
    means = [t.mean() for t in (skd.brick(), skd.grass(), skd.gravel())]
    for i, mean in enumerate(means):  # each third of the set looks like its photograph
        assert textures[500 * i : 500 * (i + 1)].mean() == pytest.approx(mean, abs=12)


def test_letters_are_drawn_in_the_digits_format():
    from atom_tf.data import load_in_distribution

    letters = load_ood_set("letters")
    assert len(letters) == 1000 and np.array_equal(letters[..., 0], letters[..., 2])
    digits = load_in_distribution("digits").x_train

    def look(images):  # brightness, share of background, share of stroke
        return np.array([images.mean() / 255, np.mean(images < 16), np.mean(images > 200)])

    assert np.abs(look(letters) - look(digits)).max() < 0.1
    for other in ("textures", "faces", "gaussian_noise"):  # unlike the other embedded sets
        assert np.abs(look(load_ood_set(other, max_images=500)) - look(digits)).max() > 0.1
    flat_digits = digits.reshape(len(digits), -1)
    assert not (letters.reshape(1000, 1, -1)[:100] == flat_digits[None]).all(-1).any()


def test_folder_loader_resizes_crops_and_reports_bad_files(tmp_path, capsys):
    folder = tmp_path / "iSUN"
    (folder / "sub").mkdir(parents=True)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 200  # the centre 40 columns are bright
    Image.fromarray(wide).save(folder / "a.png")
    Image.fromarray(np.full((64, 48), 90, np.uint8), mode="L").save(folder / "sub" / "b.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    images = load_image_folder(str(folder), "isun")
    assert images.shape == (2, 32, 32, 3)
    assert images[0].min() >= 190  # centre crop of the resized wide image is all bright
    assert abs(int(images[1].mean()) - 90) <= 2  # grey converted to RGB
    out = capsys.readouterr().out
    assert "skipped 1 unreadable" in out and "broken.jpg" in out
    assert load_ood_set("isun", ood_dir=str(tmp_path)).shape == (2, 32, 32, 3)


def test_missing_or_empty_folder_fails_with_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="put its images") as err:
        load_ood_set("places365", ood_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    (tmp_path / "LSUN").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no readable images"):
        load_ood_set("lsun_c", ood_dir=str(tmp_path))


def test_resize_short_side_then_centre_crop():
    image = np.arange(64 * 128, dtype=np.float32).reshape(64, 128) % 255
    out = resize_short_side_center_crop(np.repeat(image[..., None], 3, -1).astype(np.uint8))
    assert out.shape == (32, 32, 3)


def test_tfds_sets_with_mock_data():
    with tfds.testing.mock_data(num_examples=30):
        svhn = load_ood_set("svhn")
        cifar = load_ood_set("cifar10", max_images=10)
    assert svhn.shape[1:] == (32, 32, 3) and len(svhn) == 30  # fewer than 1,000 per class here
    assert cifar.shape == (10, 32, 32, 3)


def test_dtd_with_mock_data_uses_all_three_splits():
    with tfds.testing.mock_data(num_examples=4):
        dtd = load_ood_set("dtd")
    assert dtd.shape == (12, 32, 32, 3) and dtd.dtype == np.uint8


def test_sets_of_one_name_get_distinct_labels():
    from atom_tf.data.ood_sets import unique_labels

    assert unique_labels(["images:/x/a/set", "images:/y/b/set", "faces"]) == [
        "a/set",
        "b/set",
        "faces",
    ]
    assert unique_labels(["images:/x/a/set", "images:/y/a/set"]) == ["a/set", "a/set#2"]
    assert unique_labels(["images:/x/a/set.zip", "letters"]) == ["set", "letters"]
