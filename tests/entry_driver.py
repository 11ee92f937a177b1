"""Runs one entry point (bin/train.py or bin/evaluate.py) on many command lines in one process,
as a user would run each: absl flags parsed afresh, the entry point's main called through
atom_tf.cli.call_main. Writes [{"code", "stderr", "traceback"}] as JSON.

    python tests/entry_driver.py bin/evaluate.py cases.json results.json

cases.json holds a list of argument lists. ENTRY_DRIVER_EAGER=1 runs tf.functions eagerly
(each case builds a new network, whose tracing would cost more than its tiny inputs). A case whose main raises anything but a user error
gets code "traceback" and the traceback text: tests assert there is none."""

import contextlib
import importlib.util
import io
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    entry, cases_path, out_path = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("entry_point", entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from absl import flags

    from atom_tf import cli

    if os.environ.get("ENTRY_DRIVER_EAGER") == "1":  # tiny inputs: tracing would dominate
        import tensorflow as tf

        tf.config.run_functions_eagerly(True)
    with open(cases_path) as f:
        cases = json.load(f)
    results = []
    for argv in cases:
        flags.FLAGS.unparse_flags()
        err, out = io.StringIO(), io.StringIO()
        trace = ""
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.call_main(module.main, flags.FLAGS([entry, *argv]))
            except flags.Error as error:  # what absl prints for a malformed flag value
                print(f"FATAL Flags parsing error: {error}", file=sys.stderr)
                code = 1
            except BaseException:
                trace, code = traceback.format_exc(), "traceback"
        results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue(),
                        "traceback": trace})  # fmt: skip
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
