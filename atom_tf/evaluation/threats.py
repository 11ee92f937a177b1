"""Threat models (docs/protocol.md §5, §10): a registry of small units.

A threat model maps clean OOD images (float32 in [0,1]) to the images the detector is shown.
`natural` returns them unchanged; `linf` runs the L∞ attack of `--attack` (PGD: the shared
routine training uses) against the scorer's attacker objective. Corruption and compositional
threats register here the same way, from `corruption_threats`, which the registry imports
when it is first read.

The end-to-end threats (ATD's protocol, §10) attack in-distribution test images too:
`linf_in` pushes them towards OOD (OOD images clean), `linf_out` is `linf` under the name of
the family, `linf_both` does both. What a threat shows the OOD images is its registered
function; `IN_ATTACKED` names those whose in-distribution side is attacked as well.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from atom_tf.attacks.apgd import apgd_attack
from atom_tf.attacks.pgd import pgd_attack, random_start_noise
from atom_tf.attacks.square import square_attack
from atom_tf.batching import map_batches
from atom_tf.distribution import across_replicas
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.scorers import SIDES, LogitsFn, Scorer
from atom_tf.registry import Registry
from atom_tf.settings import identity_of, setting

ATTACK_NAMES = ("pgd", "apgd", "square", "ensemble")  # --attack


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
    attack: str = setting(
        "pgd", "The L-inf attack of the linf and compositional threats: {choices} (pgd: the "
        "paper's; ensemble: per image the worst of pgd, apgd on the scorer's objective, apgd "
        "on its scale-invariant margin and square; docs/protocol.md §11).", kind="enum",
        choices=ATTACK_NAMES, added_later=True,
    )  # fmt: skip
    queries: int = setting(
        1000, "Square attack queries per image (AutoAttack: 5,000).", flag="square_queries",
        added_later=True,
    )  # fmt: skip
    early_stop: bool = setting(
        True, "The ensemble attacks an image no further once FPR95, AUROC and the rejected "
        "share cannot change (an OOD image scored above every clean in-distribution score; an "
        "in-distribution image below the threshold and every clean OOD score): AutoAttack's "
        "cascade made exact for those. AUPR can move where attacked scores tie, so a threat where "
        "an image settled early reports none (and how many settled: settled_early).",
        flag="ensemble_early_stop", added_later=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.attack not in ATTACK_NAMES:
            raise InvalidConfigError(
                f"unknown --attack {self.attack!r}; choose one of {', '.join(ATTACK_NAMES)}"
            )
        checks = {"--attack_epsilon >= 0": self.epsilon >= 0, "--attack_steps >= 0": self.steps >= 0,
                  "--attack_step_size > 0": self.step_size > 0,
                  "--attack_restarts >= 1": self.restarts >= 1,
                  "--square_queries >= 1": self.queries >= 1}  # fmt: skip
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise InvalidConfigError(
                f"attack settings need {', '.join(failed)} (got epsilon {self.epsilon:g}, steps "
                f"{self.steps}, step size {self.step_size:g}, restarts {self.restarts}, queries "
                f"{self.queries})"
            )

    def identity(self) -> dict:
        """What these settings change in a number: every field, less those added after
        results were first saved while they hold their default (those results stay valid)."""
        return identity_of(self)


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
    side: str = (
        "ood"  # what is attacked: OOD images (towards in-distribution) or "in" (the reverse)
    )
    # the attacker gain past which an image changes no FPR95, AUROC or rejected share: the
    # ensemble stops attacking it there (None: never)
    final_gain: float | None = None
    records: dict = dataclasses.field(default_factory=dict)  # per-image extras a threat reports
    shared: dict = dataclasses.field(default_factory=dict)  # results reused across threats of a set
    compiled: dict = dataclasses.field(default_factory=dict)  # attacks traced once per evaluation

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"unknown attack side {self.side!r}; choose one of {', '.join(SIDES)}")

    def objective(self, margin: bool = False) -> Callable[[tf.Tensor], tf.Tensor] | None:
        """What the attack raises on this side: the scorer's objective, or its margin."""
        if margin:
            return self.scorer.attack_margin(self.num_classes, self.side)
        return self.scorer.attack_objective(self.num_classes, self.attack.adaptive, self.side)

    def attacker_gain(self, scores: np.ndarray) -> np.ndarray:
        """Detection scores turned into what the attacker wants higher on this side."""
        scores = np.asarray(scores)
        return scores if self.side == "ood" else -scores

    def gain_ceiling(self) -> float | None:
        """The highest attacker gain the scorer can compute on this side (the top of its score
        range on OOD inputs, minus the bottom on in-distribution ones); None: unbounded."""
        low, high = self.scorer.score_range
        if self.side == "ood":
            return high
        return None if low is None else -low


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


def make_linf_attack(ctx: ThreatContext, name: str | None = None, margin: bool = False
                     ) -> Attack:  # fmt: skip
    """A compiled batched L∞ attack (`name`, default ctx.attack.attack; APGD on the scorer's
    margin objective with `margin`) against ctx.scorer, traced once for all sets of an
    evaluation (kept in `ctx.compiled`)."""
    name = name or ctx.attack.attack
    key = ("linf", name, margin, ctx.side, ctx.scorer.name, ctx.attack, ctx.jit_compile)
    if key not in ctx.compiled:
        if margin:
            ctx.compiled[key] = _apgd(ctx, ctx.objective(margin=True))
        else:
            ctx.compiled[key] = LINF_ATTACKS[name](ctx)
    return ctx.compiled[key]


def _compiled(ctx: ThreatContext, attack: Callable) -> Callable[..., np.ndarray]:
    """`attack(images, *per_image)` compiled and split over the strategy's replicas (every
    argument is split along its first axis, with the images)."""
    function = tf.function(attack, jit_compile=ctx.jit_compile, reduce_retracing=True)
    return across_replicas(ctx.strategy, function)


def _start_noise(ctx: ThreatContext, batch: np.ndarray, index: int, quantize: bool) -> np.ndarray:
    """[batch, restarts, ...] random starts drawn for the whole batch from (seed, batch index):
    replicas take their share of what one device draws."""
    seed = tf.constant([ctx.seed, index], tf.int64)
    a = ctx.attack
    noise = random_start_noise(seed, batch.shape, a.epsilon, a.restarts, quantize)
    return np.transpose(noise.numpy(), (1, 0, 2, 3, 4))


# A batched attack: attack(batch, batch_index, rows=None) -> the attacked batch[rows] (every
# image without rows), each image's random draws those of its place in the whole batch.
Attack = Callable[..., np.ndarray]


def _rows_to_attack(rows: np.ndarray | None, size: int, jit_compile: bool
                    ) -> tuple[np.ndarray, int]:  # fmt: skip
    """The batch rows an attack runs on (all of a batch of `size`, or `rows`) and how many of
    its results are kept; compiled by XLA, `rows` are padded (with the first) to a power of two
    so that few batch shapes are compiled."""
    if rows is None:
        return np.arange(size), size
    if not jit_compile or not len(rows):
        return rows, len(rows)
    padded = min(size, 1 << (len(rows) - 1).bit_length())
    return np.concatenate([rows, np.full(padded - len(rows), rows[0])]), len(rows)


def _gradient_attack(ctx: ThreatContext, engine: Callable, quantize_start: bool,
                     objective=None, **budget) -> Attack:  # fmt: skip
    """A compiled batched white-box attack `engine(logits_fn, images, objective, *, epsilon,
    seed, restarts, start_noise, **budget)` against the scorer's objective (or `objective`),
    from random starts drawn per batch (whole 1/255 steps with `quantize_start`)."""
    objective = objective or ctx.objective()
    a = ctx.attack

    def attack(images, noise):
        adversarial, _ = engine(ctx.logits_fn, images, objective, epsilon=a.epsilon,
                                seed=tf.zeros(2, tf.int64), restarts=a.restarts,
                                start_noise=tf.transpose(noise, [1, 0, 2, 3, 4]), **budget)  # fmt: skip
        return adversarial

    shares = _compiled(ctx, attack)

    def run(batch: np.ndarray, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        noise = _start_noise(ctx, batch, index, quantize_start)
        taken, kept = _rows_to_attack(rows, len(batch), ctx.jit_compile)
        return shares(batch[taken], noise[taken])[:kept]

    return run


def _pgd(ctx: ThreatContext, objective=None) -> Attack:
    """docs/protocol.md §5's PGD (the paper's attack, `--attack=pgd`)."""
    a = ctx.attack
    return _gradient_attack(ctx, pgd_attack, True, objective, steps=a.steps,
                            step_size=a.step_size)  # fmt: skip


def _apgd(ctx: ThreatContext, objective=None) -> Attack:
    """APGD (docs/protocol.md §11) with the same iterations and restarts as PGD."""
    return _gradient_attack(ctx, apgd_attack, False, objective, steps=ctx.attack.steps)


def _square(ctx: ThreatContext) -> Attack:
    """The Square attack (docs/protocol.md §11): `queries` score queries, no gradient."""
    objective = ctx.objective()
    a = ctx.attack

    def attack(images, positions, seed):  # positions, seed: split with the images
        adversarial, _ = square_attack(ctx.logits_fn, images, objective, epsilon=a.epsilon,
                                       queries=a.queries, seed=seed[0], positions=positions,
                                       total=ctx.batch_size)  # fmt: skip
        return adversarial

    shares = _compiled(ctx, attack)

    def run(batch: np.ndarray, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        taken, kept = _rows_to_attack(rows, len(batch), ctx.jit_compile)
        seed = np.tile(np.array([[ctx.seed, index]], np.int64), (len(taken), 1))
        return shares(batch[taken], taken.astype(np.int32), seed)[:kept]

    return run


# The ensemble's members, in the order its per-image winners are recorded.
ENSEMBLE = ("pgd", "apgd", "apgd_margin", "square")


@dataclasses.dataclass
class EnsembleLog:
    """What the ensemble did, batch by batch: per image the member that won (index into
    ENSEMBLE, -1: none beat the clean image), per member the images it attacked and the
    seconds it took, and the images it stopped attacking past `final_gain` below the scorer's
    ceiling (their scores are not the full ensemble's, only on the same side of the bound)."""

    winners: list[np.ndarray] = dataclasses.field(default_factory=list)
    images: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(len(ENSEMBLE), np.int64)
    )
    seconds: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(ENSEMBLE)))
    stopped_at_bound: int = 0

    def records(self, count: int) -> dict[str, np.ndarray]:
        winners = np.concatenate(self.winners)[:count] if self.winners else np.zeros(0, np.int32)
        return {"attack_winners": winners, "attack_member_images": self.images,
                "attack_member_seconds": self.seconds,
                "attack_stopped_at_bound": np.int64(self.stopped_at_bound)}  # fmt: skip


def ensemble_attack(ctx: ThreatContext, count: int, log: EnsembleLog) -> Attack:
    """Per image the attacker's best result (by the detector's own score: the most
    in-distribution on the OOD side, the most OOD on the in-distribution side) of PGD, APGD on
    the scorer's objective, APGD on its scale-invariant margin (for scorers that have one) and
    Square, the clean image included, over batches of `count` images (the rows past it are
    padding, never attacked). With `--ensemble_early_stop`, each member attacks only the
    images whose best gain so far is neither past `ctx.final_gain` (AutoAttack's cascade) nor
    at the scorer's ceiling, where no member can do better: those keep exactly the full
    ensemble's result."""
    members = {"pgd": make_linf_attack(ctx, "pgd"), "apgd": make_linf_attack(ctx, "apgd"),
               "square": make_linf_attack(ctx, "square")}  # fmt: skip
    if ctx.scorer.margin_objective is not None:
        members["apgd_margin"] = make_linf_attack(ctx, "apgd", margin=True)
    stops, top = ctx.attack.early_stop, ctx.gain_ceiling()  # none: +inf, which no gain reaches
    final_gain = ctx.final_gain if stops and ctx.final_gain is not None else np.inf
    ceiling = top if stops and top is not None else np.inf

    def run(batch: np.ndarray, index: int) -> np.ndarray:
        real = min(len(batch), count - index * len(batch))
        best, best_score = batch.copy(), ctx.attacker_gain(ctx.score_fn(batch))
        winner = np.full(len(batch), -1, np.int32)
        for member, name in enumerate(ENSEMBLE):
            if name not in members:
                continue
            past_bound, at_ceiling = best_score[:real] > final_gain, best_score[:real] >= ceiling
            rows = np.flatnonzero(~(past_bound | at_ceiling))
            if name == ENSEMBLE[-1]:  # skipped by the last member for the bound alone
                log.stopped_at_bound += int(np.sum(past_bound & ~at_ceiling))
            if not len(rows):
                continue
            start = time.perf_counter()
            candidate = np.asarray(members[name](batch, index, rows))
            score = ctx.attacker_gain(ctx.score_fn(candidate))
            log.seconds[member] += time.perf_counter() - start
            log.images[member] += len(rows)
            better = score > best_score[rows]
            best[rows[better]], best_score[rows[better]] = candidate[better], score[better]
            winner[rows[better]] = member
        log.winners.append(winner)
        return best

    return run


LINF_ATTACKS = {"pgd": _pgd, "apgd": _apgd, "square": _square}


@register_threat("linf")
@register_threat("linf_out")
def linf(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    """White-box L∞ attack on OOD images (docs/protocol.md §5; `--attack`), per sample the best
    iterate, the clean input included; on in-distribution images with `ctx.side == "in"`."""
    a = ctx.attack
    budget = f"{a.queries} queries" if a.attack == "square" else (
        f"{a.steps} steps x {a.restarts} restart(s)")  # fmt: skip
    towards = " towards OOD" if ctx.side == "in" else ""
    label = f"L-inf {a.attack}{towards} ({budget}, eps {a.epsilon * 255:.0f}/255)"
    if a.attack != "ensemble":
        return batched(images, ctx.batch_size, make_linf_attack(ctx), label, ctx.verbose)
    log = EnsembleLog()
    out = batched(images, ctx.batch_size, ensemble_attack(ctx, len(images), log), label,
                  ctx.verbose)  # fmt: skip
    ctx.records.update(log.records(len(images)))
    return out


register_threat("linf_in")(natural)  # OOD images clean; in-distribution ones attacked
register_threat("linf_both")(linf)
END_TO_END = ("linf_in", "linf_out", "linf_both")  # ATD's In / Out / In+Out (docs/protocol.md §10)
IN_ATTACKED = ("linf_in", "linf_both")
OOD_SIDE = {"linf_in": "natural", "linf_both": "linf_out"}  # whose OOD scores a threat shares


def ood_side(threat: str) -> str:
    """The threat whose OOD-side scores `threat` uses (itself, unless it shares them)."""
    return OOD_SIDE.get(threat, threat)


def attack_in_distribution(images: np.ndarray, ctx: ThreatContext) -> np.ndarray:
    """In-distribution images under the L∞ attack towards OOD (the In side of §10)."""
    return linf(images, dataclasses.replace(ctx, side="in"))
