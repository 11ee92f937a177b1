import numpy as np

from atom_tf.data.augment import random_crop_flip, seed_for


def test_each_output_is_a_window_of_the_padded_image_or_its_mirror(rng):
    images = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    out = random_crop_flip(images, seed_for(1, 2)).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for i in range(len(images)):
        windows = [
            (padded[i, t : t + 32, s : s + 32], flipped)
            for t in range(9)
            for s in range(9)
            for flipped in (False, True)
        ]
        matches = [f for w, f in windows if np.array_equal(out[i], w[:, ::-1] if f else w)]
        assert matches, f"image {i} is not a crop of its padded copy"
        flips += matches[0]
    assert 0 < flips < len(images)  # both flipped and unflipped occur


def test_same_seed_same_batch_and_other_seed_differs(rng):
    images = rng.integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    a = random_crop_flip(images, seed_for(7)).numpy()
    b = random_crop_flip(images, seed_for(7)).numpy()
    c = random_crop_flip(images, seed_for(8)).numpy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seed_for_is_deterministic_and_distinguishes_parts():
    assert np.array_equal(seed_for(1, 2, 3), seed_for(1, 2, 3))
    assert not np.array_equal(seed_for(1, 2, 3), seed_for(1, 3, 2))
