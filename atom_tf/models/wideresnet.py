"""Wide residual networks (Zagoruyko & Komodakis, 2016), pre-activation, for 32×32 inputs."""

from __future__ import annotations

import keras
from keras import layers

from atom_tf.models.layers import bn_relu, classifier_head, conv, inputs_32


def wide_resnet(
    num_outputs: int, normalization=None, depth: int = 40, widen: int = 4
) -> keras.Model:
    """WRN-depth-widen: three groups of (depth - 4) / 6 basic blocks of widths 16k, 32k, 64k."""
    blocks = (depth - 4) // 6
    inputs, x = inputs_32(normalization)
    x = conv(x, 16, 3)
    channels = 16
    for group, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for i in range(blocks):
            stride = 2 if group > 0 and i == 0 else 1
            activated = bn_relu(x)
            # a projection shortcut sees the activated input
            shortcut = conv(activated, width, 1, stride) if channels != width else x
            y = conv(activated, width, 3, stride)
            y = conv(bn_relu(y), width, 3)
            x = layers.Add()([shortcut, y])
            channels = width
    return keras.Model(inputs, classifier_head(x, num_outputs), name=f"wrn_{depth}_{widen}")


def wrn_40_4(num_outputs: int, normalization=None) -> keras.Model:
    return wide_resnet(num_outputs, normalization, 40, 4)


def wrn_40_2(num_outputs: int, normalization=None) -> keras.Model:
    return wide_resnet(num_outputs, normalization, 40, 2)
