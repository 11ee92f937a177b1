"""atom_tf: robust out-of-distribution detection (ATOM) for Keras 3 / TensorFlow."""

from __future__ import annotations

from atom_tf import cpu as _cpu

# oneDNN on for AVX2-only CPUs, before TensorFlow is imported (atom_tf/cpu.py)
_cpu.CHOICE = _cpu.choose_onednn(apply=True)


def load_detector(run_dir: str, scorer: str | None = None, recompute_threshold: bool = False,
                  scorer_options: dict | None = None):  # fmt: skip
    """Loads a trained run, or an export of one, as an open-world detector (see
    atom_tf.evaluation.detector)."""
    from atom_tf.evaluation.detector import load_detector as _load

    return _load(run_dir, scorer, recompute_threshold, scorer_options=scorer_options)


__all__ = ["load_detector"]
