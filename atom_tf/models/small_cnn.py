"""A small, fast CNN for the embedded demo and the tests (73K parameters at width 16)."""

from __future__ import annotations

import keras
from keras import layers

from atom_tf.models.layers import bn_relu, conv, inputs_32, logits_layer


def small_cnn(num_outputs: int, normalization=None, width: int = 16) -> keras.Model:
    """Three stages of two conv-BN-ReLU layers (width, 2 width, 4 width), max pooling between
    stages, global average pooling and a linear layer."""
    inputs, x = inputs_32(normalization)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = bn_relu(conv(x, filters, 3))
        x = bn_relu(conv(x, filters, 3))
        if stage < 2:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    logits = logits_layer(num_outputs)(x)
    return keras.Model(inputs, logits, name="small_cnn")
