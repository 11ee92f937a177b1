"""Models for 32×32 inputs in [0,1]: a registry of builders returning functional Keras models.

Every builder takes the number of outputs (K+1 for ATOM/NTOM, K for OE) and an optional
(mean, std) normalisation applied inside the network (docs/protocol.md §7).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras

from atom_tf.models import densenet, small_cnn, wideresnet
from atom_tf.models.layers import link_scale_folds
from atom_tf.registry import Registry

Normalization = tuple[tuple[float, ...], tuple[float, ...]] | None

MODELS: Registry[Callable[[int, Normalization], keras.Model]] = Registry("model")
for _name, _builder in [("densenet_bc_100", densenet.densenet_bc_100), ("wrn_40_4", wideresnet.wrn_40_4),
                        ("wrn_40_2", wideresnet.wrn_40_2), ("small_cnn", small_cnn.small_cnn)]:  # fmt: skip
    MODELS.register(_name)(_builder)
for _width in (24, 32):  # wider small CNNs for the CPU-scale real-image protocol
    MODELS.register(f"small_cnn_{_width}")(functools.partial(small_cnn.small_cnn, width=_width))
model_names = MODELS.names


def register_model(name: str, builder: Callable[[int, Normalization], keras.Model]) -> None:
    MODELS.register(name)(builder)


def build_model(name: str, num_outputs: int, normalization: Normalization = None) -> keras.Model:
    """Builds a registered architecture with `num_outputs` logits (its batch norms paired with
    the convolutions after them for the attacks' input gradients: `link_scale_folds`)."""
    model = MODELS.get(name)(num_outputs, normalization)
    link_scale_folds(model)
    return model
