"""A detector as a self-contained artefact (Keras 3's export): SavedModel, LiteRT or ONNX,
with the network, the input normalisation, the scorer and its fitted constants and the
threshold inside, and `metadata.json` beside it.

The serving function takes `images`, a batch [N, H, W, 3] of float32 in [0, 1] at the run's
image size (the SavedModel also has `serve_uint8` for uint8 0-255), and returns

    probabilities  [N, K] float32  softmax over the K classes
    label          [N]    int64    argmax over the K classes
    score          [N]    float32  the detection score, higher = more in-distribution
    accepted       [N]    bool     score >= the threshold (docs/protocol.md §5)

An artefact takes exactly H×W: resize other images first (short side to H, centre crop, as
`bin/detect.py` and `Detector.score(..., resize=True)` do). Nothing of atom_tf is needed to
run one: `tf.saved_model.load`, the `ai-edge-litert` interpreter or `onnxruntime`.
`ExportedDetector` loads an export back behind the `Detector` interface.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.inputs import as_unit_float, check_images
from atom_tf.files import atomic_write_json, digest_of

FORMATS = ("saved_model", "litert", "onnx")
ARTEFACTS = {"saved_model": "saved_model", "litert": "detector.tflite", "onnx": "detector.onnx"}
OUTPUTS = ("probabilities", "label", "score", "accepted")
METADATA = "metadata.json"
EXPORT_VERSION = 1


class ServingDetector(keras.Model):
    """The detector's whole decision as one Keras model: images -> the four OUTPUTS."""

    def __init__(self, network: keras.Model, score: Callable, num_classes: int,
                 threshold: float, input_gradient: bool) -> None:  # fmt: skip
        super().__init__(name="atom_tf_detector")
        self.network, self.num_classes = network, num_classes
        self.score_fn, self.threshold, self.input_gradient = score, float(threshold), input_gradient

    def call(self, images):
        logits = self.network(images, training=False)
        if self.input_gradient:  # the scorer differentiates its own forward pass
            score = self.score_fn(lambda x: self.network(x, training=False), images)
        else:  # one forward pass for the class and the score

            def logits_fn(x):
                return logits if x is images else self.network(x, training=False)

            score = self.score_fn(logits_fn, images)
        class_logits = logits[:, : self.num_classes]
        score = tf.cast(score, tf.float32)
        return {
            "probabilities": tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1),
            "label": tf.argmax(class_logits, axis=-1, output_type=tf.int64),
            "score": score,
            "accepted": score >= tf.constant(self.threshold, tf.float32),
        }


def check_format(fmt: str, scorer_name: str, input_gradient: bool) -> None:
    """One line for a format atom_tf cannot export, or cannot export this scorer to."""
    if fmt not in FORMATS:
        raise InvalidConfigError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if input_gradient and fmt != "saved_model":
        raise InvalidConfigError(
            f"the {scorer_name} score differentiates its input (its pre-processing step), which "
            f"{fmt} cannot carry; export it with --format=saved_model, or choose a scorer "
            "without input pre-processing (--scorer=msp, energy, maxlogit, kplus1)"
        )


def prepare_output(output_dir: str, overwrite: bool) -> None:
    """An empty folder to write to: an existing non-empty one only with `overwrite`."""
    if os.path.isfile(output_dir):
        raise InvalidConfigError(f"--output: {output_dir} is a file; give a folder")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not overwrite:
            raise InvalidConfigError(
                f"--output: {output_dir} is not empty; choose another folder or pass --overwrite"
            )
        shutil.rmtree(output_dir)
    os.makedirs(output_dir, exist_ok=True)


def export_detector(
    detector,
    output_dir: str,
    fmt: str = "saved_model",
    metadata: dict | None = None,
    image_size: int = 32,
    overwrite: bool = False,
) -> dict:
    """Writes `detector` (a `Detector` with a threshold) as `fmt` into `output_dir` with
    `metadata.json` (the given `metadata` plus what the artefact is); returns that metadata
    with the export's seconds and bytes."""
    scorer = detector.scorer
    check_format(fmt, scorer.name, scorer.input_gradient)
    if detector.threshold is None:
        raise InvalidConfigError("the detector has no threshold; load it with load_detector")
    prepare_output(output_dir, overwrite)
    serving = ServingDetector(
        detector.network, lambda fn, x: scorer.score(fn, x, detector.num_classes),
        detector.num_classes, detector.threshold, scorer.input_gradient,
    )  # fmt: skip
    serving(tf.zeros((1, image_size, image_size, 3)))
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
    artefact = os.path.join(output_dir, ARTEFACTS[fmt])
    start = time.perf_counter()
    if fmt == "saved_model":
        archive = keras.export.ExportArchive()
        archive.track(serving)
        archive.add_endpoint("serve", serving.call, input_signature=[spec])
        archive.add_endpoint(
            "serve_uint8",
            lambda images: serving.call(tf.cast(images, tf.float32) / 255.0),
            input_signature=[tf.TensorSpec(spec.shape, tf.uint8, name="images")],
        )
        archive.write_out(artefact, verbose=False)
    elif fmt == "litert":
        # built-in kernels only: the ai-edge-litert interpreter has no TensorFlow ops
        serving.export(artefact, format="litert", input_signature=[spec], verbose=False,
                       target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})  # fmt: skip
    else:
        export_onnx(serving, spec, artefact)
    seconds = time.perf_counter() - start
    record = {
        "class_names": list(getattr(detector, "class_names", None) or []),
        **(metadata or {}),
        "atom_tf_export": EXPORT_VERSION,
        "format": fmt,
        "artefact": ARTEFACTS[fmt],
        "input": {"name": "images", "shape": [None, image_size, image_size, 3],
                  "dtype": "float32", "range": [0.0, 1.0],
                  **({"uint8_signature": "serve_uint8"} if fmt == "saved_model" else {})},
        "outputs": list(OUTPUTS),
        "num_classes": detector.num_classes,
        "threshold": float(detector.threshold),
        "scorer": {"name": scorer.name, "constants": detector.scorer_summary()},
        "versions": versions(fmt),
    }  # fmt: skip
    atomic_write_json(os.path.join(output_dir, METADATA), record)
    return {**record, "seconds": seconds, "bytes": artefact_bytes(artefact)}


def export_onnx(serving: ServingDetector, spec: tf.TensorSpec, path: str) -> None:
    """The serving function as ONNX (tf2onnx, Keras 3's converter), frozen first: Keras'
    `export(format="onnx")` leaves the constants a function captures (the Normalization
    layer's mean and variance) as graph inputs the caller would have to feed. Inputs and
    outputs keep their names (`images`; OUTPUTS)."""
    import warnings

    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    def named(images):
        return {k: tf.identity(v, name=k) for k, v in serving.call(images).items()}

    frozen = convert_variables_to_constants_v2(tf.function(named).get_concrete_function(spec))
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # tf2onnx calls TensorFlow 1 APIs, each with a deprecation note
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(), input_names=["images:0"],
                output_names=[f"{k}:0" for k in OUTPUTS],
            )  # fmt: skip
    finally:
        logger.setLevel(level)
    rename = {"images:0": "images", **{f"{k}:0": k for k in OUTPUTS}}
    for node in proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in (*proto.graph.input, *proto.graph.output):
        value.name = rename.get(value.name, value.name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def versions(fmt: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for package in ("atom_tf", "tf2onnx") if fmt == "onnx" else ("atom_tf",):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def artefact_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)  # fmt: skip


def is_export(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METADATA)) and not os.path.isfile(
        os.path.join(path, "config.json")
    )


def read_metadata(path: str) -> dict:
    """An export's metadata.json, checked (one line when it is not an atom_tf export)."""
    from atom_tf.files import DamagedFileError, read_json

    try:
        record = read_json(os.path.join(path, METADATA))
    except DamagedFileError as err:
        raise InvalidConfigError(f"{err}; export the detector again") from None
    if not isinstance(record, dict) or record.get("format") not in FORMATS:
        raise InvalidConfigError(f"{path}/{METADATA} is not the metadata of an atom_tf export")
    if record.get("atom_tf_export") != EXPORT_VERSION:
        raise InvalidConfigError(
            f"{path} was exported by another atom_tf version (export format "
            f"{record.get('atom_tf_export')}, this one reads {EXPORT_VERSION}); export it again"
        )
    return record


def runtime(path: str, record: dict) -> Callable[[np.ndarray], dict]:
    """float32 images -> {output: array}, through the format's own runtime."""
    artefact = os.path.join(path, record["artefact"])
    if record["format"] == "saved_model":
        serve = tf.saved_model.load(artefact).signatures["serving_default"]
        return lambda images: {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
    if record["format"] == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=artefact).get_signature_runner()
        return lambda images: runner(images=images)
    import onnxruntime

    session = onnxruntime.InferenceSession(artefact, providers=["CPUExecutionProvider"])
    return lambda images: dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"images": images}),
                                   strict=True))  # fmt: skip


@dataclasses.dataclass
class ExportedDetector:
    """An export behind the `Detector` interface: score, classify, predict, probabilities."""

    path: str
    metadata: dict
    batch_size: int = 256

    def __post_init__(self) -> None:
        self._run = runtime(self.path, self.metadata)
        self.threshold = float(self.metadata["threshold"])
        self.num_classes = int(self.metadata["num_classes"])
        self.image_size = int(self.metadata["input"]["shape"][1])
        self.class_names = list(self.metadata.get("class_names") or [])

    def outputs(self, images: np.ndarray, resize: bool = False) -> dict[str, np.ndarray]:
        """The four OUTPUTS of a batch (checked and, with `resize`, brought to the size)."""
        images = as_unit_float(check_images(images, resize, self.image_size))
        if not len(images):  # the runtimes refuse a batch of none
            images = np.zeros((1, *images.shape[1:]), np.float32)
            return {k: np.asarray(v)[:0] for k, v in self._run(images).items()}
        parts = [self._run(images[i : i + self.batch_size])
                 for i in range(0, len(images), self.batch_size)]  # fmt: skip
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in OUTPUTS}

    def score(self, images: np.ndarray, resize: bool = False) -> np.ndarray:
        return self.outputs(images, resize)["score"].astype(np.float32)

    def classify(self, images: np.ndarray, resize: bool = False) -> np.ndarray:
        return self.outputs(images, resize)["label"].astype(np.int64)

    def predict(self, images: np.ndarray, resize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        out = self.outputs(images, resize)
        return out["accepted"].astype(bool), out["label"].astype(np.int64)


def load_export(path: str) -> ExportedDetector:
    return ExportedDetector(path, read_metadata(path))


def describe_run(config: dict, state, tpr: float) -> dict:
    """What metadata.json records of the run an export comes from (the threshold's TPR on its
    in-distribution test set); the class names come from the detector itself."""
    return {
        "tpr": tpr,
        "run": {"method": config.get("method"), "model": config.get("model"),
                "dataset": config.get("dataset"), "config_sha256": digest_of(config),
                "weights_sha256": state.weights_sha256, "numerics": state.numerics},
    }  # fmt: skip
