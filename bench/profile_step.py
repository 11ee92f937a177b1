#!/usr/bin/env python
"""Where a training step's time goes on this CPU: TensorFlow's profiler over timed steps, the
executed ops summed by type (self time, every thread), printed as shares of the step.

The step is bench/train_step.py's (DenseNet-BC-100 by default; 64 in-distribution images +
128 outliers; ATOM: PGD-5 on 64 of them), with XLA off (the faster setting on CPU). Time on
the executor's threads is summed over threads, so the shares are of the busy time, which
exceeds the wall time when the executor runs ops side by side.

    python bench/profile_step.py [--model=densenet_bc_100] [--method=atom] [--steps=2] [--top=25]
    python bench/profile_step.py --trace_dir=/tmp/step_trace   # keep the trace for TensorBoard
    python bench/profile_step.py --onednn_primitives  # oneDNN's primitives: GFLOP/s, GB/s

`--onednn_primitives` runs the steps again in a child process with ONEDNN_VERBOSE=profile_exec
and sums oneDNN's executed primitives (convolutions by kernel, minibatch and output size; batch
norms; reorders) per step, with each convolution class's FLOP rate and the rate at which it
reads and writes its activations: the compute-bound classes against the machine's matmul
rate, the memory-bound ones against its memory bandwidth. Verbose mode's timing adds its
own overhead, so its step is slower than the profiled one.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import glob
import subprocess
import tempfile
import time

import keras
import tensorflow as tf
from absl import app, flags

from bench.timing import train_step_model
from bench.trace import onednn_primitive_times, op_self_times

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture to profile.")
flags.DEFINE_string("method", "atom", "Training method (atom_tf.training.methods).")
flags.DEFINE_integer("steps", 2, "Profiled steps (after one untraced warm-up step).")
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.DEFINE_string("trace_dir", None, "Keep the trace here (TensorBoard's profile tab); "
                    "default: a temporary folder.")  # fmt: skip
flags.DEFINE_bool("onednn_primitives", False, "List oneDNN's executed primitives per step "
                  "(ONEDNN_VERBOSE=profile_exec, in a child process) instead of TensorFlow's ops.")  # fmt: skip

CHILD = "ATOM_TF_PROFILE_CHILD"  # set in the child that runs the steps under oneDNN's verbose mode
BEGIN, END = "@@atom_tf step begin", "@@atom_tf step end"


def step_markers() -> keras.callbacks.Callback:
    """Prints BEGIN and END around the timed steps (1..steps; step 0 is the warm-up)."""

    def mark(text: str, batch: int) -> None:
        if 1 <= batch <= FLAGS.steps:
            print(f"{text} {time.perf_counter():.6f}", flush=True)

    return keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs=None: mark(BEGIN, batch),
        on_train_batch_end=lambda batch, logs=None: mark(END, batch),
    )


def onednn_primitives() -> None:
    """Runs this script's steps in a child under ONEDNN_VERBOSE=profile_exec and prints oneDNN's
    primitives per step (bench/trace.py)."""
    from atom_tf.cpu import onednn_enabled

    if not onednn_enabled():
        sys.exit("oneDNN is off here (TF_ENABLE_ONEDNN_OPTS=0, or not an x86 CPU): no oneDNN "
                 "primitives to list; run without --onednn_primitives")  # fmt: skip
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_exec", CHILD: "1"}
    child = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env=env,
                           capture_output=True, text=True)  # fmt: skip
    if child.returncode:
        sys.exit(f"the verbose child failed: {child.stderr.strip().splitlines()[-1:]}")
    inside, lines, spans = False, [], []
    for line in child.stdout.splitlines():
        if line.startswith((BEGIN, END)):
            inside = line.startswith(BEGIN)
            spans.append(float(line.split()[-1]))
        elif inside:
            lines.append(line)
    rows = onednn_primitive_times(lines)
    steps = FLAGS.steps
    wall = sum(end - begin for begin, end in zip(spans[::2], spans[1::2], strict=True)) / steps
    total = sum(row.milliseconds for row in rows) / steps
    print(f"{FLAGS.method} step ({FLAGS.model}, XLA off, oneDNN verbose): {wall:.2f} s wall per "
          f"step; oneDNN primitives {total / 1e3:.2f} s")  # fmt: skip
    print(f"{'primitive':<20} {'propagation':<17} {'shape':<20} {'ms/step':>8} {'calls':>6} "
          f"{'GFLOP/s':>8} {'GB/s':>6}")  # fmt: skip
    for row in rows[: FLAGS.top]:
        rates = [f"{r:.1f}" if r is not None else "" for r in (row.gflops, row.gbytes_per_s)]
        print(f"{row.kind:<20} {row.propagation:<17} {row.shape:<20} "
              f"{row.milliseconds / steps:8.1f} {row.calls // steps:6d} {rates[0]:>8} {rates[1]:>6}")  # fmt: skip
    rest = sum(row.milliseconds for row in rows[FLAGS.top :]) / steps
    print(f"{'(other primitives)':<59} {rest:8.1f}")


def main(argv):
    del argv
    from atom_tf.cpu import onednn_state

    if FLAGS.onednn_primitives and not os.environ.get(CHILD):
        return onednn_primitives()

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"{onednn_state()}; threads intra {tf.config.threading.get_intra_op_parallelism_threads()}"
          f" / inter {tf.config.threading.get_inter_op_parallelism_threads()} (0 = TensorFlow's choice)")  # fmt: skip
    model, data = train_step_model(FLAGS.model, FLAGS.method, jit=False)
    if os.environ.get(CHILD):  # the verbose child: the steps and their markers, nothing else
        model.fit(data, epochs=1, steps_per_epoch=FLAGS.steps + 1, verbose=0,
                  callbacks=[step_markers()])  # fmt: skip
        return None
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="atom_tf_profile_")
    stamps: list[float] = []

    def begin(batch, logs=None):
        if batch == 1:
            tf.profiler.experimental.start(trace_dir)
            stamps.append(time.perf_counter())

    def end(batch, logs=None):
        if batch == FLAGS.steps:
            stamps.append(time.perf_counter())
            tf.profiler.experimental.stop()

    callback = keras.callbacks.LambdaCallback(on_train_batch_begin=begin, on_train_batch_end=end)
    model.fit(data, epochs=1, steps_per_epoch=FLAGS.steps + 1, verbose=0, callbacks=[callback])
    wall = (stamps[1] - stamps[0]) / FLAGS.steps
    paths = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb")))
    seconds, calls, _ = op_self_times(paths[-1])
    busy = sum(seconds.values()) / FLAGS.steps
    print(f"{FLAGS.method} step ({FLAGS.model}, XLA off): {wall:.2f} s wall per step (profiled); "
          f"ops {busy:.2f} s summed over threads ({busy / wall:.2f}x the wall: ops side by side)")  # fmt: skip
    print(f"{'op type':<34} {'s/step':>8} {'share':>7} {'calls':>7}")
    for kind, total in seconds.most_common(FLAGS.top):
        print(f"{kind:<34} {total / FLAGS.steps:8.3f} {total / FLAGS.steps / busy:7.1%} "
              f"{calls[kind] // FLAGS.steps:7d}")  # fmt: skip
    rest = sum(t for _, t in seconds.most_common()[FLAGS.top :])
    print(f"{'(other op types)':<34} {rest / FLAGS.steps:8.3f} {rest / FLAGS.steps / busy:7.1%}")
    print(f"trace: {trace_dir}")


if __name__ == "__main__":
    app.run(main)
