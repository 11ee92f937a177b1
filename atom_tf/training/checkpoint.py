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
import tempfile
import warnings
from collections.abc import Callable

import keras
import numpy as np

from atom_tf.errors import InvalidConfigError, describe_cause
from atom_tf.files import (
    DamagedFileError,
    atomic_write_json,
    atomic_write_text,
    check_record,
    read_json,
    sha256_of_file,
)


def save_weights_atomic(model: keras.Model, path: str) -> str:
    """`model.save_weights(path)` through a temporary file and a rename; returns the file's
    SHA-256, which the record written after it (the checkpoint pointer, summary.json) keeps."""
    tmp = f"{path[: -len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5"
    model.save_weights(tmp)
    digest = sha256_of_file(tmp)
    os.replace(tmp, path)
    return digest


# Where a training model's weights file (Keras 3's layout: sub-layers by class name) keeps
# the network: the model's only sub-layer. Its name depends on the network's class
# (functional, ccu_network), so the part is found as the one group under it.
NETWORK_PART = "layers"


def extract_part(path: str, part: str, folder: str) -> str:
    """A weights file of the one model stored under group `part` of `path`, in `folder`."""
    import h5py

    out = os.path.join(folder, "part.weights.h5")
    with h5py.File(path, "r") as source, h5py.File(out, "w") as target:
        children = list(source[part]) if part in source else []
        if len(children) != 1:
            raise ValueError(f"expected one model under {part!r}, found {children}")
        group = source[part][children[0]]
        for name in group:
            source.copy(group[name], target, name=name)
        for key, value in group.attrs.items():
            target.attrs[key] = value
    return out


def checked_digest(path: str, sha256: str | None = None) -> str:
    """The SHA-256 of a weights file that exists and, with `sha256` (recorded when it was
    written), still holds the bytes it was written with; else one line saying what to do."""
    if not os.path.isfile(path):
        raise DamagedFileError(f"{path} is missing; retrain, or restore the run folder")
    digest = sha256_of_file(path)
    if sha256 is not None and digest != sha256:
        raise DamagedFileError(
            f"{path} is damaged: its SHA-256 {digest[:12]}… differs from {sha256[:12]}… recorded "
            "when it was written; restore the run folder or retrain"
        )
    return digest


def load_weights_checked(
    model: keras.Model, path: str, sha256: str | None = None, part: str | None = None
) -> str:
    """`model.load_weights(path)`, with a weights file that does not fit the model (another
    atom_tf version's layers, another architecture, a damaged file) reported in one line.
    Keras only warns when it leaves some layers freshly initialised; that is an error here.
    With `sha256` (recorded when the file was written) a file whose bytes changed is refused
    before it is read. With `part`, `model` is the sub-layer of the file's model stored at
    that HDF5 group (a training model's network). Returns the file's SHA-256 (what results
    computed from it depend on)."""
    digest = checked_digest(path, sha256)
    reason = None
    with warnings.catch_warnings(record=True) as caught, tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("always")
        try:
            model.load_weights(path if part is None else extract_part(path, part, tmp))
        except Exception as error:  # h5py raises many types for a damaged file
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
    return digest


POINTER_HINT = "delete the checkpoints folder to train from scratch, or restore the run folder"


class CheckpointManager:
    def __init__(self, run_dir: str, keep: int = 2) -> None:
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep = keep

    def pointer(self) -> dict | None:
        """The `latest` record ({"epoch": last completed epoch, 0-based, and the SHA-256 of its
        model and optimizer files where this version wrote them}), or None for a fresh run."""
        path = os.path.join(self.dir, "latest")
        if not os.path.exists(path):
            return None
        record = check_record(path, read_json(path, hint=POINTER_HINT), {"epoch": int},
                              POINTER_HINT)  # fmt: skip
        for key in ("model_sha256", "optimizer_sha256"):
            if key in record:
                check_record(path, record, {key: str}, POINTER_HINT)
        if record["epoch"] < 0:
            raise DamagedFileError(f"{path}: epoch {record['epoch']} < 0; {POINTER_HINT}")
        return record

    def latest_epoch(self) -> int | None:
        """The last completed epoch (0-based), or None for a fresh run."""
        record = self.pointer()
        return None if record is None else record["epoch"]

    def _path(self, epoch: int, name: str) -> str:
        return os.path.join(self.dir, f"epoch_{epoch:04d}", name)

    def save(self, epoch: int, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        path = os.path.join(self.dir, f"epoch_{epoch:04d}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        model_sha = save_weights_atomic(model, self._path(epoch, "model.weights.h5"))
        optimizer_path = self._path(epoch, "optimizer.npz")
        np.savez(optimizer_path, **{f"v{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
        record = {"epoch": epoch, "model_sha256": model_sha,
                  "optimizer_sha256": sha256_of_file(optimizer_path)}  # fmt: skip
        atomic_write_text(os.path.join(self.dir, "latest"), json.dumps(record))
        for name in sorted(os.listdir(self.dir)):
            if (
                name.startswith("epoch_")
                and name[6:].isdigit()
                and int(name[6:]) <= epoch - self.keep
            ):
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def restore_model(self, model: keras.Model) -> tuple[int, str] | None:
        """Loads the latest checkpoint's weights into built `model` (no optimizer: what a
        detector needs); returns (epoch, SHA-256 of the weights file), or None."""
        record = self.pointer()
        if record is None:
            return None
        epoch = record["epoch"]
        digest = load_weights_checked(
            model, self._path(epoch, "model.weights.h5"), record.get("model_sha256")
        )
        return epoch, digest

    def restore_network(self, network: keras.Model) -> tuple[int, str] | None:
        """Loads the network out of the latest checkpoint of the training model (its one
        sub-layer, NETWORK_PART), building no training model and no optimizer; returns
        (epoch, SHA-256 of the checkpoint's weights file), or None."""
        record = self.pointer()
        if record is None:
            return None
        epoch = record["epoch"]
        digest = load_weights_checked(network, self._path(epoch, "model.weights.h5"),
                                      record.get("model_sha256"), part=NETWORK_PART)  # fmt: skip
        return epoch, digest

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> int | None:
        """Loads the latest checkpoint into built `model` and `optimizer`; returns its epoch."""
        restored = self.restore_model(model)
        if restored is None:
            return None
        epoch = restored[0]
        path = self._path(epoch, "optimizer.npz")
        optimizer.build(model.trainable_variables)
        expected = self.pointer().get("optimizer_sha256")
        if os.path.isfile(path) and expected is not None and sha256_of_file(path) != expected:
            raise DamagedFileError(
                f"{path} is damaged: its SHA-256 differs from the one recorded in "
                f"{self.dir}/latest; {POINTER_HINT}"
            )
        try:
            with np.load(path) as saved:
                values = [saved[f"v{i}"] for i in range(len(optimizer.variables))]
        except Exception as err:  # a missing, truncated or foreign file: numpy raises many types
            raise DamagedFileError(
                f"{path} cannot be read ({describe_cause(err)}); {POINTER_HINT}"
            ) from err
        for variable, value in zip(optimizer.variables, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise DamagedFileError(
                    f"{path} holds optimizer state of shape {value.shape} where this run has "
                    f"{tuple(variable.shape)}; {POINTER_HINT}"
                )
            variable.assign(value)
        return epoch


SUMMARY = "summary.json"  # written last by a finished training, with its weights' SHA-256
FINAL_WEIGHTS = "network.weights.h5"


def read_summary(run_dir: str) -> dict | None:
    """A finished run's summary.json (checked), or None while the run has not finished."""
    path = os.path.join(run_dir, SUMMARY)
    if not os.path.exists(path):
        return None
    hint = "run the training command again to rewrite it, or restore the run folder"
    record = check_record(path, read_json(path, hint=hint),
                          {"test_accuracy": float, "epochs": int}, hint)  # fmt: skip
    if "weights_sha256" in record:
        check_record(path, record, {"weights_sha256": str}, hint)
    return record


def write_summary(run_dir: str, network: keras.Model, summary: dict) -> dict:
    """Saves the final network, then summary.json (atomically, last) with its SHA-256."""
    digest = save_weights_atomic(network, os.path.join(run_dir, FINAL_WEIGHTS))
    summary = {**summary, "weights_sha256": digest}
    atomic_write_json(os.path.join(run_dir, SUMMARY), summary)
    return summary


def finished_weights(run_dir: str) -> tuple[str, str | None] | None:
    """(final weights file, its recorded SHA-256) of a finished run, else None. A run written
    before summaries recorded the digest gives None as the digest."""
    summary = read_summary(run_dir)
    path = os.path.join(run_dir, FINAL_WEIGHTS)
    if summary is None or not os.path.exists(path):
        return None
    return path, summary.get("weights_sha256")


def recorded_weights_sha256(run_dir: str) -> str | None:
    """The SHA-256 the run recorded for the weights a detector loads now (final, else the
    latest checkpoint's), without reading them; None for runs that recorded none."""
    final = finished_weights(run_dir)
    if final is not None:
        return final[1]
    pointer = CheckpointManager(run_dir).pointer()
    return None if pointer is None else pointer.get("model_sha256")


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
        hint = f"pass --overwrite to start afresh or choose another {flag}"
        previous = read_json(path, hint=hint)
        if not isinstance(previous, dict):
            raise DamagedFileError(f"{path} holds no settings object; {hint}")
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
    atomic_write_json(path, identity)


def check_run_config(
    run_dir: str, config: dict, overwrite: bool, canonical: Callable[[dict], dict] | None = None
) -> None:
    """A training run directory: config.json must match (or --overwrite starts afresh)."""
    claim_directory(run_dir, "config.json", config, overwrite, "--output_dir", canonical)


def load_run_config(run_dir: str) -> dict:
    """A run's config.json as saved (trainer.read_run_config also checks every field)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise InvalidConfigError(f"{run_dir} is not a training run folder (no such folder)")
    if not os.path.exists(path):
        raise InvalidConfigError(f"{run_dir} is not a training run: no config.json in it")
    record = read_json(path, hint="restore the run folder or retrain")
    if not isinstance(record, dict):
        raise DamagedFileError(f"{path} holds no settings object; restore the run folder")
    return record
