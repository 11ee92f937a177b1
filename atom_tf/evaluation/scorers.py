"""Detection scorers (higher = more in-distribution) and the attacker objective each declares.

A scorer maps (logits function, images) to scores; `objective` is what L∞ PGD maximises
against it (docs/protocol.md §5, paper Appendix B.4): -log F(x)_{K+1} for K+1 models (eq. 118),
-(1/K) Σ_i log F(x)_i for MSP-style scores (eq. 115), -log Σ_{i>K} F(x)_i for SOFL (eq. 117).
`adaptive_objective` is the scorer's own score (an adaptive attack none of the anchors run).
Each objective has two sides (docs/protocol.md §10): on OOD inputs an attack raises it (they
look in-distribution); on in-distribution inputs it lowers it (they look OOD), unless the
scorer declares an `in_objective` of its own.
A scorer with constants to choose (ODIN's η, Mahalanobis' statistics) has `fit`, which
chooses them on a `Calibration` (never on the OOD test sets), and `bind`, which returns the
scorer with those constants. Adding a scorer is one function registered here and one test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from atom_tf.attacks.objectives import (
    class_margin,
    kplus1_ce,
    kplus1_margin,
    reject_log_probability,
)
from atom_tf.evaluation.metrics import fpr_at_tpr
from atom_tf.registry import Registry
from atom_tf.settings import Setting

LogitsFn = Callable[[tf.Tensor], tf.Tensor]
SIDES = (
    "ood",
    "in",
)  # what an attack perturbs: OOD inputs (towards in-distribution) or the reverse


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scorer:
    """`score(logits_fn, images, num_classes)` -> [B]; objectives map (logits, K) -> [B]."""

    name: str
    score: Callable[[LogitsFn, tf.Tensor, int], tf.Tensor]
    objective: Callable[[tf.Tensor, int], tf.Tensor]
    adaptive_objective: Callable[[tf.Tensor, int], tf.Tensor] | None = None
    kplus1_only: bool = False  # needs outputs beyond the K classes
    # (Calibration, options) -> JSON-able constants, chosen without the OOD test sets
    fit: Callable[..., dict] | None = None
    # (constants, network, K) -> the scorer with those constants
    bind: Callable[..., Scorer] | None = None
    # what the attack differentiates (x -> values its objective reads); None: the logits
    attack_outputs: Callable[[tf.Tensor], tf.Tensor] | None = None
    # a scale-invariant margin (logits, K) -> [B] the attack may raise instead (the ensemble's
    # second APGD); None for scores that are not a margin of the logits (energy, Mahalanobis)
    margin_objective: Callable[[tf.Tensor, int], tf.Tensor] | None = None
    # the options `fit` reads (flags of bin/evaluate.py, part of the results' identity)
    options: tuple[Setting, ...] = ()
    # what an attack raises on in-distribution inputs to make them look OOD; None: -objective
    # (scores that are not a softmax share, e.g. energy, are lowered directly)
    in_objective: Callable[[tf.Tensor, int], tf.Tensor] | None = None
    # (lowest, highest) score the computation can return, None where unbounded or where
    # rounding can cross the bound: an attack that reaches one can do no better, so the
    # ensemble attacks that image no further (a softmax share lies in [0, 1] as computed, a
    # log-sum-exp of log-probabilities can round above 0)
    score_range: tuple[float | None, float | None] = (None, None)
    # the score differentiates its input (ODIN's and Mahalanobis' pre-processing): exports
    # in formats without gradients (LiteRT, ONNX) cannot carry it
    input_gradient: bool = False

    def option_values(self, given: dict) -> dict:
        """{option: the given value, else its default}, each normalised as declared."""
        return {o.name: o.value(given.get(o.name, o.default)) for o in self.options}

    def attack_objective(
        self, num_classes: int, adaptive: bool = False, side: str = "ood"
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """The per-sample objective an attack maximises, closed over K: on OOD inputs
        (`side="ood"`) it makes them look in-distribution, on in-distribution ones (`"in"`)
        out-of-distribution (docs/protocol.md §10)."""
        _check_side(side)
        if adaptive and self.adaptive_objective is not None:
            chosen, negate = self.adaptive_objective, side == "in"
        elif side == "in" and self.in_objective is not None:
            chosen, negate = self.in_objective, False
        else:
            chosen, negate = self.objective, side == "in"
        if negate:
            return lambda logits: -chosen(logits, num_classes)
        return lambda logits: chosen(logits, num_classes)

    def attack_margin(
        self, num_classes: int, side: str = "ood"
    ) -> Callable[[tf.Tensor], tf.Tensor] | None:
        """The scale-invariant margin an attack maximises on that side (negated on
        in-distribution inputs), or None where the scorer has none."""
        _check_side(side)
        margin = self.margin_objective
        if margin is None:
            return None
        if side == "in":
            return lambda logits: -margin(logits, num_classes)
        return lambda logits: margin(logits, num_classes)


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"unknown attack side {side!r}; choose one of {', '.join(SIDES)}")


SCORERS: Registry[Scorer] = Registry("scorer", builtins=("atom_tf.evaluation.mahalanobis",))
get_scorer = SCORERS.get
scorer_names = SCORERS.names


def register_scorer(scorer: Scorer) -> Scorer:
    return SCORERS.register(scorer.name)(scorer)


def mean_class_ce(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """-(1/K) Σ_{i<K} log F(x)_i (softmax over all outputs): the attack on MSP-style scorers."""
    return -tf.reduce_mean(tf.nn.log_softmax(logits, axis=-1)[:, :num_classes], axis=-1)


def _kplus1_score(logits_fn, images, num_classes):
    return -tf.nn.softmax(logits_fn(images), axis=-1)[:, num_classes]


def _msp(logits: tf.Tensor, num_classes: int, temperature: float = 1.0) -> tf.Tensor:
    return tf.reduce_max(tf.nn.softmax(logits[:, :num_classes] / temperature, axis=-1), axis=-1)


def _energy(logits: tf.Tensor, num_classes: int, temperature: float = 1.0) -> tf.Tensor:
    return temperature * tf.reduce_logsumexp(logits[:, :num_classes] / temperature, axis=-1)


register_scorer(
    Scorer(
        name="kplus1",
        score=_kplus1_score,
        objective=lambda logits, k: kplus1_ce(logits),
        adaptive_objective=lambda logits, k: -tf.nn.softmax(logits, axis=-1)[:, k],
        kplus1_only=True,
        margin_objective=kplus1_margin,
        score_range=(-1.0, 0.0),
    )
)
register_scorer(
    Scorer(
        name="msp",
        score=lambda fn, x, k: _msp(fn(x), k),
        objective=mean_class_ce,
        adaptive_objective=_msp,
        margin_objective=class_margin,
        score_range=(None, 1.0),
    )
)
register_scorer(
    Scorer(
        name="energy",
        score=lambda fn, x, k: _energy(fn(x), k),
        objective=mean_class_ce,
        adaptive_objective=_energy,
        in_objective=lambda logits, k: -_energy(logits, k),
    )
)
register_scorer(
    Scorer(
        name="maxlogit",
        score=lambda fn, x, k: tf.reduce_max(fn(x)[:, :k], axis=-1),
        objective=mean_class_ce,
        adaptive_objective=lambda logits, k: tf.reduce_max(logits[:, :k], axis=-1),
        in_objective=lambda logits, k: -tf.reduce_max(logits[:, :k], axis=-1),
    )
)


def odin_score(temperature: float, epsilon: float):
    """ODIN (Liang et al., 2018): max_i softmax(f(x̃)/T)_i with
    x̃ = x - η · sign(-∇_x log max_i softmax(f(x)/T)_i)."""

    def score(logits_fn, images, num_classes):
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            log_msp = tf.reduce_sum(tf.math.log(_msp(logits_fn(images), num_classes, temperature)))
        gradient = tape.gradient(log_msp, images)
        perturbed = tf.clip_by_value(images + epsilon * tf.sign(gradient), 0.0, 1.0)
        return _msp(logits_fn(perturbed), num_classes, temperature)

    return score


ODIN_ETAS = tuple(round(0.0002 * i, 4) for i in range(21))  # Liang et al.'s grid, 0 to 0.004


ODIN_OPTIONS = (
    Setting(name="temperature", flag="odin_temperature", default=1000.0, help="ODIN temperature T."),
    Setting(name="epsilon", flag="odin_epsilon", default=-1.0,
            normalize=lambda eta: None if eta is None or eta < 0 else float(eta),
            help="ODIN input perturbation size eta; negative: chosen on 1,000 in-distribution "
            "test and 1,000 pool images (paper Appendix B.3), saved in the run."),
)  # fmt: skip


def _fit_odin(calibration, options: dict) -> dict:
    """η from ODIN_ETAS (T = 1000) with the lowest FPR95 on the calibration's in-distribution
    and pool images (paper Appendix B.3); a given `epsilon` option is used as it is."""
    options = SCORERS.get("odin").option_values(options)
    temperature = float(options["temperature"])
    if options.get("epsilon") is not None:
        return {"temperature": temperature, "epsilon": float(options["epsilon"])}
    eta = tf.Variable(0.0)  # one traced score for the whole grid
    score, fprs = odin_score(temperature, eta), {}
    for value in ODIN_ETAS:
        eta.assign(value)
        fprs[value] = 100 * fpr_at_tpr(*calibration.scores(score))
    best = min(ODIN_ETAS, key=lambda value: fprs[value])  # the smallest η among equals
    return {"temperature": temperature, "epsilon": best,
            "validation_fpr95": {str(k): v for k, v in fprs.items()}}  # fmt: skip


def _bind_odin(params: dict, network, num_classes: int) -> Scorer:
    temperature, epsilon = params["temperature"], params["epsilon"]
    return dataclasses.replace(
        SCORERS.get("odin"),
        score=odin_score(temperature, epsilon),
        adaptive_objective=lambda logits, k: _msp(logits, k, temperature),
    )


register_scorer(
    Scorer(
        name="odin",
        score=odin_score(ODIN_OPTIONS[0].default, 0.0014),
        objective=mean_class_ce,
        adaptive_objective=lambda logits, k: _msp(logits, k, ODIN_OPTIONS[0].default),
        fit=_fit_odin,
        bind=_bind_odin,
        options=ODIN_OPTIONS,
        margin_objective=class_margin,
        input_gradient=True,
        score_range=(None, 1.0),
    )
)
# SOFL (Mohseni et al., 2020): in-distribution-ness = -Σ_{i>K} F(x)_i over its reject classes;
# attacked with eq. 117, -log Σ_{i>K} F(x)_i.
register_scorer(
    Scorer(
        name="sofl",
        score=lambda fn, x, k: -tf.exp(reject_log_probability(fn(x), k)),
        objective=lambda logits, k: -reject_log_probability(logits, k),
        adaptive_objective=lambda logits, k: -tf.exp(reject_log_probability(logits, k)),
        kplus1_only=True,
        margin_objective=kplus1_margin,
        score_range=(None, 0.0),
    )
)


def _rowl_score(logits_fn, images, num_classes):
    """ROWL (Sehwag et al., 2019): binary, 1 unless the background class wins the argmax."""
    predicted = tf.argmax(logits_fn(images), axis=-1, output_type=tf.int32)
    return tf.cast(predicted < num_classes, tf.float32)


register_scorer(
    Scorer(
        name="rowl",
        score=_rowl_score,
        objective=lambda logits, k: kplus1_ce(logits),
        kplus1_only=True,
        margin_objective=kplus1_margin,
        score_range=(0.0, 1.0),
    )
)
