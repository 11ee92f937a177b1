"""Models for 32×32 inputs in [0,1]: a registry of builders returning functional Keras models.

Every builder takes the number of outputs (K+1 for ATOM/NTOM, K for OE) and an optional
(mean, std) normalisation applied inside the network (PROTOCOL §7).
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from atom_tf.errors import InvalidConfigError
from atom_tf.models import densenet, small_cnn, wideresnet

Normalization = tuple[tuple[float, ...], tuple[float, ...]] | None

_MODELS: dict[str, Callable[[int, Normalization], keras.Model]] = {
    "densenet_bc_100": densenet.densenet_bc_100,
    "wrn_40_4": wideresnet.wrn_40_4,
    "wrn_40_2": wideresnet.wrn_40_2,
    "small_cnn": small_cnn.small_cnn,
}


def model_names() -> list[str]:
    return sorted(_MODELS)


def register_model(name: str, builder: Callable[[int, Normalization], keras.Model]) -> None:
    _MODELS[name] = builder


def build_model(name: str, num_outputs: int, normalization: Normalization = None) -> keras.Model:
    """Builds a registered architecture with `num_outputs` logits."""
    if name not in _MODELS:
        raise InvalidConfigError(f"unknown model {name!r}; choose one of {model_names()}")
    return _MODELS[name](num_outputs, normalization)
