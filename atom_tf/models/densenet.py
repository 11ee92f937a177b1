"""DenseNet-BC (Huang et al., 2017) for 32×32 inputs, as in docs/protocol.md §7."""

from __future__ import annotations

import keras
from keras import layers

from atom_tf.models.layers import bn_relu, classifier_head, conv, inputs_32


def densenet_bc(
    num_outputs: int,
    normalization=None,
    depth: int = 100,
    growth: int = 12,
    compression: float = 0.5,
) -> keras.Model:
    """DenseNet-BC: bottleneck layers (BN-ReLU-1×1 conv to 4g, BN-ReLU-3×3 conv to g) in three
    dense blocks of (depth - 4) / 6 layers, transitions compressing channels by `compression`."""
    layers_per_block = (depth - 4) // 6
    inputs, x = inputs_32(normalization)
    channels = 2 * growth
    x = conv(x, channels, 3)
    for block in range(3):
        for _ in range(layers_per_block):
            y = conv(bn_relu(x), 4 * growth, 1)
            y = conv(bn_relu(y), growth, 3)
            x = layers.Concatenate()([x, y])
            channels += growth
        if block < 2:
            channels = int(channels * compression)
            x = conv(bn_relu(x), channels, 1)
            x = layers.AveragePooling2D(2)(x)
    return keras.Model(inputs, classifier_head(x, num_outputs), name=f"densenet_bc_{depth}")


def densenet_bc_100(num_outputs: int, normalization=None) -> keras.Model:
    return densenet_bc(num_outputs, normalization, depth=100, growth=12)
