"""APGD (Croce & Hein, ICML 2020): L∞ PGD with momentum and a step size that adapts per
sample, parameterised by its objective like `pgd_attack` (docs/protocol.md §11).

The step size η starts at 2ε; z = P(x_k + η sign ∇), x_{k+1} = P(x_k + α(z − x_k) +
(1 − α)(x_k − x_{k−1})) with α = 0.75 (the first step without momentum). At the checkpoints
w_j = ⌈p_j N⌉ (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) a sample's
η is halved, and its iterate reset to its best point, when fewer than ρ = 0.75 of the steps
since the previous checkpoint raised its objective, or when neither its η nor its best
objective changed since then. Per sample the best point seen is returned (the clean input
included), over all restarts.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from atom_tf.attacks.objectives import Objective
from atom_tf.attacks.pgd import random_start_noise
from atom_tf.models.layers import input_gradients_only

MOMENTUM = 0.75  # α
RHO = 0.75  # share of improving steps below which η is halved


def checkpoints(steps: int) -> list[int]:
    """The iterations w_1 < w_2 < ... ≤ steps at which APGD may halve its step size:
    ⌈p_j N⌉, computed in whole iterations as the released code does (the first interval
    ⌊0.22 N⌋, each next one 3 % of N shorter, never under 6 %), so that float rounding
    never moves a checkpoint."""
    interval = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, w = [], interval
    while w <= steps:
        marks.append(w)
        interval = max(interval - shrink, shortest)
        w += interval
    return marks


def apgd_attack(
    logits_fn: Callable[[tf.Tensor], tf.Tensor],
    images: tf.Tensor,
    objective: Objective,
    *,
    epsilon: float,
    steps: int,
    seed: tf.Tensor,
    restarts: int = 1,
    start_noise: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Maximises `objective(logits_fn(x'))` over x' in {‖x' − x‖∞ ≤ ε} ∩ [0,1]^d by APGD.

    Same contract as `pgd_attack`: `logits_fn` in inference mode, `seed` a shape-[2] integer
    tensor, `start_noise` ([restarts, *images.shape]) replacing the starts drawn from it (not
    rounded to 1/255: APGD starts anywhere in the ball). Returns the adversarial images and
    their per-sample objective, never below the clean one."""
    images = tf.convert_to_tensor(images, tf.float32)
    lower = tf.maximum(images - epsilon, 0.0)
    upper = tf.minimum(images + epsilon, 1.0)
    marks = checkpoints(steps)
    # per iteration i (1-based after the step): 0, or the length of the interval it closes
    closes = [0] * (steps + 1)
    for previous, w in zip([0, *marks[:-1]], marks, strict=True):
        closes[w] = w - previous
    closes_at = tf.constant(closes, tf.float32)

    def value_and_gradient(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape, input_gradients_only():
            tape.watch(x)
            v = objective(logits_fn(x))
            loss = tf.reduce_sum(v)  # inputs are independent in inference mode
        return v, tape.gradient(loss, x)

    def per_sample(mask: tf.Tensor) -> tf.Tensor:
        return mask[:, None, None, None]

    clean_v = objective(logits_fn(images))
    best_x, best_v = images, clean_v
    if start_noise is None:
        start_noise = random_start_noise(seed, tf.shape(images), epsilon, restarts, False)
    batch = tf.shape(images)[0]
    for restart in range(restarts):
        x = tf.clip_by_value(images + start_noise[restart], lower, upper)
        v, g = value_and_gradient(x)
        run_best_x, run_best_v, run_best_g = x, v, g
        eta = tf.fill([batch], 2.0 * epsilon)
        state = (
            tf.constant(1),  # iteration about to be taken (1-based)
            x,  # x_k
            x,  # x_{k−1}
            v,  # objective at x_k
            g,  # gradient at x_k
            eta,
            run_best_x,
            run_best_v,
            run_best_g,
            tf.zeros([batch]),  # steps since the last checkpoint that raised the objective
            eta,  # η at the last checkpoint
            run_best_v,  # best objective at the last checkpoint
        )

        def body(i, x, x_prev, v, g, eta, bx, bv, bg, raised, eta_last, bv_last):
            a = tf.where(i == 1, 1.0, MOMENTUM)
            step = eta[:, None, None, None] * tf.sign(g)
            z = tf.clip_by_value(x + step, lower, upper)
            x_next = tf.clip_by_value(x + a * (z - x) + (1.0 - a) * (x - x_prev), lower, upper)
            v_next, g_next = value_and_gradient(x_next)
            raised = raised + tf.cast(v_next > v, tf.float32)
            better = v_next > bv
            bx = tf.where(per_sample(better), x_next, bx)
            bg = tf.where(per_sample(better), g_next, bg)
            bv = tf.where(better, v_next, bv)
            interval = closes_at[i]

            def at_checkpoint():
                too_few = raised < RHO * interval
                stalled = tf.logical_and(tf.equal(eta, eta_last), tf.equal(bv, bv_last))
                halve = tf.logical_or(too_few, stalled)
                new_eta = tf.where(halve, eta / 2.0, eta)
                new_x = tf.where(per_sample(halve), bx, x_next)
                new_g = tf.where(per_sample(halve), bg, g_next)
                new_v = tf.where(halve, bv, v_next)
                return new_x, new_v, new_g, new_eta, tf.zeros_like(raised), eta, bv

            def between():
                return x_next, v_next, g_next, eta, raised, eta_last, bv_last

            x_new, v_new, g_new, eta, raised, eta_last, bv_last = tf.cond(
                interval > 0, at_checkpoint, between
            )
            return i + 1, x_new, x, v_new, g_new, eta, bx, bv, bg, raised, eta_last, bv_last

        final = tf.while_loop(lambda i, *_: i <= steps, body, state)
        run_best_x, run_best_v = final[6], final[7]
        better = run_best_v > best_v
        best_x = tf.where(per_sample(better), run_best_x, best_x)
        best_v = tf.where(better, run_best_v, best_v)
    return tf.stop_gradient(best_x), tf.stop_gradient(best_v)
