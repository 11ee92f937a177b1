"""One L∞ PGD implementation, parameterised by its objective, for training and evaluation.

docs/protocol.md §2 and §5: random start in the ε-ball (rounded to whole 1/255 steps), steps along the
sign of the gradient of the summed objective, projection onto the ε-ball and [0,1] after
each step, and per sample the iterate with the highest objective seen (the clean input
included) over all restarts.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from atom_tf.attacks.objectives import Objective
from atom_tf.models.layers import input_gradients_only


def random_start_noise(
    seed: tf.Tensor, shape, epsilon: float, restarts: int = 1, quantize: bool = True
) -> tf.Tensor:
    """[restarts, *shape] uniform start offsets in [-ε, ε] (whole 1/255 steps if `quantize`).
    Drawn for a whole batch, then cut into shares, they give replicas the starts that one
    device draws."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=max(restarts, 1))
    noise = tf.stack(
        [tf.random.stateless_uniform(shape, seeds[r], -epsilon, epsilon) for r in range(restarts)]
    )
    return tf.round(noise * 255.0) / 255.0 if quantize else noise


def pgd_attack(
    logits_fn: Callable[[tf.Tensor], tf.Tensor],
    images: tf.Tensor,
    objective: Objective,
    *,
    epsilon: float,
    steps: int,
    step_size: float,
    seed: tf.Tensor,
    restarts: int = 1,
    random_start: bool = True,
    quantize_start: bool = True,
    unroll: bool = False,
    start_noise: tf.Tensor | None = None,
    keep_best: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Maximises `objective(logits_fn(x'))` over x' in {‖x' - x‖∞ ≤ ε} ∩ [0,1]^d.

    `logits_fn` should run the model in inference mode (batch-norm running statistics).
    `seed` is a shape-[2] integer tensor (stateless randomness: the same seed, the same attack).
    `unroll` unrolls the step loop in Python (best for few steps inside a compiled train step);
    otherwise a `tf.while_loop` keeps graphs small for 40-100 steps. `start_noise`
    ([restarts, *images.shape], from `random_start_noise`) replaces the starts drawn from `seed`.
    The step follows the gradient of the *summed* objective: inputs are independent in
    inference mode, so each sample's sign step is the same as with the mean, and float16
    gradients (mixed precision) stay clear of underflow.
    Returns the adversarial images and their per-sample objective (never below the clean one).
    `keep_best=False` returns the last iterate instead, as FGSM with a random start does (Wong
    et al., 2020: one step of 1.25 ε from a uniform start, docs/protocol.md §12), without the
    two forward passes that rank iterates; the objective returned is then the one at the start
    of the last step.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    lower = tf.maximum(images - epsilon, 0.0)
    upper = tf.minimum(images + epsilon, 1.0)

    def value(x: tf.Tensor) -> tf.Tensor:
        return objective(logits_fn(x))

    def step(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One ascent step from x; returns (objective at x, next iterate)."""
        with tf.GradientTape() as tape, input_gradients_only():
            tape.watch(x)
            current = value(x)
            loss = tf.reduce_sum(current)
        grad = tape.gradient(loss, x)
        return current, tf.clip_by_value(x + step_size * tf.sign(grad), lower, upper)

    def keep_best(best_x, best_v, x, v):
        better = v > best_v
        return tf.where(better[:, None, None, None], x, best_x), tf.where(better, v, best_v)

    if random_start and start_noise is None:
        start_noise = random_start_noise(seed, tf.shape(images), epsilon, restarts, quantize_start)

    def start(restart: int) -> tf.Tensor:
        if not random_start:
            return images
        return tf.clip_by_value(images + start_noise[restart], lower, upper)

    if not keep_best:
        if restarts != 1 or not unroll:
            raise ValueError("keep_best=False takes one restart, unrolled")
        x, v = start(0), tf.zeros(tf.shape(images)[:1])
        for _ in range(steps):
            v, x = step(x)
        return tf.stop_gradient(x), tf.stop_gradient(v)
    best_x, best_v = images, value(images)
    for restart in range(restarts):
        x = start(restart)
        if unroll:
            for _ in range(steps):
                v, x_next = step(x)
                best_x, best_v = keep_best(best_x, best_v, x, v)
                x = x_next
        else:

            def body(i, x, best_x, best_v):
                v, x_next = step(x)
                best_x, best_v = keep_best(best_x, best_v, x, v)
                return i + 1, x_next, best_x, best_v

            _, x, best_x, best_v = tf.while_loop(
                lambda i, *_: i < steps, body, (tf.constant(0), x, best_x, best_v)
            )
        best_x, best_v = keep_best(best_x, best_v, x, value(x))
    return tf.stop_gradient(best_x), tf.stop_gradient(best_v)
