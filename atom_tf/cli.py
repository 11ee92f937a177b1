"""Shared helpers for the absl entry points in bin/: quiet TensorFlow, one-line user errors."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What TensorFlow's C++ side prints while it loads, before its log level applies: absl's
# pre-initialisation notice, INFO lines, and "failed call to cuInit" on machines without a GPU.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+\] "
    r"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit)"
)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices with stderr captured, then passes on every
    captured line except the start-up noise (real warnings and errors still show)."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not STARTUP_NOISE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def run_main(main: Callable[[list[str]], None]) -> None:
    """absl.app.run with user mistakes printed as one line on stderr and exit status 2."""
    from absl import app

    from atom_tf.errors import UserError

    def guarded(argv: list[str]) -> None:
        import_tensorflow_quietly()
        try:
            if len(argv) > 1:
                from atom_tf.errors import InvalidConfigError

                raise InvalidConfigError(
                    f"unexpected arguments {argv[1:]}; flags take the form --name=value"
                )
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            sys.exit(130)

    try:
        app.run(guarded)
    except SystemExit:
        raise
