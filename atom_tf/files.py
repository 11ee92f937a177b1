"""Files a rerun trusts: atomic writes, JSON records read with the file named in any error,
digests of what a cached result depends on, and folders checked before any work starts.

Every reader here turns a damaged, truncated or wrongly typed file into one `UserError` line
naming the file; nothing here unpickles or executes anything it reads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from atom_tf.errors import InvalidConfigError, UserError, describe_cause


class DamagedFileError(UserError):
    """A run, cache or data file that cannot be read as what it should hold."""


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, flushes it to disk, then renames it
    over `path`: a reader sees the old file or the new one, never a torn one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, record: Any) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    """np.savez to a temporary name, then renamed over `path`."""
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_json(path: str, what: str = "", hint: str = "") -> Any:
    """The JSON value in `path`; a missing, unreadable or damaged file fails in one line."""
    label = f"{what} {path}" if what else path
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise DamagedFileError(f"{label} is missing{hint and f'; {hint}'}") from err
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise DamagedFileError(
            f"{label} cannot be read ({reason[:160]}){hint and f'; {hint}'}"
        ) from err


def json_type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_record(path: str, record: Any, fields: dict[str, type | tuple[type, ...]], hint: str):
    """`record` must be a JSON object whose `fields` have these types (float accepts an
    integer, never a boolean); anything else fails in one line naming the file and field."""
    if not isinstance(record, dict):
        raise DamagedFileError(f"{path} holds {json_type_name(record)}, not an object; {hint}")
    for name, kind in fields.items():
        if name not in record:
            raise DamagedFileError(f"{path} lacks {name!r}; {hint}")
        value = record[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = any(
            (k is float and is_json_number(value))
            or (k is int and isinstance(value, int) and not isinstance(value, bool))
            or (k not in (int, float) and isinstance(value, k))
            for k in kinds
        )
        if not ok:
            raise DamagedFileError(
                f"{path}: {name!r} is {json_type_name(value)} ({value!r:.40}); {hint}"
            )
    return record


def sha256_of_file(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_arrays(*arrays: np.ndarray) -> str:
    """Digest of arrays' shapes, dtypes and bytes (the content a cached result was made from)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def digest_of(record: Any) -> str:
    """Digest of a JSON-able record (keys sorted): the key of a cached result."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def writable_directory(path: str, flag: str) -> str:
    """Creates `path` if needed and proves it can be written (a probe file), before any work
    starts; a file in the way, a read-only or virtual file system fail in one line."""
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise InvalidConfigError(f"{flag}: {path} is a file, not a folder; choose a folder")
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_probe.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as err:
        reason = {
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EPERM: "not permitted",
            errno.ENOTDIR: "a file is in the way on its path",
            errno.ENOENT: "its file system cannot hold new folders",
            errno.ENOSPC: "no space left",
        }.get(err.errno, describe_cause(err))
        raise InvalidConfigError(
            f"{flag}: cannot write to {path} ({reason}); choose a folder you can write"
        ) from err
    return path


def is_writable(path: str) -> bool:
    """Whether `path` is (or can be made) a folder this process can write."""
    try:
        writable_directory(path, "")
        return True
    except InvalidConfigError:
        return False


def try_write(write: Callable[[], None]) -> bool:
    """Runs a cache write; a folder that cannot be written (read-only run) skips it."""
    try:
        write()
        return True
    except OSError:
        return False
