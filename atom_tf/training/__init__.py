"""Training: methods, objectives, PGD, outlier mining, the robust train step, the trainer and
its checkpoints. `from atom_tf.training import TrainConfig, train` is the entry point."""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("TrainConfig", "train"):  # lazy: importing a submodule stays cheap
        from atom_tf.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'atom_tf.training' has no attribute {name!r}")


__all__ = ["TrainConfig", "train"]
