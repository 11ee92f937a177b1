"""The catastrophic-overfitting guard of fast adversarial training (docs/protocol.md §12).

FGSM with a random start can overfit to its own one-step attack within an epoch: the loss
under a multi-step attack then jumps while training looks fine (Wong et al., 2020). After each
epoch `RobustLossCheck` attacks a fixed batch (in-distribution test images and pool outliers)
with PGD-10 (ε of training, steps of ε/4, random start) by the method's own objectives and
measures the method's loss on the result, beside the loss under the training attack itself;
`OverfittingGuard` stops the run before the epoch's checkpoint is written when the PGD-10 loss
jumps above either, so the last good checkpoint is the latest one.
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

    def _loss_under(self, attack) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The method's loss on the batch attacked by `attack(images, objective, salt)`, and
        the in-distribution accuracy there (None where in-distribution images are not attacked)."""
        method, network = self.model.method, self.model.network
        loss, accuracy = tf.zeros([]), None
        if method.attack_in or method.trades_beta > 0:
            attacked = self.model.attack_in_distribution(self.x_in, self.y_in, attack, 1.0)
            logits = network(attacked, training=False)
            loss += tf.reduce_mean(label_ce(logits, self.y_in))
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.equal(predicted, tf.cast(self.y_in, tf.int32))
            accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
        if method.attack:
            attacked = attack(self.x_out, method.pgd_objective(), 99)
            out_loss = tf.reduce_mean(method.outlier_loss(network(attacked, training=False)))
            loss += method.outlier_weight * out_loss
        return loss, accuracy

    def _robust_loss(self) -> dict[str, tf.Tensor]:
        loss, accuracy = self._loss_under(self._pgd)
        values = {"robust_loss": loss, "train_attack_loss": self._loss_under(self.model._attack)[0]}
        if accuracy is not None:
            values["robust_in_accuracy"] = accuracy
        return values

    def __call__(self) -> dict[str, float]:
        return {name: float(value) for name, value in self._measure().items()}


def _jumped(current: float, reference: float) -> bool:
    return current > COLLAPSE_FACTOR * reference and current - reference > COLLAPSE_MARGIN


def collapsed(history: list[float], current: float, train_attack_loss: float | None = None) -> bool:
    """Whether the PGD-10 robust loss `current` is a collapse: not finite; more than
    COLLAPSE_FACTOR times the lowest of the epochs before and more than COLLAPSE_MARGIN above it;
    or as far above the loss under the training attack itself (the network has learnt to beat
    its one-step attack only: catastrophic overfitting, even when it happens in epoch 1)."""
    if not math.isfinite(current):
        return True
    if train_attack_loss is not None and _jumped(current, train_attack_loss):
        return True
    return bool(history) and _jumped(current, min(history))


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
        current, train = values["robust_loss"], values["train_attack_loss"]
        if collapsed(self.history, current, train):
            last = self.last_epoch()
            kept = f"epoch {last + 1}" if last is not None else "none (no epoch completed)"
            before = f"lowest before {min(self.history):.3f}; " if self.history else ""
            raise CatastrophicOverfittingError(
                f"catastrophic overfitting at epoch {epoch + 1}: the PGD-{CHECK_STEPS} robust loss "
                f"is {current:.3f} ({before}under the training attack {train:.3f}); last good "
                f"checkpoint kept: {kept}; use --train_attack=pgd or a smaller --epsilon"
            )
        self.history.append(current)
