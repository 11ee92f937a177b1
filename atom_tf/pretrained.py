"""Detectors trained by atom_tf and shipped in the package, loadable by name without training:

    atom_tf.load_detector("pretrained:digits_atom")
    python bin/evaluate.py --checkpoint=pretrained:cifar10_cpu_atom

Each is a finished run folder (config.json, summary.json with its test accuracy and weights
SHA-256, network.weights.h5, flags.txt) in `atom_tf/pretrained_runs/<name>/`: in
the package so that it works offline and always matches the code that reads it (a weights
file of at most 2 MB). It is copied once into `$ATOM_TF_CACHE/pretrained/<name>/` (default
~/.cache/atom_tf), where thresholds and evaluations are written, never into the package; a copy
whose files differ from the package's is replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from atom_tf.errors import InvalidConfigError

PREFIX = "pretrained:"
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_runs")
FILES = ("config.json", "summary.json", "network.weights.h5", "flags.txt")


def pretrained_names() -> list[str]:
    return sorted(n for n in os.listdir(HERE) if os.path.isfile(os.path.join(HERE, n, FILES[0])))


def is_pretrained(spec: str) -> bool:
    return spec.startswith(PREFIX)


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cache_root() -> str:
    return os.environ.get("ATOM_TF_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "atom_tf"
    )


def resolve_run(spec: str) -> str:
    """The run folder `spec` names: `pretrained:NAME` as its cached copy (made or refreshed
    here), anything else unchanged."""
    if not is_pretrained(spec):
        return spec
    name = spec.removeprefix(PREFIX)
    if name not in pretrained_names():
        raise InvalidConfigError(
            f"no pretrained detector {name!r}; choose one of {', '.join(pretrained_names())}"
        )
    source, copy = os.path.join(HERE, name), os.path.join(cache_root(), "pretrained", name)
    current = all(
        os.path.isfile(os.path.join(copy, f))
        and file_digest(os.path.join(copy, f)) == file_digest(os.path.join(source, f))
        for f in FILES
    )
    if not current:
        partial = copy + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        for f in FILES:
            shutil.copyfile(os.path.join(source, f), os.path.join(partial, f))
        shutil.rmtree(copy, ignore_errors=True)  # its thresholds and results were of other files
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        os.replace(partial, copy)
    return copy
