"""Evaluation: scorers, threat models (natural, L∞, corruption, compositional), metrics,
calibration, reports, the runner behind `bin/evaluate.py` and the open-world detector.

The scorer and threat registries import the modules that hold their built-in entries when
they are first read (`atom_tf.registry.Registry`); nothing here is imported for its side
effects."""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("EvalSettings", "evaluate"):
        from atom_tf.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'atom_tf.evaluation' has no attribute {name!r}")


__all__ = ["EvalSettings", "evaluate"]
