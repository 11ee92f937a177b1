"""The network a method trains (a registered architecture with K + extra outputs, wrapped by
methods that add a density model) and fine-tuning from another run's network."""

from __future__ import annotations

import keras
import numpy as np

from atom_tf.errors import InvalidConfigError
from atom_tf.models import Normalization, build_model
from atom_tf.pretrained import resolve_run
from atom_tf.training.checkpoint import finished_weights, load_run_config, load_weights_checked
from atom_tf.training.methods import Method, method_for


def build_network(
    model: str, method: Method, num_classes: int, normalization: Normalization
) -> keras.Model:
    """The architecture `model` with the method's outputs (and its wrapper, e.g. CCU's)."""
    network = build_model(model, method.num_outputs(num_classes), normalization)
    if method.wrap_network is not None:
        network = method.wrap_network(network, num_classes)
    return network


def source_weights(
    network: keras.Model, method: Method, num_classes: int, normalization: Normalization,
    source: str, dataset: str, model: str,
) -> list[np.ndarray]:  # fmt: skip
    """The value of each of `network`'s weights in the final network of the run folder
    `source`, or of the shipped detector `pretrained:NAME` (same dataset and architecture).
    Outputs the source lacks (SOFL's reject classes after a K-way standard run) keep
    `network`'s current values."""
    source_dir = resolve_run(source)
    source_config = load_run_config(source_dir)
    final = finished_weights(source_dir)
    if final is None:
        raise InvalidConfigError(f"--init_from: {source} has not finished training")
    if not all(isinstance(source_config.get(k), str) for k in ("dataset", "model", "method")):
        raise InvalidConfigError(f"--init_from: {source}'s config.json is damaged")
    if (source_config["dataset"], source_config["model"]) != (dataset, model):
        raise InvalidConfigError(
            f"--init_from: {source} trained {source_config['model']} on "
            f"{source_config['dataset']}, not {model} on {dataset}"
        )
    trained = build_network(model, method_for(source_config), num_classes, normalization)
    load_weights_checked(trained, *final)
    if len(trained.weights) != len(network.weights):
        raise InvalidConfigError(
            f"--init_from: {source_config['method']}'s network does not fit {method.name}'s"
        )
    values = []
    for target, value in zip(network.weights, trained.weights, strict=True):
        value = np.asarray(value)
        if tuple(target.shape) == value.shape:
            values.append(value)
        elif tuple(target.shape[:-1]) == value.shape[:-1] and target.shape[-1] > value.shape[-1]:
            merged = np.asarray(target).copy()  # the output layer: copy the K class outputs
            merged[..., : value.shape[-1]] = value
            values.append(merged)
        else:
            raise InvalidConfigError(
                f"--init_from: weight {target.path} has shape {tuple(target.shape)} here and "
                f"{value.shape} in {source}"
            )
    return values


def initialise_from_run(
    network: keras.Model, method: Method, num_classes: int, normalization: Normalization,
    source: str, dataset: str, model: str,
) -> None:  # fmt: skip
    """Starts `network` from the final weights of `source` (`source_weights`)."""
    values = source_weights(network, method, num_classes, normalization, source, dataset, model)
    for target, value in zip(network.weights, values, strict=True):
        target.assign(value)


def interpolate_with_run(
    network: keras.Model, method: Method, num_classes: int, normalization: Normalization,
    source: str, dataset: str, model: str, share: float,
) -> None:  # fmt: skip
    """Weight-space interpolation with the network a fine-tune started from (WiSE-FT, Wortsman
    et al., CVPR 2022): every floating-point weight w becomes (1 - share) w + share w_source,
    batch-norm statistics included (re-estimate them after). Outputs the source lacks keep
    the fine-tuned values."""
    values = source_weights(network, method, num_classes, normalization, source, dataset, model)
    for target, value in zip(network.weights, values, strict=True):
        if target.dtype.startswith("float"):
            current = keras.ops.convert_to_numpy(target)
            target.assign(((1.0 - share) * current + share * value).astype(current.dtype))
