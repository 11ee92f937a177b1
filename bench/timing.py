"""Timing helpers shared by the benchmarks (no flags: each script passes its settings)."""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from atom_tf.distribution import precision_policy
from atom_tf.evaluation.scorers import get_scorer
from atom_tf.evaluation.threats import AttackSettings, ThreatContext, make_linf_attack
from atom_tf.models import build_model
from atom_tf.training.methods import get_method
from atom_tf.training.mining import make_ood_scorer
from atom_tf.training.train_step import AttackConfig, RobustOODModel
from atom_tf.training.trainer import sgd_optimizer


def best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn`, after one untimed call (tracing)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def network(model: str, precision: str = "float32", num_outputs: int = 11) -> keras.Model:
    keras.utils.set_random_seed(0)
    with precision_policy(precision):
        return build_model(model, num_outputs)


def train_step_model(
    model: str, method: str, jit: bool, precision: str = "float32", in_batch: int = 64,
    out_batch: int = 128, train_attack: str = "pgd", ema_momentum: float = 0.0,
) -> tuple[RobustOODModel, tf.data.Dataset]:  # fmt: skip
    """A compiled training model of `method` on a fresh `model` network and an endless feed of
    one random batch (in_batch + out_batch; ATOM: PGD-5 on half the outliers;
    `train_attack="fgsm_rs"`: FGSM with a random start instead; `ema_momentum` > 0: the
    weights averaged, as --ema_momentum)."""
    m = get_method(method)
    optimizer = sgd_optimizer(0.1, ema_momentum=ema_momentum, precision=precision)
    model_ = RobustOODModel(network(model, precision, m.num_outputs(10)), m, 10,
                            attack=AttackConfig(kind=train_attack))  # fmt: skip
    model_.compile(optimizer=optimizer, jit_compile=jit)
    rng = np.random.default_rng(0)
    batch = (
        rng.random((in_batch, 32, 32, 3), np.float32),
        rng.integers(0, 10, in_batch),
        rng.random((out_batch, 32, 32, 3), np.float32),
    )
    return model_, tf.data.Dataset.from_tensors(batch).repeat()


def train_step_seconds(
    model: str, method: str, jit: bool, steps: int, precision: str = "float32",
    in_batch: int = 64, out_batch: int = 128, train_attack: str = "pgd",
    ema_momentum: float = 0.0,
) -> float:  # fmt: skip
    """Median seconds of one training step of `train_step_model`, timed between batch ends
    inside one fit call after a compiling warm-up step."""
    model_, data = train_step_model(model, method, jit, precision, in_batch, out_batch,
                                    train_attack, ema_momentum)  # fmt: skip
    return float(np.median(fit_step_seconds(model_, data, steps)))


def fit_step_seconds(model_: keras.Model, data: tf.data.Dataset, steps: int) -> list[float]:
    """Seconds of each of `steps` training steps of one fit call, timed between batch ends
    after a first (compiling) step."""
    stamps: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs=None: stamps.append(time.perf_counter())
    )
    model_.fit(data, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer])
    return [float(t) for t in np.diff(stamps)]


def scoring_rate(
    model: str, images: int, jit: bool, precision: str = "float32", batch_size: int = 512
) -> float:
    """Mining's candidates scored per second (inference, after a warm-up batch)."""
    score = make_ood_scorer(network(model, precision), batch_size=batch_size, jit_compile=jit)
    pixels = np.random.default_rng(0).integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    score(pixels[:batch_size])
    start = time.perf_counter()
    score(pixels)
    return images / (time.perf_counter() - start)


def linf_attack(net: keras.Model, jit: bool, batch_size: int, steps: int = 40):
    """The evaluation's L∞ PGD (one restart, K+1 scorer) on `net`, as `attack(images, seed)`."""
    ctx = ThreatContext(
        logits_fn=lambda x: net(x, training=False), scorer=get_scorer("kplus1"), num_classes=10,
        attack=AttackSettings(steps=steps), score_fn=None, batch_size=batch_size, jit_compile=jit,
    )  # fmt: skip
    return make_linf_attack(ctx)


def linf_attack_rate(
    model: str, jit: bool, batch_size: int, batches: int, steps: int = 40,
    precision: str = "float32",
) -> float:  # fmt: skip
    """OOD images per second of the evaluation's L∞ PGD (one restart), after a warm-up batch."""
    attack = linf_attack(network(model, precision), jit, batch_size, steps)
    images = np.random.default_rng(0).random((batch_size, 32, 32, 3), dtype=np.float32)
    attack(images, 0)
    start = time.perf_counter()
    for index in range(batches):
        attack(images, index + 1)
    return batches * batch_size / (time.perf_counter() - start)


def feed_seconds_per_batch(batches: int = 40, in_batch: int = 64, out_batch: int = 128) -> float:
    """Seconds per (x_in, y_in, x_out) batch of the training feed (atom_tf.data.pipeline:
    uint8 batches from the generator, the in-distribution images cropped and flipped, both
    scaled to [0, 1]), read alone after one batch, on random CIFAR-sized images: an upper
    bound on the cores it takes from a training step it runs beside."""
    from atom_tf.data.in_distribution import InDistributionData
    from atom_tf.data.pipeline import TrainingFeed

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, ((batches + 1) * in_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, len(pixels))
    data = InDistributionData("random", pixels, labels, pixels[:1], labels[:1], 10, True, None)
    feed = TrainingFeed(data, in_batch, out_batch)
    feed.set_outliers(0, rng.integers(0, 256, (feed.outliers_per_epoch, 32, 32, 3), np.uint8))
    iterator = iter(feed.dataset(range(1)))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - start) / batches
