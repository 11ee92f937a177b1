"""Building blocks shared by the architectures (PyTorch-equivalent initialisation)."""

from __future__ import annotations

import keras
from keras import layers


# PyTorch reference models: kaiming normal (fan_out) convolutions, BN eps 1e-5 / momentum 0.1.
# Initialisers are made per layer, after `keras.utils.set_random_seed`: an instance created at
# import time would draw its seed from an unseeded RNG (and repeat it for every layer).
def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def dense_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def inputs_32(normalization) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input of 32×32×3 images in [0,1], normalised inside the model when asked."""
    inputs = keras.Input((32, 32, 3), name="images")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(
            x
        )
    return inputs, x


def conv(x, filters: int, kernel: int, stride: int = 1, name: str | None = None):
    """Bias-free convolution with PyTorch-style symmetric padding."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2)(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(
        filters,
        kernel,
        stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_init(),
        name=name,
    )(x)


def bn_relu(x):
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return layers.ReLU()(x)


def classifier_head(x, num_outputs: int):
    """BN-ReLU, global average pooling, linear layer to the logits."""
    x = bn_relu(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(
        num_outputs, kernel_initializer=dense_init(), bias_initializer="zeros", name="logits"
    )(x)
