"""The catastrophic-overfitting guard of fast adversarial training (docs/protocol.md §12).

FGSM with a random start can overfit to its own one-step attack within an epoch: the loss
under a multi-step attack then jumps while training looks fine (Wong et al., 2020). After each
epoch `RobustLossCheck` attacks a fixed batch (in-distribution test images and pool outliers)
with PGD-10 (ε of training, steps of ε/4, random start) by the method's own objectives and
measures the method's loss on the result; `OverfittingGuard` stops the run before the epoch's
checkpoint is written when that loss jumps, so the last good checkpoint is the latest one.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from atom_tf.attacks.objectives import label_ce
from atom_tf.attacks.pgd import pgd_attack
from atom_tf.errors import UserError
from atom_tf.training.train_step import RobustOODModel

CHECK_STEPS = 10  # PGD-10
COLLAPSE_FACTOR = 2.0  # the robust loss more than doubles ...
COLLAPSE_MARGIN = 0.5  # ... and rises by more than half a nat above its lowest so far


class CatastrophicOverfittingError(UserError):
    """The robust loss collapsed; the last good checkpoint is kept."""


class RobustLossCheck:
    """The method's loss on a fixed batch attacked by PGD-10, and the in-distribution accuracy
    under that attack (where the method attacks in-distribution images)."""

    def __init__(
        self, model: RobustOODModel, x_in: np.ndarray, y_in: np.ndarray, x_out: np.ndarray,
        seed: int = 0,
    ) -> None:  # fmt: skip
        self.model, self.seed = model, seed
        self.x_in = tf.constant(x_in, tf.float32) / 255.0
        self.y_in = tf.constant(y_in)
        self.x_out = tf.constant(x_out, tf.float32) / 255.0
        self._measure = tf.function(self._robust_loss)

    def _pgd(self, images: tf.Tensor, objective, salt: int) -> tf.Tensor:
        epsilon = self.model.attack.epsilon
        attacked, _ = pgd_attack(
            lambda x: self.model.network(x, training=False), images, objective,
            epsilon=epsilon, steps=CHECK_STEPS, step_size=epsilon / 4,
            seed=tf.constant([self.seed, salt], tf.int64),
        )  # fmt: skip
        return attacked

    def _robust_loss(self) -> dict[str, tf.Tensor]:
        method, network = self.model.method, self.model.network
        loss, values = tf.zeros([]), {}
        if method.attack_in or method.trades_beta > 0:
            attacked = self.model.attack_in_distribution(self.x_in, self.y_in, self._pgd, 1.0)
            logits = network(attacked, training=False)
            loss += tf.reduce_mean(label_ce(logits, self.y_in))
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.equal(predicted, tf.cast(self.y_in, tf.int32))
            values["robust_in_accuracy"] = tf.reduce_mean(tf.cast(correct, tf.float32))
        if method.attack:
            attacked = self._pgd(self.x_out, method.pgd_objective(), 99)
            out_loss = tf.reduce_mean(method.outlier_loss(network(attacked, training=False)))
            loss += method.outlier_weight * out_loss
        values["robust_loss"] = loss
        return values

    def __call__(self) -> dict[str, float]:
        return {name: float(value) for name, value in self._measure().items()}


def collapsed(history: list[float], current: float) -> bool:
    """Whether `current` robust loss is a collapse against the epochs before it: more than
    COLLAPSE_FACTOR times their lowest and more than COLLAPSE_MARGIN above it (or not finite)."""
    if not math.isfinite(current):
        return True
    if not history:
        return False
    best = min(history)
    return current > COLLAPSE_FACTOR * best and current - best > COLLAPSE_MARGIN


class OverfittingGuard(keras.callbacks.Callback):
    """Runs the check after each epoch (before the epoch's checkpoint callback, which must come
    after it in the callback list), adds its values to the epoch's logs (history.jsonl,
    TensorBoard), and raises CatastrophicOverfittingError on a collapse."""

    def __init__(self, check: RobustLossCheck, last_epoch, history: list[float] | None = None):
        super().__init__()
        self.check, self.last_epoch = check, last_epoch  # last_epoch(): the latest saved or None
        self.history = list(history or [])

    def on_epoch_end(self, epoch, logs=None):
        values = self.check()
        if logs is not None:
            logs.update(values)
        current = values["robust_loss"]
        if collapsed(self.history, current):
            last = self.last_epoch()
            kept = f"epoch {last + 1}" if last is not None else "none (no epoch completed)"
            raise CatastrophicOverfittingError(
                f"catastrophic overfitting at epoch {epoch + 1}: the PGD-{CHECK_STEPS} robust loss "
                f"rose to {current:.3f} from {min(self.history):.3f}; last good checkpoint kept: "
                f"{kept}; use --train_attack=pgd or a smaller --epsilon"
            )
        self.history.append(current)
