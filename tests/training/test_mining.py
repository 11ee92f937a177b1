import numpy as np
import pytest

from atom_tf.data import load_pool
from atom_tf.errors import InvalidConfigError
from atom_tf.training.mining import OutlierMiner, mine_window, validate_mining


def test_mine_window_returns_exactly_the_window_of_ascending_scores(rng):
    scores = rng.permutation(100).astype(np.float32) / 100  # distinct scores 0.00 .. 0.99
    chosen = mine_window(scores, num_selected=20, quantile=0.25)
    assert sorted(scores[chosen].tolist()) == pytest.approx([i / 100 for i in range(25, 45)])
    assert sorted(scores[mine_window(scores, 10, 0.0)].tolist()) == pytest.approx(
        [i / 100 for i in range(10)]
    )
    assert sorted(scores[mine_window(scores, 10, 0.9)].tolist()) == pytest.approx(
        [i / 100 for i in range(90, 100)]
    )


@pytest.mark.parametrize("big_n,n,q", [(10, 11, 0.0), (10, 5, 0.6), (10, 5, -0.1), (0, 0, 0.0)])
def test_invalid_window_fails_before_work(big_n, n, q):
    with pytest.raises(InvalidConfigError):
        validate_mining(big_n, n, q)


def pool_with_brightness(tmp_path, num=64):
    images = np.repeat(
        np.arange(num, dtype=np.uint8)[:, None, None, None] * 3, 32 * 32 * 3
    ).reshape(num, 32, 32, 3)
    np.save(tmp_path / "pool.npy", images)
    return load_pool("tiny_images_300k", str(tmp_path / "pool.npy"))


def mean_brightness_score(images):
    return images.reshape(len(images), -1).mean(axis=1).astype(np.float32) / 255.0


def test_miner_selects_the_window_and_is_deterministic(tmp_path):
    pool = pool_with_brightness(tmp_path)
    miner = OutlierMiner(pool, 40, 10, quantile=0.5, seed=3, augment=False, chunk=16)
    result = miner.mine(epoch=2, score_fn=mean_brightness_score)
    candidates = np.concatenate([c for _, c in miner.candidates(2)])
    expected = np.sort(mean_brightness_score(candidates))[20:30]
    assert np.allclose(np.sort(mean_brightness_score(result.images)), expected)
    assert np.allclose(np.sort(result.selected_scores), expected)
    again = miner.mine(epoch=2, score_fn=mean_brightness_score)
    assert np.array_equal(result.images, again.images)
    other = miner.mine(epoch=3, score_fn=mean_brightness_score)
    assert not np.array_equal(result.candidate_scores, other.candidate_scores)  # new offset


def test_augmented_candidates_are_reproduced_in_the_selection_pass(tmp_path, rng):
    images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    np.save(tmp_path / "pool.npy", images)
    pool = load_pool("tiny_images_300k", str(tmp_path / "pool.npy"))
    miner = OutlierMiner(pool, 48, 12, quantile=0.0, seed=1, augment=True, chunk=10)
    result = miner.mine(0, mean_brightness_score)
    candidates = np.concatenate([c for _, c in miner.candidates(0)])
    order = np.argsort(mean_brightness_score(candidates), kind="stable")[:12]
    assert np.array_equal(np.sort(result.images.reshape(12, -1), axis=0),
                          np.sort(candidates[order].reshape(12, -1), axis=0))  # fmt: skip


def test_random_strategy_needs_no_scores_and_keeps_n(tmp_path):
    miner = OutlierMiner(pool_with_brightness(tmp_path), 40, 10, strategy="random", augment=False)
    result = miner.mine(0, score_fn=None)
    assert result.images.shape == (10, 32, 32, 3) and result.candidate_scores is None
    assert len(np.unique(result.images[:, 0, 0, 0])) == 10


def test_fixed_selection_keeps_one_sample_for_every_epoch(tmp_path):
    """ROWL's background class: the same n pool images each epoch (augmented afresh)."""
    miner = OutlierMiner(pool_with_brightness(tmp_path), 40, 10, strategy="fixed", augment=False)
    first, later = miner.mine(0, None), miner.mine(5, None)
    assert np.array_equal(np.sort(first.positions), np.sort(later.positions))
    assert np.array_equal(first.images, later.images)
    random = OutlierMiner(pool_with_brightness(tmp_path), 40, 10, strategy="random", augment=False)
    assert not np.array_equal(random.mine(0, None).images, random.mine(5, None).images)
