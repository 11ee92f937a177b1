"""Analytical multiply-add counts of a Keras model's forward pass (convolutions and dense)."""

from __future__ import annotations

import math

import keras


def forward_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one image: Conv2D (k_h·k_w·C_in·C_out per output
    position, grouped convolutions divided by groups) and Dense layers; element-wise layers
    (batch-norm, ReLU, pooling, concatenation) are not counted."""
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            out_h, out_w, out_c = layer.output.shape[1:]
            k_h, k_w, c_in_per_group, _ = layer.kernel.shape
            total += out_h * out_w * out_c * k_h * k_w * c_in_per_group
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.kernel.shape)
    return int(total)
