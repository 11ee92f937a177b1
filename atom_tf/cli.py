"""Shared helpers for the absl entry points in bin/: quiet TensorFlow, one-line user errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_main(main: Callable[[list[str]], None]) -> None:
    """absl.app.run with user mistakes printed as one line on stderr and exit status 2."""
    from absl import app

    from atom_tf.errors import UserError

    def guarded(argv: list[str]) -> None:
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
