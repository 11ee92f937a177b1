"""Informative outlier mining (Algorithm 1, docs/protocol.md §3) and its Keras callback.

Each epoch: draw N candidates (a contiguous run from a random offset of the pool, each
augmented once), score v = F(x)_{K+1} with the current model in inference mode, sort
ascending and keep the window [qN, qN + n). Candidates stream through in chunks: pass 1
scores them (N floats kept), pass 2 re-reads and re-augments the same chunks (deterministic)
and keeps the selected ones, so memory is O(n) images, not O(N).
"""

from __future__ import annotations

import dataclasses
import enum
import time
import zlib
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from atom_tf.attacks.objectives import Objective, ood_probability
from atom_tf.batching import map_batches
from atom_tf.data.augment import random_crop_flip, seed_for
from atom_tf.data.outlier_pools import OutlierPool
from atom_tf.distribution import across_replicas
from atom_tf.errors import InvalidConfigError

ScoreFn = Callable[[np.ndarray], np.ndarray]  # uint8 images -> OOD scores


class Selection(enum.StrEnum):
    """How a run selects each epoch's outliers (docs/protocol.md §3)."""

    WINDOW = "window"  # informative mining: the window [qN, qN + n) of ascending OOD scores
    RANDOM = "random"  # n random candidates (the paper's "random sampling" ablation)
    FIXED = "fixed"  # one random sample kept for all epochs (ROWL's background class)
    NONE = "none"  # no outliers (standard training)


def validate_mining(num_candidates: int, num_selected: int, quantile: float) -> None:
    """Fails before any work when N, n or q cannot define a window (q ∈ [0, 1 - n/N])."""
    if num_candidates <= 0 or num_selected <= 0:
        raise InvalidConfigError(
            f"mining needs N > 0 and n > 0 (got N={num_candidates}, n={num_selected})"
        )
    if num_selected > num_candidates:
        raise InvalidConfigError(
            f"mining keeps n={num_selected} of N={num_candidates} candidates: n must be <= N"
        )
    upper = 1.0 - num_selected / num_candidates
    if not 0.0 <= quantile <= upper + 1e-12:
        raise InvalidConfigError(
            f"mining quantile q={quantile} must lie in [0, 1 - n/N] = [0, {upper:.6g}]"
        )


def mine_window(scores: np.ndarray, num_selected: int, quantile: float) -> np.ndarray:
    """Indices of the candidates in the window [qN, qN + n) of the ascending score order."""
    num_candidates = len(scores)
    validate_mining(num_candidates, num_selected, quantile)
    start = min(int(quantile * num_candidates), num_candidates - num_selected)
    return np.argsort(scores, kind="stable")[start : start + num_selected]


def make_ood_scorer(
    model: keras.Model,
    batch_size: int = 512,
    jit_compile: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    ood_score: Objective = ood_probability,
) -> ScoreFn:
    """Batched, compiled OOD scores (F(x)_{K+1}, or the method's `ood_score` of the logits) in
    inference mode; the last batch is padded (one trace). With a `strategy`, each replica of
    every worker scores `batch_size` of each batch."""

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def score(images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32) / 255.0
        return ood_score(model(x, training=False))

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    score_shares = across_replicas(strategy, score)

    def score_all(images: np.ndarray) -> np.ndarray:
        return map_batches(lambda batch, _: score_shares(batch), images, batch_size * replicas)

    return score_all


@dataclasses.dataclass
class MiningResult:
    epoch: int
    images: np.ndarray  # uint8 [n, 32, 32, 3], the outliers to train on this epoch
    candidate_scores: np.ndarray | None  # [N] OOD scores (None for random selection)
    selected_scores: np.ndarray | None  # [n]
    seconds: float
    positions: np.ndarray | None = None  # [n] the kept candidates' positions among the N

    def digest(self) -> int:
        """CRC-32 of the kept positions: equal digests, equal windows (across devices, runs)."""
        return zlib.crc32(np.sort(self.positions).astype(np.int64).tobytes())

    def summary(self) -> dict[str, float]:
        """Per-epoch signals: the selected window's score range and the share of candidates
        with OOD score > 0.9 (the paper's Figure 2 / 5)."""
        if self.candidate_scores is None:
            return {"mining_seconds": self.seconds}
        return {
            "window_score_min": float(self.selected_scores.min()),
            "window_score_max": float(self.selected_scores.max()),
            "window_score_mean": float(self.selected_scores.mean()),
            "share_above_0.9": float(np.mean(self.candidate_scores > 0.9)),
            "mining_seconds": self.seconds,
        }


class OutlierMiner:
    """Draws, scores and selects each epoch's outliers from a pool (Algorithm 1)."""

    def __init__(
        self,
        pool: OutlierPool,
        num_candidates: int,
        num_selected: int,
        quantile: float = 0.0,
        strategy: str = Selection.WINDOW,
        seed: int = 1,
        augment: bool = True,
        chunk: int = 8192,
    ) -> None:
        if strategy not in (Selection.WINDOW, Selection.RANDOM, Selection.FIXED):
            raise InvalidConfigError(
                f"mining strategy must be 'window', 'random' or 'fixed', not {strategy!r}"
            )
        strategy = Selection(strategy)
        validate_mining(num_candidates, num_selected, quantile)
        self.pool, self.strategy, self.seed, self.augment = pool, strategy, seed, augment
        self.num_candidates, self.num_selected, self.quantile = (
            num_candidates,
            num_selected,
            quantile,
        )
        self.chunk = chunk

    def _draw(self, epoch: int) -> int:
        """The epoch whose random draw picks the candidates: 'fixed' keeps epoch 0's for all
        epochs (one pool sample, freshly augmented each epoch: ROWL's background class)."""
        return 0 if self.strategy == Selection.FIXED else epoch

    def candidates(self, epoch: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (first candidate position, uint8 chunk): the epoch's N augmented candidates."""
        rng = np.random.default_rng(seed_for(self.seed, self._draw(epoch), 2))
        offset = int(rng.integers(0, len(self.pool)))
        for first in range(0, self.num_candidates, self.chunk):
            count = min(self.chunk, self.num_candidates - first)
            images = self.pool.read(offset + first, count)
            if self.augment:
                seed = seed_for(self.seed, epoch, 3, first)
                images = random_crop_flip(images, seed).numpy()
            yield first, images

    def select(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Re-draws the epoch's candidates and returns those at `positions` (ascending)."""
        positions = np.sort(positions)
        out = np.empty((len(positions), 32, 32, 3), dtype=np.uint8)
        filled = 0
        for first, images in self.candidates(epoch):
            lo, hi = np.searchsorted(positions, [first, first + len(images)])
            if hi > lo:
                out[filled : filled + hi - lo] = images[positions[lo:hi] - first]
                filled += hi - lo
        return out

    def mine(self, epoch: int, score_fn: ScoreFn | None) -> MiningResult:
        """Selects this epoch's n outliers; `score_fn` is needed for the 'window' strategy."""
        start = time.perf_counter()
        if self.strategy in (Selection.RANDOM, Selection.FIXED):
            rng = np.random.default_rng(seed_for(self.seed, self._draw(epoch), 4))
            positions = rng.choice(self.num_candidates, self.num_selected, replace=False)
            images = self.select(epoch, positions)
            seconds = time.perf_counter() - start
            return MiningResult(epoch, images, None, None, seconds, positions)
        scores = np.empty(self.num_candidates, dtype=np.float32)
        for first, images in self.candidates(epoch):
            scores[first : first + len(images)] = score_fn(images)
        positions = mine_window(scores, self.num_selected, self.quantile)
        images = self.select(epoch, positions)
        selected = scores[np.sort(positions)]
        seconds = time.perf_counter() - start
        return MiningResult(epoch, images, scores, selected, seconds, positions)


class MiningCallback(keras.callbacks.Callback):
    """At the start of every epoch, mines outliers with the current model and installs them
    in the training feed (none without a miner); logs the score histogram and window to
    TensorBoard."""

    def __init__(
        self,
        miner: OutlierMiner | None,
        install: Callable[[int, np.ndarray], None],
        score_fn: ScoreFn | None,
        log_dir: str | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.miner, self.install, self.score_fn, self.verbose = miner, install, score_fn, verbose
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.history: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.miner is None:  # a method trained without outliers
            self.install(epoch, np.zeros((0, 32, 32, 3), np.uint8))
            self.history.append({"epoch": epoch})
            return
        result = self.miner.mine(epoch, self.score_fn)
        self.install(epoch, result.images)
        summary = {"epoch": epoch, **result.summary()}
        digest = {} if result.positions is None else {"window_digest": result.digest()}
        self.history.append({**summary, **digest})
        if self.writer is not None:
            with self.writer.as_default(step=epoch):
                for key, value in summary.items():
                    if key != "epoch":
                        tf.summary.scalar(f"mining/{key}", value)
                if result.candidate_scores is not None:
                    tf.summary.histogram("mining/candidate_ood_scores", result.candidate_scores)
                    tf.summary.histogram("mining/selected_ood_scores", result.selected_scores)
            self.writer.flush()
        if self.verbose:
            line = f"mining epoch {epoch + 1}: kept {len(result.images):,} of {self.miner.num_candidates:,}"
            if result.candidate_scores is not None:
                line += (
                    f", window OOD scores [{summary['window_score_min']:.4f}, "
                    f"{summary['window_score_max']:.4f}], share > 0.9: {summary['share_above_0.9']:.1%}"
                )
            print(f"{line} ({result.seconds:.1f} s)", flush=True)
