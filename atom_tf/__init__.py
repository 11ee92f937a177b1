"""atom_tf: robust out-of-distribution detection (ATOM) for Keras 3 / TensorFlow."""

from __future__ import annotations


def load_detector(run_dir: str, scorer: str | None = None, recompute_threshold: bool = False):
    """Loads a trained run as an open-world detector (see atom_tf.evaluation.detector)."""
    from atom_tf.evaluation.detector import load_detector as _load

    return _load(run_dir, scorer, recompute_threshold)


__all__ = ["load_detector"]
