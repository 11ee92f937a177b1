"""Detection scorers (higher = more in-distribution) and the attacker objective each declares.

A scorer maps (logits function, images) to scores; `objective` is what L∞ PGD maximises
against it (PROTOCOL §5): -log F(x)_{K+1} for K+1 models, -(1/K) Σ_i log F(x)_i otherwise.
`adaptive_objective` is the scorer's own score (an adaptive attack none of the anchors run).
Adding a scorer is one function registered here and one test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from atom_tf.registry import Registry
from atom_tf.training.objectives import kplus1_ce

LogitsFn = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Scorer:
    """`score(logits_fn, images, num_classes)` -> [B]; objectives map (logits, K) -> [B]."""

    name: str
    score: Callable[[LogitsFn, tf.Tensor, int], tf.Tensor]
    objective: Callable[[tf.Tensor, int], tf.Tensor]
    adaptive_objective: Callable[[tf.Tensor, int], tf.Tensor] | None = None
    kplus1_only: bool = False

    def attack_objective(
        self, num_classes: int, adaptive: bool = False
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """The per-sample objective PGD maximises, closed over K."""
        if adaptive and self.adaptive_objective is not None:
            return lambda logits: self.adaptive_objective(logits, num_classes)
        return lambda logits: self.objective(logits, num_classes)


SCORERS: Registry[Scorer] = Registry("scorer")
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
        "kplus1",
        _kplus1_score,
        objective=lambda logits, k: kplus1_ce(logits),
        adaptive_objective=lambda logits, k: -tf.nn.softmax(logits, axis=-1)[:, k],
        kplus1_only=True,
    )
)
register_scorer(
    Scorer("msp", lambda fn, x, k: _msp(fn(x), k), mean_class_ce, adaptive_objective=_msp)
)
register_scorer(
    Scorer("energy", lambda fn, x, k: _energy(fn(x), k), mean_class_ce, adaptive_objective=_energy)
)
register_scorer(
    Scorer(
        "maxlogit",
        lambda fn, x, k: tf.reduce_max(fn(x)[:, :k], axis=-1),
        mean_class_ce,
        adaptive_objective=lambda logits, k: tf.reduce_max(logits[:, :k], axis=-1),
    )
)


@dataclasses.dataclass
class OdinSettings:
    """ODIN (Liang et al., 2018): temperature T and input-perturbation size η."""

    temperature: float = 1000.0
    epsilon: float = 0.0014


ODIN = OdinSettings()


def _odin_score(logits_fn, images, num_classes):
    """max_i softmax(f(x̃)/T)_i with x̃ = x - η · sign(-∇_x log max_i softmax(f(x)/T)_i)."""
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        log_msp = tf.reduce_sum(tf.math.log(_msp(logits_fn(images), num_classes, ODIN.temperature)))
    gradient = tape.gradient(log_msp, images)
    perturbed = tf.clip_by_value(images + ODIN.epsilon * tf.sign(gradient), 0.0, 1.0)
    return _msp(logits_fn(perturbed), num_classes, ODIN.temperature)


register_scorer(
    Scorer(
        "odin",
        _odin_score,
        mean_class_ce,
        adaptive_objective=lambda logits, k: _msp(logits, k, ODIN.temperature),
    )
)
