"""Per-sample objectives on logits: training losses and the attacker objectives of docs/protocol.md §5.

Every function maps logits [B, C] to a per-sample value [B]; attacks maximise them.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

Objective = Callable[[tf.Tensor], tf.Tensor]  # logits [B, C] -> per-sample value [B]


def ood_probability(logits: tf.Tensor) -> tf.Tensor:
    """F(x)_{K+1}: the softmax probability of the last ("out-of-distribution") class."""
    return tf.nn.softmax(logits, axis=-1)[:, -1]


def kplus1_ce(logits: tf.Tensor) -> tf.Tensor:
    """CE(f(x), K) = -log F(x)_{K+1}: the outlier loss of eq. (4) and its PGD objective
    in training; also the L∞ attacker objective against K+1 detectors (docs/protocol.md §5).

    Computed as softplus(logsumexp_{i≤K} f_i - f_{K+1}), the same function as
    -log_softmax(f)_{K+1}, whose gradient keeps its direction when F(x)_{K+1} rounds to 1 in
    float32 (the log-softmax form then loses the -∇f_{K+1} term, which weakens sign-gradient
    attacks on confident detectors: gradient masking by rounding)."""
    return tf.nn.softplus(tf.reduce_logsumexp(logits[:, :-1], axis=-1) - logits[:, -1])


def uniform_ce(logits: tf.Tensor) -> tf.Tensor:
    """-(1/K) Σ_i log F(x)_i: cross-entropy to the uniform distribution over all K outputs
    (Outlier Exposure's loss; the attacker objective against MSP/ODIN/OE detectors)."""
    return -tf.reduce_mean(tf.nn.log_softmax(logits, axis=-1), axis=-1)


def label_ce(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Sparse softmax cross-entropy per sample."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)


def free_energy(logits: tf.Tensor) -> tf.Tensor:
    """E(x) = -logsumexp_i f_i(x) (Liu et al., 2020, eq. 1): low on in-distribution inputs,
    so it is also an OOD score (higher = more out-of-distribution)."""
    return -tf.reduce_logsumexp(logits, axis=-1)


def minus_free_energy(logits: tf.Tensor) -> tf.Tensor:
    """-E(x): what an attacker raises to make an input look in-distribution to an energy model."""
    return tf.reduce_logsumexp(logits, axis=-1)


def energy_hinge_in(margin: float) -> Objective:
    """max(0, E(x) - m_in)²: the in-distribution half of the energy regulariser (Liu et al.)."""
    return lambda logits: tf.square(tf.nn.relu(free_energy(logits) - margin))


def energy_hinge_out(margin: float) -> Objective:
    """max(0, m_out - E(x))²: the outlier half of the energy regulariser (Liu et al.)."""
    return lambda logits: tf.square(tf.nn.relu(margin - free_energy(logits)))


def reject_log_probability(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """log Σ_{i>K} F(x)_i: the log-probability of all reject classes (SOFL; K+1 when R = 1)."""
    return tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1)[:, num_classes:], axis=-1)


def best_reject_ce(reject_classes: int) -> Objective:
    """-max_r log F(x)_{K+r}: SOFL's self-supervised outlier loss over its R reject classes (the
    last R outputs), each outlier labelled with the reject class the network already prefers
    for it (Mohseni et al., 2020)."""
    return lambda logits: (
        -tf.reduce_max(tf.nn.log_softmax(logits, axis=-1)[:, -reject_classes:], axis=-1)
    )


def logit_spread(logits: tf.Tensor) -> tf.Tensor:
    """z_π1 − z_π3 (the largest logit minus the third largest; with fewer than three outputs
    the smallest): the scale a margin is divided by to make it scale-invariant (APGD's DLR)."""
    k = min(3, logits.shape[-1])
    top = tf.math.top_k(logits, k).values
    return top[:, 0] - top[:, k - 1] + 1e-12


def kplus1_margin(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(max_{i≤K} z_i − max_{j>K} z_j) / (z_π1 − z_π3): how far the likeliest class leads the
    likeliest OOD output, scale-invariant (raised, an input looks in-distribution to a
    detector with outputs beyond the K classes: K+1, SOFL, ROWL; docs/protocol.md §11)."""
    lead = tf.reduce_max(logits[:, :num_classes], -1) - tf.reduce_max(logits[:, num_classes:], -1)
    return lead / logit_spread(logits)


def class_margin(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(z_π1 − z_π2) / (z_π1 − z_π3) over the K classes: the top class's scale-invariant lead
    (raised, the maximum softmax probability rises: MSP, ODIN; docs/protocol.md §11)."""
    classes = logits[:, :num_classes]
    top = tf.math.top_k(classes, min(2, num_classes)).values
    return (top[:, 0] - top[:, -1]) / logit_spread(classes)
