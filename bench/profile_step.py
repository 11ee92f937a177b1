#!/usr/bin/env python
"""Where a training step's time goes on this CPU: TensorFlow's profiler over timed steps, the
executed ops summed by type (self time, every thread), printed as shares of the step.

The step is bench/train_step.py's (DenseNet-BC-100 by default; 64 in-distribution images +
128 outliers; ATOM: PGD-5 on 64 of them), with XLA off (the faster setting on CPU). Time on
the executor's threads is summed over threads, so the shares are of the busy time, which
exceeds the wall time when the executor runs ops side by side.

    python bench/profile_step.py [--model=densenet_bc_100] [--method=atom] [--steps=2] [--top=25]
    python bench/profile_step.py --trace_dir=/tmp/step_trace   # keep the trace for TensorBoard
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import glob
import tempfile
import time

import keras
import tensorflow as tf
from absl import app, flags

from bench.timing import train_step_model
from bench.trace import op_self_times

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "densenet_bc_100", "Architecture to profile.")
flags.DEFINE_string("method", "atom", "Training method (atom_tf.training.methods).")
flags.DEFINE_integer("steps", 2, "Profiled steps (after one untraced warm-up step).")
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.DEFINE_string("trace_dir", None, "Keep the trace here (TensorBoard's profile tab); "
                    "default: a temporary folder.")  # fmt: skip


def main(argv):
    del argv
    from atom_tf.cpu import onednn_state

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"{onednn_state()}; threads intra {tf.config.threading.get_intra_op_parallelism_threads()}"
          f" / inter {tf.config.threading.get_inter_op_parallelism_threads()} (0 = TensorFlow's choice)")  # fmt: skip
    model, data = train_step_model(FLAGS.model, FLAGS.method, jit=False)
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
