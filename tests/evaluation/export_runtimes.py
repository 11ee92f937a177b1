"""Runs exported detectors the way serving code does, without atom_tf: run by
tests/evaluation/test_export.py in a fresh process.

    python export_runtimes.py IMAGES.npz OUT.npz saved_model=DIR litert=FILE onnx=FILE

IMAGES.npz holds `images` (float32 [N, H, W, 3] in [0, 1]); OUT.npz gets `<format>_<output>`
for each artefact and each of probabilities, label, score, accepted (the SavedModel's uint8
signature as `saved_model_uint8_<output>`, fed the images rounded to 0-255).
"""

import sys

import numpy as np


def saved_model(path: str, images: np.ndarray) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=images).items()}
    pixels = tf.constant(np.round(images * 255).astype(np.uint8))
    as_uint8 = loaded.signatures["serve_uint8"](images=pixels)
    out.update({f"uint8_{k}": v.numpy() for k, v in as_uint8.items()})
    return out


def litert(path: str, images: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return dict(Interpreter(model_path=path).get_signature_runner()(images=images))


def onnx(path: str, images: np.ndarray) -> dict:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images}), strict=True))


def main() -> None:
    images = np.load(sys.argv[1])["images"]
    results = {}
    for argument in sys.argv[3:]:
        fmt, path = argument.split("=", 1)
        for name, value in {"saved_model": saved_model, "litert": litert, "onnx": onnx}[fmt](
            path, images
        ).items():
            results[f"{fmt}_{name}"] = np.asarray(value)
    assert "atom_tf" not in sys.modules, "the artefacts must run without atom_tf"
    np.savez(sys.argv[2], **results)


if __name__ == "__main__":
    main()
