"""Threat models for OOD inputs (docs/protocol.md §5): a registry of small units.

A threat model maps clean OOD images (float32 in [0,1]) to the images the detector is shown.
`natural` returns them unchanged; `linf` runs the shared PGD routine (the one training uses)
against the scorer's attacker objective. In-distribution images are never attacked.
Corruption and compositional threats register here the same way, from
`corruption_threats`, which the registry imports when it is first read.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from atom_tf.attacks.pgd import pgd_attack, random_start_noise
from atom_tf.batching import map_batches
from atom_tf.distribution import across_replicas
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.scorers import LogitsFn, Scorer
from atom_tf.registry import Registry
from atom_tf.settings import setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackSettings:
    """Evaluation L∞ attack: ε 8/255, 40 steps of 1/255, random start, 1 restart (the strong
    variant of Table 8: 100 steps, 5 restarts); docs/protocol.md §5."""

    epsilon: float = setting(
        8 / 255, "L-inf radius of the evaluation attack.", flag="attack_epsilon"
    )
    steps: int = setting(40, "PGD steps (Table 8's strong attack: 100).", flag="attack_steps")
    step_size: float = setting(1 / 255, "PGD step size.", flag="attack_step_size")
    restarts: int = setting(
        1, "Random restarts (Table 8's strong attack: 5).", flag="attack_restarts"
    )
    adaptive: bool = setting(
        False, "Attack the scorer's own score instead of the protocol's objective "
        "(docs/protocol.md §5).",
    )  # fmt: skip
    corruptions: str = setting(
        "all", "Corruption search: all (19 x 5 variants) or common (the paper text's 15 x 5).",
        kind="enum", choices=("all", "common"),
    )  # fmt: skip
    corruption_table: str = setting(
        "", "Corruption constants (default: cifar for 32x32 inputs, imagenet otherwise).",
        kind="enum", choices=("", "cifar", "imagenet"),
    )  # fmt: skip

    def __post_init__(self) -> None:
        checks = {"--attack_epsilon >= 0": self.epsilon >= 0, "--attack_steps >= 0": self.steps >= 0,
                  "--attack_step_size > 0": self.step_size > 0,
                  "--attack_restarts >= 1": self.restarts >= 1}  # fmt: skip
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise InvalidConfigError(
                f"attack settings need {', '.join(failed)} (got epsilon {self.epsilon:g}, steps "
                f"{self.steps}, step size {self.step_size:g}, restarts {self.restarts})"
            )


@dataclasses.dataclass
class ThreatContext:
    logits_fn: LogitsFn  # the network in inference mode
    scorer: Scorer
    num_classes: int
    attack: AttackSettings
    score_fn: Callable[[np.ndarray], np.ndarray]  # batched detection scores of float images
    batch_size: int = 256  # images per attack batch, split over the strategy's replicas
    jit_compile: bool = False
    strategy: tf.distribute.Strategy | None = None  # attacks split over its replicas
    seed: int = 0
    verbose: bool = True
    records: dict = dataclasses.field(default_factory=dict)  # per-image extras a threat reports
    shared: dict = dataclasses.field(default_factory=dict)  # results reused across threats of a set
    compiled: dict = dataclasses.field(default_factory=dict)  # attacks traced once per evaluation


ThreatModel = Callable[[np.ndarray, ThreatContext], np.ndarray]
THREATS: Registry[ThreatModel] = Registry(
    "threat model", builtins=("atom_tf.evaluation.corruption_threats",)
)
register_threat = THREATS.register
get_threat = THREATS.get
threat_names = THREATS.names


@register_threat("natural")
def natural(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    return images


def batched(
    images: np.ndarray,
    batch_size: int,
    fn: Callable[[np.ndarray, int], np.ndarray],
    label: str,
    verbose: bool,
) -> np.ndarray:
    """Applies fn(batch, batch_index) over fixed-size batches with a progress bar and an
    estimate of the remaining time."""
    total = len(images)
    bar = keras.utils.Progbar(total, unit_name="image") if verbose and total > batch_size else None
    if verbose:
        print(f"{label}: {total:,} images", flush=True)
    start = time.perf_counter()
    out = map_batches(fn, images, batch_size, bar.update if bar is not None else None)
    if verbose:
        seconds = time.perf_counter() - start
        print(f"{label}: {total / max(seconds, 1e-9):.1f} images/s", flush=True)
    return out


def make_linf_attack(ctx: ThreatContext) -> Callable[[np.ndarray, int], np.ndarray]:
    """A compiled batched PGD against ctx.scorer's attacker objective (traced once for all
    sets of an evaluation: kept in `ctx.compiled`)."""
    key = ("linf", ctx.scorer.name, ctx.attack, ctx.jit_compile)
    if key not in ctx.compiled:
        ctx.compiled[key] = _linf_attack(ctx)
    return ctx.compiled[key]


def _linf_attack(ctx: ThreatContext) -> Callable[[np.ndarray, int], np.ndarray]:
    objective = ctx.scorer.attack_objective(ctx.num_classes, ctx.attack.adaptive)
    settings = ctx.attack

    @tf.function(jit_compile=ctx.jit_compile, reduce_retracing=True)
    def attack(images, noise):  # noise [batch, restarts, ...]: it is split with the images
        adversarial, _ = pgd_attack(
            ctx.logits_fn, images, objective, epsilon=settings.epsilon, steps=settings.steps,
            step_size=settings.step_size, seed=tf.zeros(2, tf.int64), restarts=settings.restarts,
            start_noise=tf.transpose(noise, [1, 0, 2, 3, 4]),
        )  # fmt: skip
        return adversarial

    attack_shares = across_replicas(ctx.strategy, attack)

    def run(batch: np.ndarray, index: int) -> np.ndarray:
        seed = tf.constant([ctx.seed, index], tf.int64)
        noise = random_start_noise(seed, batch.shape, settings.epsilon, settings.restarts)
        return attack_shares(batch, np.transpose(noise.numpy(), (1, 0, 2, 3, 4)))

    return run


@register_threat("linf")
def linf(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    """White-box L∞ PGD (docs/protocol.md §5), per sample the best iterate, the clean input included."""
    a = ctx.attack
    label = f"L-inf PGD ({a.steps} steps x {a.restarts} restart(s), eps {a.epsilon * 255:.0f}/255)"
    return batched(images, ctx.batch_size, make_linf_attack(ctx), label, ctx.verbose)
