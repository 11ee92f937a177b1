"""Builds and runs a training job: data, model, optimizer, miner, callbacks, checkpoints.

`train(config, run_dir)` is what `bin/train.py` calls; it is resumable: run it again on the
same directory and it continues from the last completed epoch, ending with the same weights
as an uninterrupted run (with `deterministic=True`, on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from atom_tf.cpu import onednn_state
from atom_tf.data import load_in_distribution, load_pool
from atom_tf.data.augment import seed_for
from atom_tf.data.in_distribution import IN_DISTRIBUTION
from atom_tf.data.outlier_pools import POOLS
from atom_tf.data.pipeline import TrainingFeed, test_dataset
from atom_tf.distribution import (
    PRECISIONS,
    ReplicaLayout,
    check_divisible,
    check_precision,
    describe_strategy,
    is_chief,
    precision_policy,
    replica_layout,
)
from atom_tf.errors import InvalidConfigError, NonFiniteLossError
from atom_tf.files import DamagedFileError, check_record, writable_directory
from atom_tf.models import MODELS
from atom_tf.models.layers import reestimate_batch_norm
from atom_tf.pretrained import is_pretrained, resolve_run
from atom_tf.settings import Setting, setting, settings_of, with_defaults
from atom_tf.training.checkpoint import (
    FINAL_WEIGHTS,
    CheckpointManager,
    check_run_config,
    load_run_config,
    read_summary,
    write_summary,
)
from atom_tf.training.methods import METHODS, get_method, method_for, method_settings
from atom_tf.training.mining import (
    MiningCallback,
    OutlierMiner,
    Selection,
    make_ood_scorer,
    validate_mining,
)
from atom_tf.training.networks import build_network, initialise_from_run, interpolate_with_run
from atom_tf.training.overfitting import OverfittingGuard, RobustLossCheck
from atom_tf.training.train_step import TRAIN_ATTACKS, AttackConfig, RobustOODModel

# --mining: '' (the method's default) or a selection a run can ask for
MINING_CHOICES = ("", *(str(s) for s in Selection if s != Selection.NONE))


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run's result (saved flat as the run's config.json). Each
    field is also a `bin/train.py` flag; a method's own constants (SOFL's reject classes, the
    energy margins, CCU's mixture learning rate) are declared by the method (`Method.settings`)
    and given in `method_settings`."""

    dataset: str = setting("digits", "In-distribution dataset: {choices}.", choices=IN_DISTRIBUTION)
    model: str = setting("small_cnn", "Architecture: {choices}.", choices=MODELS)
    method: str = setting("atom", "Training method: {choices}.", choices=METHODS)
    mining: str = setting(
        "", "Outlier selection: {choices} (window: informative mining; fixed: one random sample "
        "for all epochs); empty = the method's default.", choices=MINING_CHOICES[1:],
    )  # fmt: skip
    pool: str = setting("natural_patches", "Auxiliary outlier pool: {choices}.", choices=POOLS)
    pool_path: str = setting("", "File (or folder, imagenet_rc) of the outlier pool.")
    num_candidates: int = setting(0, "N, candidates scored per epoch (0: 4 n).")
    num_selected: int = setting(0, "n, outliers kept per epoch (0: 2 x training set).")
    quantile: float = setting(0.0, "q: the window [qN, qN + n) of ascending OOD scores.")
    epochs: int = setting(20, "Training epochs.", positive=True)
    learning_rate: float = setting(0.1, "Initial SGD learning rate.", positive=True)
    lr_decay_epochs: tuple[int, ...] = setting(
        (10, 15, 18), "Epochs at which the rate is multiplied by --lr_decay."
    )
    lr_decay: float = setting(0.1, "Learning-rate factor at each decay epoch.")
    lr_schedule: str = setting(
        "step", "Learning-rate schedule: {choices} (step: x --lr_decay at --lr_decay_epochs; "
        "cosine: annealed to 1e-6 over all epochs, as ALOE's release).", kind="enum",
        choices=("step", "cosine"), added_later=True,
    )  # fmt: skip
    momentum: float = setting(0.9, "Nesterov momentum.")
    weight_decay: float = setting(1e-4, "L2 weight decay added to every gradient (PyTorch style).")
    ema_momentum: float = setting(
        0.0, "Weight averaging: after each step average = m average + (1 - m) weights, and the "
        "run's final network is the average (0: off, the last weights; e.g. 0.999). Epoch "
        "checkpoints, validation and mining use the trained weights; batch-norm statistics "
        "stay theirs unless --reestimate_bn_batches is set.", added_later=True,
    )  # fmt: skip
    reestimate_bn_batches: int = setting(
        0, "Batch-norm statistics of the final network re-estimated as their average over this "
        "many clean training batches (in-distribution + outlier batch as the step concatenates "
        "them, neither augmented nor attacked; outliers: consecutive pool images from a seeded "
        "offset); 0: the statistics as trained. For --ema_momentum, whose average was never "
        "trained with statistics of its own (e.g. 100).", added_later=True,
    )  # fmt: skip
    init_share: float = setting(
        0.0, "Weight-space interpolation with the network --init_from started from (WiSE-FT): "
        "the final network is (1 - s) x the trained (or averaged) weights + s x --init_from's, "
        "before --reestimate_bn_batches; 0: off. A fine-tune's knob between its start's "
        "accuracy and its own robustness.", added_later=True,
    )  # fmt: skip
    in_batch: int = setting(64, "In-distribution images per step (global).", positive=True)
    out_batch: int = setting(
        128, "Outliers per step (global); half are attacked by ATOM.", positive=True
    )
    epsilon: float = setting(8 / 255, "L-inf radius of the training attack.")
    attack_steps: int = setting(5, "PGD steps of the training attack.")
    attack_step_size: float = setting(
        2 / 255, "PGD step size of the training attack.", positive=True
    )
    train_attack: str = setting(
        "pgd", "Training attack: {choices} (fgsm_rs: fast adversarial training, one step of "
        "1.25 eps from a random start; --attack_steps and --attack_step_size unused).",
        kind="enum", choices=TRAIN_ATTACKS, added_later=True,
    )  # fmt: skip
    overfit_guard: bool | None = setting(
        None, "A PGD-10 check of the robust loss on a held-out batch after each epoch; the run "
        "stops, its last good checkpoint kept, when the loss jumps (catastrophic overfitting). "
        "Default: on with --train_attack=fgsm_rs.", kind="bool", added_later=True,
    )  # fmt: skip
    seed: int = setting(1, "Random seed (weights, order, augmentation, attacks, mining).")
    data_dir: str = setting(
        "", "tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
    )
    download: bool = setting(
        True, "Download what is not on disk: tfds datasets, and pools with a public file "
        "(tiny_images_300k) when --pool_path is empty.",
    )  # fmt: skip
    jit_compile: bool | None = setting(
        None, "Compile the train step and scoring with XLA (default: on with a GPU/TPU, off on "
        "CPU where XLA convolutions are slower).", kind="bool",
    )  # fmt: skip
    deterministic: bool = setting(False, "TensorFlow op determinism (bit-identical resume on CPU).")
    precision: str = setting(
        "float32", "Keras mixed precision (float16 with dynamic loss scaling); "
        "logits, objectives, PGD and scorers stay float32.", kind="enum", choices=PRECISIONS,
        added_later=True,
    )  # fmt: skip
    init_from: str = setting(
        "", "Start from this finished run's network (fine-tuning: sofl, energy), or from a "
        "shipped detector, pretrained:NAME (pretrained:cifar10_cpu_atom: the CPU suite's ATOM "
        "run, which its atom_adv / atom_trades entries fine-tune).",
        added_later=True,
    )  # fmt: skip
    # {name: value} of the method's own settings (Method.settings); missing ones take defaults
    method_settings: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def settings(cls) -> list[Setting]:
        """Every setting of a run: the fields, then each method's own (once by name)."""
        return [*settings_of(cls), *method_settings()]

    def record(self) -> dict:
        """The run's settings as one flat dict (what `method_for` reads), defaults filled."""
        d = {s.name: getattr(self, s.name) for s in settings_of(type(self))}
        d["lr_decay_epochs"] = list(self.lr_decay_epochs)
        return {**d, **with_defaults(method_settings(), self.method_settings)}

    def to_json(self) -> dict:
        """config.json: the flat record without the settings added after runs were first
        written while they hold their default, so those runs stay resumable."""
        later = [s for s in settings_of(type(self)) if s.added_later] + method_settings()
        d = self.record()
        for s in later:
            if d[s.name] == s.default:
                del d[s.name]
        return d

    @classmethod
    def check_record(cls, record: dict, path: str) -> dict:
        """A saved config.json checked field by field: every field that every version writes
        is present, and each known field holds its type (one line naming the file and field)."""
        hint = "restore the run folder or retrain"
        kinds = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
        fields = {}
        for s in cls.settings():
            kind = kinds.get(s.value_kind, str)
            fields[s.name] = (bool, type(None)) if s.default is None else kind
        fields["lr_decay_epochs"] = list
        required = {s.name: fields[s.name] for s in settings_of(cls) if not s.added_later}
        check_record(path, record, required, hint)
        check_record(path, record, {k: v for k, v in fields.items() if k in record}, hint)
        if not all(
            isinstance(e, int) and not isinstance(e, bool) for e in record["lr_decay_epochs"]
        ):
            raise DamagedFileError(f"{path}: 'lr_decay_epochs' must be a list of integers; {hint}")
        return record

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        """A config from a flat record (config.json, or a few changed settings)."""
        fields = {s.name for s in settings_of(cls)}
        values = {k: v for k, v in d.items() if k in fields}
        if "lr_decay_epochs" in values:
            values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
        own = {s.name for s in method_settings()}
        return cls(**values, method_settings={k: v for k, v in d.items() if k in own})


def read_run_config(run_dir: str) -> dict:
    """A run's config.json, every field checked (TrainConfig.check_record)."""
    record = load_run_config(run_dir)
    return TrainConfig.check_record(record, os.path.join(run_dir, "config.json"))


def resolve_jit_compile(jit_compile: bool | None) -> bool:
    """XLA when asked; by default only with an accelerator: on CPU, XLA's convolutions are
    slower than TensorFlow's oneDNN kernels (bench/train_step.py measures both)."""
    if jit_compile is not None:
        return jit_compile
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


COSINE_FINAL_RATE = 1e-6


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Step schedule (docs/protocol.md §2): ×lr_decay at each epoch of `lr_decay_epochs`; or
    cosine annealing from the rate to 1e-6 over the run (ALOE, docs/protocol.md §12)."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, config.epochs * steps_per_epoch,
            alpha=min(1.0, COSINE_FINAL_RATE / config.learning_rate),
        )  # fmt: skip
    boundaries = [
        e * steps_per_epoch for e in sorted(config.lr_decay_epochs) if 0 < e < config.epochs
    ]
    if not boundaries:
        return config.learning_rate
    values = [config.learning_rate * config.lr_decay**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def canonical_config(record: dict) -> dict:
    """What decides a run's result: settings the run's method never reads (the window
    quantile under random selection, the pool of a method without outliers, another method's
    constants) do not tell runs apart. Settings a record lacks take their defaults."""
    record = {**{s.name: s.default for s in TrainConfig.settings()}, **record}
    method = get_method(record["method"])
    selection = record.get("mining") or method.mining
    unused = set()
    if selection != Selection.WINDOW:
        unused |= {"quantile"}
    if not method.uses_outliers:
        unused |= {"pool", "pool_path", "num_candidates", "num_selected", "out_batch", "mining"}
    unused |= {s.name for s in method_settings()} - {s.name for s in method.settings}
    return {k: (None if k in unused else v) for k, v in record.items()}


def validate_config(config: TrainConfig) -> None:
    """Checks flag values that are cheap to check, before any data is loaded."""
    method = get_method(config.method)
    if config.mining not in MINING_CHOICES:
        choices = " or ".join(repr(c) for c in MINING_CHOICES if c)
        raise InvalidConfigError(f"--mining must be {choices}, not {config.mining!r}")
    check_precision(config.precision)
    record = config.record()
    for s in TrainConfig.settings():
        if s.positive and record[s.name] <= 0:
            raise InvalidConfigError(f"--{s.flag_name} must be positive (got {record[s.name]})")
        if s.value_kind == "enum" and str(record[s.name]) not in s.choice_names():
            raise InvalidConfigError(
                f"--{s.flag_name} must be one of {', '.join(s.choice_names())} "
                f"(got {record[s.name]!r})"
            )
    if config.out_batch % 2:
        raise InvalidConfigError(
            f"--out_batch must be even: half of it is attacked (got {config.out_batch})"
        )
    if config.mining == Selection.WINDOW and method.mining_score is None:
        raise InvalidConfigError(
            f"--mining=window needs a method with an OOD score to mine by (atom, ntom, "
            f"atom_energy), not {config.method!r}"
        )
    if not 0.0 <= config.ema_momentum < 1.0:
        raise InvalidConfigError(
            f"--ema_momentum must lie in [0, 1) (got {config.ema_momentum}); 0 turns averaging off"
        )
    if not 0.0 <= config.init_share < 1.0:
        raise InvalidConfigError(
            f"--init_share must lie in [0, 1) (got {config.init_share}); 0 turns it off"
        )
    if config.init_share and not config.init_from:
        raise InvalidConfigError("--init_share interpolates with --init_from's network: set both")
    for name in ("epsilon", "attack_steps", "reestimate_bn_batches"):
        if getattr(config, name) < 0:
            raise InvalidConfigError(f"--{name} must be >= 0 (got {getattr(config, name)})")
    if is_pretrained(config.init_from):
        resolve_run(config.init_from)  # an unknown name: one line listing the shipped ones
    elif config.init_from and not os.path.exists(os.path.join(config.init_from, "config.json")):
        raise InvalidConfigError(f"--init_from: {config.init_from} is not a training run")
    if config.num_candidates and config.num_selected:
        validate_mining(config.num_candidates, config.num_selected, config.quantile)
    elif not 0.0 <= config.quantile < 1.0:
        raise InvalidConfigError(f"--quantile must lie in [0, 1 - n/N] (got {config.quantile})")


def readable_summary(run_dir: str) -> dict | None:
    """The run's summary, or None when it is missing or damaged (it is then written again)."""
    try:
        return read_summary(run_dir)
    except DamagedFileError as err:
        print(f"note: {err}; it is written again")
        return None


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, before the epoch's checkpoint is written."""

    def __init__(self, checkpoints: CheckpointManager) -> None:
        super().__init__()
        self.checkpoints, self.epoch = checkpoints, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float(np.asarray((logs or {}).get("loss", 0.0)))
        if not math.isfinite(loss):
            last = self.checkpoints.latest_epoch()
            kept = f"epoch {last + 1}" if last is not None else "none (no epoch completed)"
            raise NonFiniteLossError(
                f"loss became {loss} at epoch {self.epoch + 1}, step {batch + 1}; last good "
                f"checkpoint kept: {kept}; lower --learning_rate or check the data"
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the checkpoint and appends the epoch's metrics, mining summary and wall seconds
    (mining, training, validation and checkpoint: `epoch_seconds`) to history.jsonl (one line
    per completed epoch)."""

    def __init__(
        self, checkpoints: CheckpointManager, run_dir: str, mining: MiningCallback
    ) -> None:
        super().__init__()
        self.checkpoints, self.run_dir, self.mining = checkpoints, run_dir, mining
        self.since = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.since = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(epoch, self.model, self.model.optimizer)
        record = {k: float(np.asarray(v)) for k, v in (logs or {}).items()}
        record.update(
            {f"mining/{k}": v for k, v in self.mining.history[-1].items() if k != "epoch"}
        )
        now = time.perf_counter()
        record["epoch_seconds"], self.since = now - self.since, now
        with open(os.path.join(self.run_dir, "history.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch, **record}) + "\n")


def history_records(run_dir: str) -> list[dict]:
    """The lines of the run's history.jsonl (one per completed epoch; none before the first)."""
    path = os.path.join(run_dir, "history.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def earlier_epoch_seconds(run_dir: str, initial_epoch: int) -> tuple[float, bool]:
    """The wall seconds history.jsonl records for the epochs before `initial_epoch` (trained by
    earlier processes of a resumed run), and whether it records them all (runs written before
    epochs were timed do not)."""
    seconds = {r["epoch"]: r.get("epoch_seconds") for r in history_records(run_dir)}
    known = [seconds.get(epoch) for epoch in range(initial_epoch)]
    return sum(t for t in known if t is not None), None not in known


def sgd_optimizer(learning_rate, momentum: float = 0.9, ema_momentum: float = 0.0,
                  precision: str = "float32") -> keras.optimizers.Optimizer:  # fmt: skip
    """A run's optimizer: Nesterov SGD, keeping the weights' moving average where
    `ema_momentum` > 0 (--ema_momentum), with dynamic loss scaling under mixed_float16 (against
    float16 underflow)."""
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True,
                                     use_ema=ema_momentum > 0, ema_momentum=ema_momentum)  # fmt: skip
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_training(config: TrainConfig):
    """Data, feed, model and optimizer for `config`, model variables created under the current
    `tf.distribute` strategy scope (wrap the call in `strategy.scope()` to distribute)."""
    method = method_for(config.record())
    data = load_in_distribution(config.dataset, config.data_dir or None, config.download)
    out_batch = config.out_batch if method.uses_outliers else 0
    feed = TrainingFeed(data, config.in_batch, out_batch, config.seed)
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        network = build_network(config.model, method, data.num_classes, data.normalization)
    attack = AttackConfig(
        config.epsilon, config.attack_steps, config.attack_step_size, config.train_attack
    )
    model = RobustOODModel(
        network, method, data.num_classes, config.weight_decay, attack, config.seed
    )
    optimizer = sgd_optimizer(learning_rate_schedule(config, feed.steps_per_epoch),
                              config.momentum, config.ema_momentum, config.precision)  # fmt: skip
    model.compile(optimizer=optimizer, jit_compile=resolve_jit_compile(config.jit_compile))
    model.build((None, 32, 32, 3))
    optimizer.build(model.trainable_variables)
    return data, feed, model, method


def build_miner(config: TrainConfig, method, data, feed: TrainingFeed) -> OutlierMiner | None:
    """The outlier miner of a run; None for a method trained without outliers."""
    if not method.uses_outliers:
        return None
    pool = load_pool(config.pool, config.pool_path or None, config.seed, config.download)
    n = config.num_selected or 2 * len(data.x_train)
    big_n = config.num_candidates or 4 * n
    strategy = config.mining or method.mining
    if n < feed.outliers_per_epoch:
        print(f"note: n={n} outliers < {feed.outliers_per_epoch} per epoch; they are cycled")
    return OutlierMiner(pool, big_n, n, config.quantile, strategy, config.seed, augment=True)


GUARD_IN_IMAGES, GUARD_OUTLIERS = 128, 64  # the overfitting guard's fixed batch


def average_weights(model: RobustOODModel) -> None:
    """With --ema_momentum, replaces the trainable weights by their moving average kept by the
    optimizer (what `fit` also does when it ends; doing it again changes nothing). A run
    resumed after its last epoch's checkpoint gets its average this way."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if optimizer.use_ema and int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0:
        optimizer.finalize_variable_values(model.trainable_weights)


def reestimate_statistics(
    config: TrainConfig, model: RobustOODModel, feed: TrainingFeed, miner: OutlierMiner | None
) -> None:
    """--reestimate_bn_batches: the final network's batch-norm statistics averaged over clean
    batches of the training images, drawn after the last epoch: epoch `epochs`' in-distribution
    order and consecutive pool images from a seeded offset, neither augmented nor attacked,
    so a resumed run gets the same statistics."""
    count = config.reestimate_bn_batches
    if not count:
        return
    outliers = np.zeros((0, 32, 32, 3), np.uint8)
    if feed.out_batch:
        rng = np.random.default_rng(seed_for(config.seed, config.epochs, 5))
        outliers = miner.pool.read(int(rng.integers(0, len(miner.pool))), count * feed.out_batch)
    batches = feed.batches_from(config.epochs, outliers, count)
    reestimate_batch_norm(
        model.network, (tf.concat([x_in, x_out], 0) for x_in, _, x_out in batches)
    )


def overfitting_guard(
    config: TrainConfig, model: RobustOODModel, data, miner: OutlierMiner | None, run_dir: str,
    checkpoints: CheckpointManager,
) -> list[OverfittingGuard]:  # fmt: skip
    """The catastrophic-overfitting guard of a run that attacks during training (on by default
    with FGSM-RS), checking in-distribution test images drawn with the seed and the pool's
    first outliers; resumed runs continue from the robust losses history.jsonl recorded."""
    method = model.method
    enabled = config.overfit_guard
    if enabled is None:
        enabled = config.train_attack == "fgsm_rs"
    if not enabled or not (method.attack or method.attack_in):
        return []
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.permutation(len(data.x_test))[:GUARD_IN_IMAGES])
    outliers = (miner.pool.read(0, GUARD_OUTLIERS) if miner is not None
                else np.zeros((0, *data.x_test.shape[1:]), np.uint8))  # fmt: skip
    check = RobustLossCheck(model, data.x_test[chosen], data.y_test[chosen], outliers, config.seed)
    past = [r["robust_loss"] for r in history_records(run_dir) if "robust_loss" in r]
    return [OverfittingGuard(check, checkpoints.latest_epoch, past)]


def describe_run(
    config: TrainConfig, data, model: RobustOODModel, miner: OutlierMiner | None, run_dir: str
) -> str:
    """The start line: what is trained on what, with which outliers and batches, and where."""
    what = (
        f"training {config.method} on {data.name} ({len(data.x_train):,} train / "
        f"{len(data.x_test):,} test images, {data.num_classes} classes) with "
        f"{config.model} ({model.network.count_params():,} parameters)"
    )
    start = f"; initialised from {config.init_from}" if config.init_from else ""
    average = f", weights averaged (EMA {config.ema_momentum:g})" if config.ema_momentum else ""
    if config.init_share:
        average += f", interpolated with the start (share {config.init_share:g})"
    if config.reestimate_bn_batches:
        average += (
            f", batch-norm statistics re-estimated over {config.reestimate_bn_batches} batches"
        )
    where = f"{config.epochs} epochs{start}{average}; run folder {run_dir}; {onednn_state()}"
    method = model.method
    if method.attack or method.attack_in:
        eps = f"eps {config.epsilon * 255:g}/255"
        if config.train_attack == "fgsm_rs":
            attack = f"FGSM-RS ({eps}, one step of 1.25 eps)"
        else:
            attack = (
                f"PGD-{config.attack_steps} ({eps}, steps {config.attack_step_size * 255:g}/255)"
            )
        sides = [side for side, on in (("in-distribution", method.attack_in or method.trades_beta),
                                       ("outliers", method.attack)) if on]  # fmt: skip
        where = f"{attack} on {' and '.join(sides)}; {where}"
    if miner is None:
        return f"{what}; no outliers; batches of {config.in_batch}, {where}"
    if miner.strategy == Selection.WINDOW:
        mining = f"window q = {miner.quantile:g} of N = {miner.num_candidates:,} candidates"
    elif miner.strategy == Selection.FIXED:
        mining = "one fixed random sample for all epochs"
    else:
        mining = f"random from N = {miner.num_candidates:,} candidates"
    # natural_patches draws crops at random: its length is a virtual 2**40
    pool_size = f"{len(miner.pool):,} images" if len(miner.pool) < 2**40 else "random crops"
    return (
        f"{what}; outliers: {miner.pool.name} ({pool_size}), n = {miner.num_selected:,} per "
        f"epoch by {mining}; batches {config.in_batch} + {config.out_batch}, {where}"
    )


def train(
    config: TrainConfig,
    run_dir: str,
    overwrite: bool = False,
    verbose: int = 1,
    flags_text: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Trains (or resumes) a run in `run_dir`; returns the final summary. `flags_text` (the
    resolved command-line flags) is saved as run_dir/flags.txt once the run is set up.

    With a `strategy` (atom_tf.distribution.make_strategy) every replica of every worker
    trains on its share of each batch and mines its share of the candidates, with the result
    of one device. Only the chief writes to `run_dir`; the other workers write to a
    temporary folder (removed at the end) and resume from the chief's checkpoints, so
    `run_dir` must be on storage every worker sees."""
    validate_config(config)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or tf.distribute.get_strategy()
    layout = replica_layout(strategy)
    check_divisible(
        {"--in_batch": config.in_batch, "--out_batch / 2": config.out_batch // 2},
        layout.num_replicas,
    )
    chief = is_chief(strategy)
    write_dir = run_dir if chief else tempfile.mkdtemp(prefix="atom_tf_worker_")
    writable_directory(write_dir, "--output_dir")
    verbose = verbose if chief else 0
    with strategy.scope():
        data, feed, model, method = build_training(config)
    miner = build_miner(config, method, data, feed)
    check_run_config(write_dir, config.to_json(), overwrite, canonical_config)  # all built
    if flags_text is not None:
        with open(os.path.join(write_dir, "flags.txt"), "w") as f:
            f.write(flags_text)
    checkpoints = CheckpointManager(run_dir)
    last = checkpoints.restore(model, model.optimizer)
    initial_epoch = 0 if last is None else last + 1
    # finished: every epoch checkpointed, or final weights whose checkpoints were removed (a
    # shipped run, a pruned folder), which training from scratch would overwrite
    finished = initial_epoch >= config.epochs or (
        last is None and os.path.exists(os.path.join(run_dir, FINAL_WEIGHTS))
    )
    if finished and (summary := readable_summary(run_dir)) is not None:
        if verbose:
            print(f"{run_dir} finished all {config.epochs} epochs earlier; nothing to train")
        return summary
    if verbose:
        print(describe_run(config, data, model, miner, run_dir), flush=True)
        batches = {"in": config.in_batch}
        if feed.out_batch:
            batches["out"] = feed.out_batch
        print(describe_strategy(strategy, batches), flush=True)
    if last is not None and verbose:
        print(f"resuming {run_dir} after epoch {last + 1} of {config.epochs}", flush=True)
    jit = resolve_jit_compile(config.jit_compile)
    if last is None and method.prepare is not None:
        outliers = miner.pool.read(0, 10_000) if miner is not None else np.zeros((0, 32, 32, 3))
        method.prepare(model.network, data.x_train, outliers, config.seed)
    if last is None and config.init_from:
        initialise_from_run(model.network, method, data.num_classes, data.normalization,
                            config.init_from, config.dataset, config.model)  # fmt: skip
    score_fn = None
    if miner is not None and miner.strategy == Selection.WINDOW:
        score_fn = make_ood_scorer(
            model.network, jit_compile=jit, strategy=strategy, ood_score=method.mining_score
        )
    log_dir = os.path.join(write_dir, "logs")
    mining = MiningCallback(
        miner, feed.set_outliers, score_fn, os.path.join(log_dir, "mining"), verbose > 0
    )
    callbacks = [
        mining,
        NonFiniteLossGuard(checkpoints),
        *overfitting_guard(config, model, data, miner, run_dir, checkpoints),
        EpochCheckpoint(CheckpointManager(write_dir), write_dir, mining),
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
    ]
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        epochs = range(initial_epoch, config.epochs)
        if layout.num_replicas > 1:

            def worker_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
                worker = ReplicaLayout(
                    layout.num_replicas, context.num_input_pipelines, context.input_pipeline_id
                )
                return feed.dataset(epochs, layout.num_replicas, worker.local)

            batches = strategy.distribute_datasets_from_function(worker_batches)
        else:
            batches = feed.dataset(epochs)
        try:
            model.fit(
                batches,
                epochs=config.epochs,
                steps_per_epoch=feed.steps_per_epoch,
                initial_epoch=initial_epoch,
                validation_data=test_dataset(data),
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the feed shuffles, reproducibly from (seed, epoch)
            )
        finally:
            feed.close()
    average_weights(model)
    if config.init_share:
        interpolate_with_run(model.network, method, data.num_classes, data.normalization,
                             config.init_from, config.dataset, config.model, config.init_share)  # fmt: skip
    reestimate_statistics(config, model, feed, miner)
    results = model.evaluate(test_dataset(data), verbose=0, return_dict=True)
    earlier, timed = earlier_epoch_seconds(run_dir, initial_epoch)
    summary = write_summary(write_dir, model.network, {
        "test_accuracy": float(results["in_accuracy"]),
        "epochs": config.epochs,
        "resumed_from_epoch": initial_epoch,
        # every epoch's, a resumed run's earlier processes included; a lower bound where
        # train_seconds_complete is false (epochs trained before they were timed)
        "train_seconds": time.perf_counter() - start + earlier,
        "train_seconds_complete": timed,
        "mining": mining.history,
    })  # fmt: skip
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return summary
