"""Per-epoch checkpoints (model, optimizer, epoch) written atomically, and run configuration.

Layout in a run directory: `checkpoints/epoch_NNNN/{model.weights.h5, optimizer.npz}` and the
pointer file `checkpoints/latest` (replaced atomically, written last): a process killed at any
moment leaves either the previous or the new checkpoint, never a torn one. All other
randomness in atom_tf is derived from (seed, epoch, step), so (weights, optimizer state,
epoch) is the whole training state.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable

import keras
import numpy as np

from atom_tf.errors import InvalidConfigError, describe_cause


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_weights_checked(model: keras.Model, path: str) -> None:
    """`model.load_weights(path)`, with a weights file that does not fit the model (another
    atom_tf version's layers, another architecture, a damaged file) reported in one line.
    Keras only warns when it leaves some layers freshly initialised; that is an error here."""
    reason = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, OSError) as error:
            reason = describe_cause(error)
    partial = [w for w in caught if "freshly-initialized" in str(w.message)]
    for w in caught:
        if w not in partial:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if reason is None and partial:
        reason = "some layers found no saved weights"
    if reason is not None:
        raise InvalidConfigError(
            f"{path} does not fit the {model.name} this atom_tf builds ({reason}); it was "
            "written by another atom_tf version or is damaged: retrain, or use the version "
            "that wrote it"
        )


class CheckpointManager:
    def __init__(self, run_dir: str, keep: int = 2) -> None:
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep = keep

    def latest_epoch(self) -> int | None:
        """The last completed epoch (0-based), or None for a fresh run."""
        pointer = os.path.join(self.dir, "latest")
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            return int(json.load(f)["epoch"])

    def save(self, epoch: int, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        path = os.path.join(self.dir, f"epoch_{epoch:04d}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        model.save_weights(os.path.join(path, "model.weights.h5"))
        np.savez(
            os.path.join(path, "optimizer.npz"),
            **{f"v{i}": v.numpy() for i, v in enumerate(optimizer.variables)},
        )
        _atomic_write(os.path.join(self.dir, "latest"), json.dumps({"epoch": epoch}))
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("epoch_") and int(name[6:]) <= epoch - self.keep:
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> int | None:
        """Loads the latest checkpoint into built `model` and `optimizer`; returns its epoch."""
        epoch = self.latest_epoch()
        if epoch is None:
            return None
        path = os.path.join(self.dir, f"epoch_{epoch:04d}")
        load_weights_checked(model, os.path.join(path, "model.weights.h5"))
        optimizer.build(model.trainable_variables)
        with np.load(os.path.join(path, "optimizer.npz")) as saved:
            for i, variable in enumerate(optimizer.variables):
                variable.assign(saved[f"v{i}"])
        return epoch


_HELD_LOCKS: dict[str, object] = {}


def lock_directory(directory: str) -> None:
    """An exclusive lock on `directory` (its `.lock` file) held for the life of this process:
    a second training or evaluation started in the same folder fails in one line."""
    import fcntl

    os.makedirs(directory, exist_ok=True)
    key = os.path.realpath(directory)
    lock_path = os.path.join(directory, ".lock")
    held = _HELD_LOCKS.get(key)
    if held is not None and os.path.exists(lock_path):
        return
    handle = open(lock_path, "a+")  # noqa: SIM115 -- kept open: closing it releases the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise InvalidConfigError(
            f"{directory} is in use by another process (pid {owner}); wait for it to finish or "
            "stop it, then run again"
        ) from err
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD_LOCKS[key] = handle


def claim_directory(
    directory: str,
    record: str,
    identity: dict,
    overwrite: bool,
    flag: str,
    canonical: Callable[[dict], dict] | None = None,
) -> None:
    """Refuses a directory that another process works in, or whose `record` file holds a
    different identity (one line naming what differs); `overwrite` clears the directory first.
    Then records `identity` there and holds the directory until this process ends.
    `canonical` maps a record to what decides the result (both sides are compared through it)."""
    path = os.path.join(directory, record)
    lock_directory(directory)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if overwrite:
            shutil.rmtree(directory)
            lock_directory(directory)
        elif (canonical or dict)(previous) != (canonical or dict)(identity):
            before, after = (canonical or dict)(previous), (canonical or dict)(identity)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            raise InvalidConfigError(
                f"{directory} holds work done with other settings ({', '.join(changed)} differ); "
                f"pass --overwrite to replace it or choose another {flag}"
            )
        else:
            return  # the same work: resume it, nothing to record
    os.makedirs(directory, exist_ok=True)
    _atomic_write(path, json.dumps(identity, indent=2, sort_keys=True))


def check_run_config(
    run_dir: str, config: dict, overwrite: bool, canonical: Callable[[dict], dict] | None = None
) -> None:
    """A training run directory: config.json must match (or --overwrite starts afresh)."""
    claim_directory(run_dir, "config.json", config, overwrite, "--output_dir", canonical)


def load_run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise InvalidConfigError(f"{run_dir} is not a training run: no config.json in it")
    with open(path) as f:
        return json.load(f)
