"""Evaluation: scorers, threat models (natural, L∞, corruption, compositional), metrics,
reports, the open-world detector, and the reproduction suite.

Importing the package registers every built-in threat model (`corruption_threats` adds the
corruption and compositional ones to `threats`' registry) and scorer (`mahalanobis`)."""

from __future__ import annotations

from atom_tf.evaluation import (
    corruption_threats,  # noqa: F401  (registers its threat models)
    mahalanobis,  # noqa: F401  (registers its scorer)
)


def __getattr__(name: str):
    if name in ("EvalSettings", "evaluate"):
        from atom_tf.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'atom_tf.evaluation' has no attribute {name!r}")


__all__ = ["EvalSettings", "evaluate"]
