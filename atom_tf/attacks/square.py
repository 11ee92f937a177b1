"""The Square attack (Andriushchenko et al., ECCV 2020), L∞: a score-based random search that
never reads a gradient, parameterised by its objective like `pgd_attack` (docs/protocol.md §11).

It starts from vertical stripes of ±ε (one random sign per column and channel). Each query
redraws one random square window, of side ⌈√(p·H·W)⌉ rounded, as ±ε per channel, and keeps
the change for the samples whose objective it raises. p starts at `p_init` (AutoAttack: 0.8)
and is halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries,
rescaled to the budget. A gradient-free attack that beats the white-box ones is the classic
sign of gradient masking.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from atom_tf.attacks.objectives import Objective

P_INIT = 0.8
# query counts (out of 10,000) after which p is halved once more
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(query: tf.Tensor, queries: int, p_init: float = P_INIT) -> tf.Tensor:
    """p at `query` (0-based) of a `queries` budget: p_init halved at each HALVINGS mark."""
    progress = tf.floor(tf.cast(query, tf.float32) / queries * 10000.0)
    halvings = tf.searchsorted(tf.constant(HALVINGS, tf.float32), progress[None], side="left")
    return p_init / tf.pow(2.0, tf.cast(halvings[0], tf.float32))


def square_attack(
    logits_fn: Callable[[tf.Tensor], tf.Tensor],
    images: tf.Tensor,
    objective: Objective,
    *,
    epsilon: float,
    queries: int,
    seed: tf.Tensor,
    p_init: float = P_INIT,
    positions: tf.Tensor | None = None,
    total: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Maximises `objective(logits_fn(x'))` over x' in {‖x' − x‖∞ ≤ ε} ∩ [0,1]^d with
    `queries` evaluations of the objective per sample (the first one is the stripes' start).
    `seed` is a shape-[2] integer tensor. Each sample's random draws are those of its place
    in a batch of `total` (`positions`, default 0, 1, ...), so a replica attacking a share of
    a batch draws what one device draws for those samples. Returns the adversarial images and
    their per-sample objective, never below the clean one."""
    images = tf.convert_to_tensor(images, tf.float32)
    seed = tf.cast(seed, tf.int64)
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    lower = tf.maximum(images - epsilon, 0.0)
    upper = tf.minimum(images + epsilon, 1.0)

    def value(delta: tf.Tensor) -> tf.Tensor:
        return objective(logits_fn(tf.clip_by_value(images + delta, lower, upper)))

    if positions is None:
        positions, total = tf.range(batch), batch
    total = total if total is not None else batch

    def draw(key: tf.Tensor, shape, maxval=None) -> tf.Tensor:
        """Per-sample uniform draws [batch, *shape]: those of the samples' places in `total`."""
        if maxval is None:
            values = tf.random.stateless_uniform([total, *shape], key)
        else:
            values = tf.random.stateless_uniform([total, *shape], key, 0, maxval, tf.int32)
        return tf.gather(values, positions)

    def signs(key: tf.Tensor, shape) -> tf.Tensor:
        return tf.where(draw(key, shape) < 0.5, -epsilon, epsilon)

    clean_v = objective(logits_fn(images))
    start_key = tf.random.experimental.stateless_fold_in(seed, 0)
    delta = tf.broadcast_to(signs(start_key, [1, width, channels]), shape)
    v = value(delta)

    def body(query, delta, v):
        key = tf.random.experimental.stateless_fold_in(seed, tf.cast(query, tf.int64))
        keys = tf.random.experimental.stateless_split(key, num=3)
        area = tf.cast(height * width, tf.float32)
        side = tf.cast(tf.round(tf.sqrt(window_share(query, queries, p_init) * area)), tf.int32)
        side = tf.clip_by_value(side, 1, tf.maximum(height - 1, 1))
        top = draw(keys[0], [], height - side + 1)
        left = draw(keys[1], [], width - side + 1)
        rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])  # [B, H]
        in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])  # [B, W]
        window = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]  # [B, H, W, 1]
        candidate = tf.where(window, signs(keys[2], [1, 1, channels]), delta)
        v_new = value(candidate)
        better = v_new > v
        return (
            query + 1,
            tf.where(better[:, None, None, None], candidate, delta),
            tf.where(better, v_new, v),
        )

    _, delta, v = tf.while_loop(lambda q, *_: q < queries, body, (tf.constant(1), delta, v))
    adversarial = tf.clip_by_value(images + delta, lower, upper)
    better = v > clean_v
    best_x = tf.where(better[:, None, None, None], adversarial, images)
    return tf.stop_gradient(best_x), tf.stop_gradient(tf.where(better, v, clean_v))
