"""DenseNet-BC (Huang et al., 2017) for 32×32 inputs, as in docs/protocol.md §7."""

from __future__ import annotations

import keras
from keras import layers

from atom_tf.models.layers import ConcatMoments, bn_relu, classifier_head, conv, inputs_32


def densenet_bc(
    num_outputs: int,
    normalization=None,
    depth: int = 100,
    growth: int = 12,
    compression: float = 0.5,
) -> keras.Model:
    """DenseNet-BC: bottleneck layers (BN-ReLU-1×1 conv to 4g, BN-ReLU-3×3 conv to g) in three
    dense blocks of (depth - 4) / 6 layers, transitions compressing channels by `compression`.

    The batch norms that read a block's growing concatenation get its training statistics
    assembled from its parts (ConcatMoments): each channel's are computed once per step, not
    by every later layer again (on the CPU path that computes statistics itself)."""
    layers_per_block = (depth - 4) // 6
    inputs, x = inputs_32(normalization)
    channels = 2 * growth
    x = conv(x, channels, 3)
    for block in range(3):
        moments = ConcatMoments()([x])
        for _ in range(layers_per_block):
            y = conv(bn_relu(x, moments), 4 * growth, 1)
            y = conv(bn_relu(y), growth, 3)
            x = layers.Concatenate()([x, y])
            moments = ConcatMoments()([moments, y])
            channels += growth
        if block < 2:
            channels = int(channels * compression)
            x = conv(bn_relu(x, moments), channels, 1)
            x = layers.AveragePooling2D(2)(x)
    head = classifier_head(x, num_outputs, moments)
    return keras.Model(inputs, head, name=f"densenet_bc_{depth}")


def densenet_bc_100(num_outputs: int, normalization=None) -> keras.Model:
    return densenet_bc(num_outputs, normalization, depth=100, growth=12)
