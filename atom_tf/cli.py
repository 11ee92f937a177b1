"""Shared helpers for the absl entry points in bin/: quiet TensorFlow, one-line user errors,
flags generated from declared settings (atom_tf.settings)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What TensorFlow's C++ side prints while it loads, before its log level applies: absl's
# pre-initialisation notice, INFO lines, and "failed call to cuInit" on machines without a GPU.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+\] "
    r"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit)"
)


def _without_retracing_notes(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's "N out of the last N calls ... triggered tf.function retracing": an
    evaluation traces each attack (per side and ensemble member) once, as separate functions of
    one body, which that heuristic counts as retracing."""
    return "triggered tf.function retracing" not in record.getMessage()


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
            tf.get_logger().setLevel("WARNING")  # no INFO lines from tf.distribute's set-up
            tf.get_logger().addFilter(_without_retracing_notes)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not STARTUP_NOISE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def call_main(main: Callable[[list[str]], None], argv: list[str]) -> int:
    """Runs an entry point's main on parsed `argv`; a user mistake, a damaged file or a file
    system that refuses prints one `error:` line on stderr and gives 2 (0 when all went
    well). Anything else is a bug and raises with its traceback."""
    from atom_tf.errors import InvalidConfigError, UserError

    import_tensorflow_quietly()
    try:
        if len(argv) > 1:
            raise InvalidConfigError(
                f"unexpected arguments {argv[1:]}; flags take the form --name=value"
            )
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system refused (full disk, permissions, a lost mount)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}; check the path and run again",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def run_main(main: Callable[[list[str]], None]) -> None:
    """absl.app.run with user mistakes printed as one line on stderr and exit status 2."""
    from absl import app

    def guarded(argv: list[str]) -> None:
        code = call_main(main, argv)
        if code:
            sys.exit(code)

    app.run(guarded)


def define_distribution_flags() -> None:
    """--distribution, --tpu and --cluster_wait, shared by bin/train.py and bin/evaluate.py."""
    from absl import flags

    flags.DEFINE_enum(
        "distribution",
        "auto",
        ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
        "tf.distribute strategy: auto (a TPU if attached, multi_worker if TF_CONFIG names a "
        "cluster, all local GPUs mirrored, else one device), one_device, mirrored, "
        "multi_worker (cluster from TF_CONFIG), tpu (--tpu). Batch flags are global sizes.",
    )
    flags.DEFINE_string(
        "tpu", "", "TPU address (grpc://HOST:8470) or name, for --distribution=tpu."
    )
    flags.DEFINE_float(
        "cluster_wait", 45.0, "Seconds to wait for every TF_CONFIG task to answer (multi_worker)."
    )


def strategy_from_flags():
    """The strategy the distribution flags ask for (atom_tf.distribution.make_strategy)."""
    from absl import flags

    from atom_tf.distribution import make_strategy

    values = flags.FLAGS
    return make_strategy(values.distribution, values.tpu, values.cluster_wait)


def define_flags(settings: Iterable[Any]) -> None:
    """One absl flag per `atom_tf.settings.Setting`: its flag name, default and help (with
    the registered names where it lists choices). A setting shared by two units is defined once."""
    from absl import flags

    defined: dict[str, Any] = {}
    for s in settings:
        if s.flag_name in defined:
            if defined[s.flag_name] != s:
                raise ValueError(f"--{s.flag_name} is declared twice, differently")
            continue
        defined[s.flag_name] = s
        kind, help_text = s.value_kind, s.help_text()
        if kind == "enum":
            flags.DEFINE_enum(s.flag_name, s.default, s.choice_names(), help_text)
        elif kind == "list":
            flags.DEFINE_list(s.flag_name, [str(v) for v in s.default], help_text)
        else:
            define = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer,
                      "float": flags.DEFINE_float, "str": flags.DEFINE_string}[kind]  # fmt: skip
            define(s.flag_name, s.default, help_text)


def flag_values(settings: Iterable[Any]) -> dict[str, Any]:
    """{setting name: the value its flag holds}, lists converted to tuples of the default's
    element type (one error line for a value that does not convert)."""
    from absl import flags

    from atom_tf.errors import InvalidConfigError

    values = {}
    for s in settings:
        value = flags.FLAGS[s.flag_name].value
        if s.value_kind == "list":
            element = type(s.default[0]) if s.default else str
            try:
                value = tuple(element(v) for v in value)
            except ValueError as err:
                raise InvalidConfigError(
                    f"--{s.flag_name} must be a comma-separated list of {element.__name__} "
                    f"values: {','.join(value)}"
                ) from err
        values[s.name] = s.value(value)
    return values
