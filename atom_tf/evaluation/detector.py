"""The open-world detector of the paper's Figure 1, usable without the command-line tools.

    detector = atom_tf.load_detector("runs/digits_atom")
    accepted, labels = detector.predict(images)   # images: uint8 or float in [0,1]

`score` is the detection score (higher = more in-distribution); `threshold` accepts 95% of the
in-distribution test set (PROTOCOL §5), saved with the run and recomputed on demand.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from atom_tf.batching import map_batches
from atom_tf.data import InDistributionData, load_in_distribution
from atom_tf.distribution import across_replicas, is_chief, precision_policy
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.metrics import threshold_at_tpr
from atom_tf.evaluation.scorers import Scorer, get_scorer
from atom_tf.training.checkpoint import CheckpointManager, load_run_config, load_weights_checked
from atom_tf.training.methods import method_for
from atom_tf.training.networks import build_network
from atom_tf.training.train_step import RobustOODModel


def as_unit_float(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return (
        images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    )


@dataclasses.dataclass
class Detector:
    network: keras.Model
    num_classes: int
    scorer: Scorer
    threshold: float | None = None
    batch_size: int = 256
    strategy: tf.distribute.Strategy | None = None  # every batch split over its replicas
    scorer_params: dict | None = None  # constants a fitted scorer chose (ODIN's η, ...)

    def __post_init__(self) -> None:
        self._score = tf.function(
            lambda x: self.scorer.score(self.logits, x, self.num_classes), reduce_retracing=True
        )
        self._classify = tf.function(
            lambda x: tf.argmax(self.logits(x)[:, : self.num_classes], -1), reduce_retracing=True
        )

    def scorer_summary(self) -> dict:
        """The fitted scorer's scalar constants and choices (arrays left out)."""
        return {k: v for k, v in (self.scorer_params or {}).items() if not isinstance(v, list)}

    def logits(self, images: tf.Tensor) -> tf.Tensor:
        return self.network(images, training=False)

    def _batched(self, fn, images: np.ndarray) -> np.ndarray:
        shares = across_replicas(self.strategy, fn)
        return map_batches(lambda batch, _: shares(batch), as_unit_float(images), self.batch_size)

    def score(self, images: np.ndarray) -> np.ndarray:
        """Detection scores, higher = more in-distribution."""
        return self._batched(self._score, images)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Semantic label: argmax over the first K classes."""
        return self._batched(self._classify, images)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(accepted as in-distribution, class label) per image."""
        if self.threshold is None:
            raise InvalidConfigError(
                "detector has no threshold; use load_detector or calibrate() first"
            )
        return self.score(images) >= self.threshold, self.classify(images)

    def calibrate(self, in_distribution_images: np.ndarray, tpr: float = 0.95) -> float:
        """Sets the threshold so that a share `tpr` of these (clean) images is accepted."""
        self.threshold = threshold_at_tpr(self.score(in_distribution_images), tpr)
        return self.threshold


def load_network(
    run_dir: str, overrides: dict | None = None, strategy: tf.distribute.Strategy | None = None
) -> tuple[keras.Model, dict, InDistributionData]:
    """The trained network of a run (final weights, else its latest checkpoint), its variables
    created under `strategy` when given."""
    config = {**load_run_config(run_dir), **(overrides or {})}
    method = method_for(config)
    data = load_in_distribution(
        config["dataset"], config.get("data_dir") or None, config.get("download", True)
    )
    scope = (strategy or tf.distribute.get_strategy()).scope()
    with scope, precision_policy(config.get("precision", "float32")):
        network = build_network(config["model"], method, data.num_classes, data.normalization)
    final = os.path.join(run_dir, "network.weights.h5")
    if os.path.exists(final):
        load_weights_checked(network, final)
    else:
        wrapper = RobustOODModel(network, method, data.num_classes)
        wrapper.build((None, 32, 32, 3))
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
        if CheckpointManager(run_dir).restore(wrapper, optimizer) is None:
            raise InvalidConfigError(
                f"{run_dir} has no trained weights yet (no checkpoint); train first"
            )
    return network, {**config, "num_classes": data.num_classes}, data


def load_detector(
    run_dir: str,
    scorer: str | None = None,
    recompute_threshold: bool = False,
    overrides: dict | None = None,
    scorer_options: dict | None = None,
) -> Detector:
    """Loads a trained run as a Detector with its 95%-TPR threshold (cached in the run)."""
    return load_run(run_dir, scorer, recompute_threshold, overrides, scorer_options=scorer_options)[
        0
    ]


def fitted_scorer(
    scorer: Scorer, run_dir: str, network: keras.Model, config: dict, data: InDistributionData,
    options: dict, write: bool = True,
) -> tuple[Scorer, dict]:  # fmt: skip
    """The scorer with its constants chosen on the run's calibration data (atom_tf.evaluation.
    calibration), cached in run_dir/scorer_<name>.json for these options."""
    from atom_tf.evaluation.calibration import load_calibration

    path = os.path.join(run_dir, f"scorer_{scorer.name}.json")
    params = None
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        params = saved["params"] if saved.get("options") == options else None
    if params is None:
        params = scorer.fit(load_calibration(network, config, data), options)
        if write:
            with open(f"{path}.tmp", "w") as f:
                json.dump({"options": options, "params": params}, f)
            os.replace(f"{path}.tmp", path)
    return scorer.bind(params, network, data.num_classes), params


def load_run(
    run_dir: str,
    scorer: str | None = None,
    recompute_threshold: bool = False,
    overrides: dict | None = None,
    strategy: tf.distribute.Strategy | None = None,
    scorer_options: dict | None = None,
) -> tuple[Detector, dict, InDistributionData]:
    """The detector of a run, its configuration and its in-distribution data; with a
    `strategy`, its batches are split over the replicas. Scorers with constants to choose
    (ODIN, Mahalanobis) are fitted on the run's calibration data first (once, then cached)."""
    network, config, data = load_network(run_dir, overrides, strategy)
    method = method_for(config)
    name = scorer or method.scorer
    chosen = get_scorer(name)
    if chosen.kplus1_only and not method.kplus1:
        raise InvalidConfigError(
            f"scorer {name!r} needs outputs beyond the K classes; {config['method']!r} is K-way"
        )
    writer = strategy is None or is_chief(strategy)
    params = None
    if chosen.fit is not None:
        chosen, params = fitted_scorer(
            chosen, run_dir, network, config, data, scorer_options or {}, writer
        )
    detector = Detector(network, data.num_classes, chosen, strategy=strategy, scorer_params=params)
    path = os.path.join(run_dir, f"threshold_{name}.json")
    record = None
    if os.path.exists(path) and not recompute_threshold:
        with open(path) as f:
            record = json.load(f)
    if record is not None and record.get("params") == params:
        detector.threshold = float(record["threshold"])
    else:
        detector.calibrate(data.x_test)
        if not writer:
            return detector, config, data
        with open(path, "w") as f:
            json.dump(
                {"threshold": detector.threshold, "tpr": 0.95, "scorer": name, "params": params}, f
            )
    return detector, config, data
