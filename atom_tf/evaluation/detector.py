"""The open-world detector of the paper's Figure 1, usable without the command-line tools.

    detector = atom_tf.load_detector("runs/digits_atom")
    accepted, labels = detector.predict(images)   # images: uint8 or float in [0,1]

`score` is the detection score (higher = more in-distribution); `threshold` accepts 95% of the
in-distribution test set (docs/protocol.md §5), saved with the run and recomputed on demand.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from atom_tf.batching import map_batches
from atom_tf.cpu import numerics
from atom_tf.data import InDistributionData, load_in_distribution
from atom_tf.distribution import across_replicas, is_chief, precision_policy
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.inputs import as_unit_float, check_images
from atom_tf.evaluation.metrics import threshold_at_tpr
from atom_tf.evaluation.scorers import Scorer, get_scorer
from atom_tf.files import (
    DamagedFileError,
    atomic_write_json,
    digest_of,
    is_json_number,
    read_json,
    sha256_of_arrays,
    try_write,
)
from atom_tf.training.checkpoint import (
    FINAL_WEIGHTS,
    CheckpointManager,
    finished_weights,
    load_weights_checked,
)
from atom_tf.training.methods import method_for
from atom_tf.training.networks import build_network
from atom_tf.training.trainer import read_run_config


@dataclasses.dataclass
class Detector:
    """A trained network with its detection score and threshold (load_detector):

    - `score(images)`: [N] float32, higher = more in-distribution;
    - `classify(images)`: [N] int64, the argmax over the K classes;
    - `predict(images)`: ([N] bool accepted = score >= threshold, [N] int64 label);
    - `threshold`: accepts 95 % of the in-distribution test set (`calibrate` to choose);
    - `export(folder, fmt)`: the same decision as a SavedModel, LiteRT or ONNX artefact.

    `images` is a batch [N, 32, 32, 3] of uint8 or float in [0, 1] (other sizes with
    `resize=True`); anything else is refused in one line (atom_tf.evaluation.inputs)."""

    network: keras.Model
    num_classes: int
    scorer: Scorer
    threshold: float | None = None
    batch_size: int = 256
    strategy: tf.distribute.Strategy | None = None  # every batch split over its replicas
    scorer_params: dict | None = None  # constants a fitted scorer chose (ODIN's η, ...)
    run_state: RunState | None = None  # which weights of which run (load_detector)
    class_names: list[str] | None = None  # label i's name (load_detector: the dataset's)

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

    def score(self, images: np.ndarray, resize: bool = False) -> np.ndarray:
        """Detection scores (float32), higher = more in-distribution. `images`: [N, 32, 32, 3]
        uint8 or float in [0, 1] (other sizes with `resize`)."""
        images = check_images(images, resize)
        if not len(images):
            return np.zeros(0, np.float32)
        return self._batched(self._score, images)

    def classify(self, images: np.ndarray, resize: bool = False) -> np.ndarray:
        """Semantic label (int64): argmax over the first K classes."""
        images = check_images(images, resize)
        if not len(images):
            return np.zeros(0, np.int64)
        return self._batched(self._classify, images).astype(np.int64)

    def predict(self, images: np.ndarray, resize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(accepted as in-distribution, class label) per image."""
        if self.threshold is None:
            raise InvalidConfigError(
                "detector has no threshold; use load_detector or calibrate() first"
            )
        images = check_images(images, resize)
        return self.score(images) >= self.threshold, self.classify(images)

    def export(self, output_dir: str, fmt: str = "saved_model", metadata: dict | None = None,
               overwrite: bool = False) -> dict:  # fmt: skip
        """Writes this detector, threshold included, as a self-contained SavedModel, LiteRT or
        ONNX artefact with metadata.json (atom_tf.evaluation.export); returns the metadata."""
        from atom_tf.evaluation.export import export_detector

        return export_detector(self, output_dir, fmt, metadata, overwrite=overwrite)

    def calibrate(self, in_distribution_images: np.ndarray, tpr: float = 0.95) -> float:
        """Sets the threshold so that a share `tpr` of these (clean) images is accepted."""
        self.threshold = threshold_at_tpr(self.score(in_distribution_images), tpr)
        return self.threshold


def unfinished_note(run_dir: str, epochs_done: int, epochs: int) -> str:
    return (
        f"note: {run_dir} has not finished training: evaluating its checkpoint after epoch "
        f"{epochs_done} of {epochs}; the numbers will change when it finishes"
    )


def progress_note(run_dir: str, config: dict) -> str | None:
    """The unfinished-run line, from the run's records alone (before anything is loaded)."""
    if finished_weights(run_dir) is not None:
        return None
    pointer = CheckpointManager(run_dir).pointer()
    return (
        None
        if pointer is None
        else unfinished_note(run_dir, pointer["epoch"] + 1, config["epochs"])
    )


@dataclasses.dataclass(frozen=True)
class RunState:
    """Which weights of a run a detector holds: the final ones, or an unfinished run's latest
    checkpoint. `weights_sha256` and `numerics` (atom_tf.cpu.numerics: the TensorFlow
    version, device and kernels) key every result cached from them."""

    finished: bool
    epochs_done: int
    epochs: int
    weights_sha256: str
    test_sha256: str  # the in-distribution test set the threshold is taken on
    numerics: str = ""  # what the scores are computed with (atom_tf.cpu.numerics)

    def note(self, run_dir: str) -> str | None:
        """The warning line for an unfinished run (None when it has finished)."""
        return None if self.finished else unfinished_note(run_dir, self.epochs_done, self.epochs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_network(
    run_dir: str, overrides: dict | None = None, strategy: tf.distribute.Strategy | None = None
) -> tuple[keras.Model, dict, InDistributionData, RunState]:
    """The trained network of a run (final weights, else its latest checkpoint: weights
    only, never the optimizer), its variables created under `strategy` when given."""
    config = {**read_run_config(run_dir), **(overrides or {})}
    method = method_for(config)
    data = load_in_distribution(
        config["dataset"], config.get("data_dir") or None, config.get("download", True)
    )
    scope = (strategy or tf.distribute.get_strategy()).scope()
    with scope, precision_policy(config.get("precision", "float32")):
        network = build_network(config["model"], method, data.num_classes, data.normalization)
    final = finished_weights(run_dir)
    epochs = config["epochs"]
    checkpoints = CheckpointManager(run_dir)
    if final is None and checkpoints.pointer() is None:  # a run older than its summary
        legacy = os.path.join(run_dir, FINAL_WEIGHTS)
        final = (legacy, None) if os.path.exists(legacy) else None
    if final is not None:
        digest, done = load_weights_checked(network, *final), epochs
    else:
        restored = checkpoints.restore_network(network)
        if restored is None:
            raise InvalidConfigError(
                f"{run_dir} has no trained weights yet (no checkpoint); train first"
            )
        done, digest = restored[0] + 1, restored[1]
    test_digest = sha256_of_arrays(data.x_test, data.y_test)
    state = RunState(final is not None, done, epochs, digest, test_digest, numerics())
    return network, {**config, "num_classes": data.num_classes}, data, state


def load_detector(
    run_dir: str,
    scorer: str | None = None,
    recompute_threshold: bool = False,
    overrides: dict | None = None,
    scorer_options: dict | None = None,
):
    """Loads a trained run as a Detector with its 95%-TPR threshold (cached in the run when
    the run folder can be written), or an export (bin/export.py) as an ExportedDetector, the
    same interface run by the export's own runtime. An unfinished run loads its latest
    checkpoint, with a warning."""
    from atom_tf.evaluation.export import is_export, load_export
    from atom_tf.pretrained import resolve_run

    run_dir = resolve_run(run_dir)
    if is_export(run_dir):
        if scorer or recompute_threshold or overrides or scorer_options:
            raise InvalidConfigError(
                f"{run_dir} is an export: its scorer and threshold are fixed inside it"
            )
        return load_export(run_dir)
    detector = load_run(run_dir, scorer, recompute_threshold, overrides,
                        scorer_options=scorer_options)[0]  # fmt: skip
    note = detector.run_state.note(run_dir)
    if note is not None:
        warnings.warn(note.removeprefix("note: "), stacklevel=2)
    return detector


def read_cache(folders: list[str], name: str, key: str) -> dict | None:
    """The payload of cache file `name` in the first of `folders` holding one made for `key`
    (and intact: its payload's digest is stored beside it); None when none is."""
    for folder in folders:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        try:
            record = read_json(path)
        except DamagedFileError as err:
            print(f"note: {err}; it is recomputed", file=sys.stderr)
            continue
        if (
            isinstance(record, dict)
            and record.get("key") == key
            and isinstance(record.get("payload"), dict)
            and record.get("sha256") == digest_of(record["payload"])
        ):
            return record["payload"]
    return None


def write_cache(folders: list[str], name: str, key: str, payload: dict) -> None:
    """Writes the cache file in the first folder that can be written (none: not cached)."""
    record = {"key": key, "payload": payload, "sha256": digest_of(payload)}
    for folder in folders:
        path = os.path.join(folder, name)
        if try_write(lambda path=path: atomic_write_json(path, record)):
            return


def pool_identity(config: dict) -> dict:
    """What the calibration pool is: its name, resolved path, size and modification time."""
    path = config.get("pool_path") or ""
    identity = {"pool": config.get("pool"), "path": os.path.realpath(path) if path else ""}
    if path and os.path.exists(path):
        st = os.stat(path)
        identity.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return identity


def fitted_scorer(
    scorer: Scorer, folders: list[str], network: keras.Model, config: dict,
    data: InDistributionData, options: dict, state: RunState, write: bool = True,
) -> tuple[Scorer, dict]:  # fmt: skip
    """The scorer with its constants chosen on the run's calibration data (atom_tf.evaluation.
    calibration), cached as scorer_<name>.json for these weights, options, test set and pool."""
    from atom_tf.evaluation.calibration import load_calibration

    name = f"scorer_{scorer.name}.json"
    key = digest_of({"weights": state.weights_sha256, "test": state.test_sha256,
                     "numerics": state.numerics, "options": options,
                     "pool": pool_identity(config)})  # fmt: skip
    cached = read_cache(folders, name, key)
    params = cached["params"] if cached is not None else None
    if params is None:
        params = scorer.fit(load_calibration(network, config, data), options)
        if write:
            write_cache(folders, name, key, {"options": options, "params": params})
    return scorer.bind(params, network, data.num_classes), params


def load_run(
    run_dir: str,
    scorer: str | None = None,
    recompute_threshold: bool = False,
    overrides: dict | None = None,
    strategy: tf.distribute.Strategy | None = None,
    scorer_options: dict | None = None,
    cache_dir: str | None = None,
) -> tuple[Detector, dict, InDistributionData]:
    """The detector of a run, its configuration and its in-distribution data; with a
    `strategy`, its batches are split over the replicas. Scorers with constants to choose
    (ODIN, Mahalanobis) are fitted on the run's calibration data first (once, then cached).
    Caches (threshold, fitted constants) are keyed by the weights, the test set and the
    settings they come from; they are written into the run, or into `cache_dir` when the run
    folder cannot be written."""
    from atom_tf.pretrained import resolve_run

    run_dir = resolve_run(run_dir)
    network, config, data, state = load_network(run_dir, overrides, strategy)
    method = method_for(config)
    name = scorer or method.scorer
    chosen = get_scorer(name)
    if chosen.kplus1_only and not method.kplus1:
        raise InvalidConfigError(
            f"scorer {name!r} needs outputs beyond the K classes; {config['method']!r} is K-way"
        )
    writer = strategy is None or is_chief(strategy)
    folders = [run_dir, *([cache_dir] if cache_dir else [])]
    params = None
    if chosen.fit is not None:
        chosen, params = fitted_scorer(
            chosen, folders, network, config, data, scorer_options or {}, state, writer
        )
    detector = Detector(network, data.num_classes, chosen, strategy=strategy,
                        scorer_params=params, run_state=state,
                        class_names=data.names())  # fmt: skip
    threshold_file = f"threshold_{name}.json"
    key = digest_of({"weights": state.weights_sha256, "test": state.test_sha256,
                     "numerics": state.numerics, "scorer": name, "params": params})  # fmt: skip
    record = None if recompute_threshold else read_cache(folders, threshold_file, key)
    if record is not None and is_json_number(record.get("threshold")):
        detector.threshold = float(record["threshold"])
    else:
        detector.calibrate(data.x_test)
        if writer:
            write_cache(folders, threshold_file, key,
                        {"threshold": detector.threshold, "tpr": 0.95, "scorer": name,
                         "params": params})  # fmt: skip
    return detector, config, data
