#!/usr/bin/env python
"""Training-mode batch norm + ReLU (forward and backward) on CPU: oneDNN's fused kernel
against atom_tf's own path (statistics, one fused scale-offset-ReLU pass, the fused gradient),
per channel count, and optionally the ATOM training step with each, alternating in one process
(the machines are noisy: only ratios from one run compare).

With AVX-512 vectors oneDNN's kernel is fast where the channels fill its blocked layout
(multiples of 16) and slow elsewhere, and atom_tf takes its own path only there (channels not a
multiple of `atom_tf.models.layers.BLOCKED_CHANNELS`); with AVX2 vectors it was the slower one
at every channel count, and atom_tf takes its own path everywhere. The shapes are
DenseNet-BC-100's (64 + 128 images of 32×32, 24 + 12 k channels) and the bottleneck's 48.

The fused gradient atom_tf's path takes is oneDNN's; where the channels are not a multiple of 4
it runs a reference kernel, and atom_tf pads them with zeros (`--gradient_shapes`).

    python bench/batch_norm.py [--channels=48,60,64,120,128,136,216] [--step_model=densenet_bc_100]
    python bench/batch_norm.py --channels= --gradient_shapes=32x60,8x162,8x342
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/batch_norm.py   # an AVX-512 CPU with AVX2's vectors
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atom_tf  # noqa: F401  (chooses oneDNN before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import re
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("channels", ["48", "60", "64", "120", "128", "136", "216"], "Channel counts.")
flags.DEFINE_integer("batch", 192, "Images per batch.")
flags.DEFINE_integer("size", 32, "Height and width.")
flags.DEFINE_integer("rounds", 7, "Alternating timed rounds per shape (the median is kept).")
flags.DEFINE_string("step_model", "", "Also time the ATOM step of this network with each kernel.")
flags.DEFINE_integer("step_rounds", 2, "Alternating rounds of --step_steps timed ATOM steps.")
flags.DEFINE_integer("step_steps", 3, "Timed ATOM steps per round (each round's first is untimed).")
flags.DEFINE_list("gradient_shapes", [], "Also time the fused batch-norm gradient with and "
                  "without zero channels padded (atom_tf.models.layers.gradient_padding), at "
                  "these SIZExCHANNELS, e.g. 32x66,16x150,8x162 (DenseNet-BC-100's third block "
                  "is 8x150 + 12 k).")  # fmt: skip
flags.register_validator(
    "gradient_shapes",
    lambda shapes: all(re.fullmatch(r"[1-9]\d*x[1-9]\d*", shape) for shape in shapes),
    "--gradient_shapes takes SIZExCHANNELS items such as 8x162",
)


def kernels():
    """{name: training batch-norm function} (atom_tf's path and oneDNN's fused kernel)."""
    import tensorflow as tf

    from atom_tf.models import layers

    def onednn(inputs, gamma, beta, epsilon, moments=None):  # computes its own statistics
        return tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=epsilon, is_training=True
        )

    return {"atom_tf": layers._batch_norm_training, "onednn": onednn}


def with_kernel(kernel, build):
    """`build()` traced with `kernel` as the training batch norm for every channel count."""
    from atom_tf.models import layers

    saved = (layers._batch_norm_training, layers._own_training_batch_norm)
    layers._batch_norm_training = kernel
    layers._own_training_batch_norm = layers._depthwise_scaling  # every channel count
    try:
        return build()
    finally:
        layers._batch_norm_training, layers._own_training_batch_norm = saved


def without_reused_statistics(build):
    """`build()` traced with a DenseNet whose batch norms compute their training statistics
    themselves, as before ConcatMoments (an input of zeros statistics that nothing reads)."""
    from atom_tf.models import densenet, layers

    saved = densenet.bn_relu, densenet.classifier_head
    densenet.bn_relu = lambda x, moments=None: layers.bn_relu(x)
    densenet.classifier_head = lambda x, outputs, moments=None: layers.classifier_head(x, outputs)
    try:
        return build()
    finally:
        densenet.bn_relu, densenet.classifier_head = saved


def alternate(functions: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each function, called in alternating order (a function may return its
    own list of timings, e.g. per training step, which then stand for it)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for r in range(rounds):
        for name in list(functions)[:: 1 if r % 2 else -1]:
            start = time.perf_counter()
            own = functions[name]()
            times[name] += own if isinstance(own, list) else [time.perf_counter() - start]
    return {name: float(np.median(t)) for name, t in times.items()}


def layer_step(channels: int):
    """A compiled forward + backward of FusedBatchNorm + ReLU in training mode."""
    import tensorflow as tf

    from atom_tf.models.layers import FusedBatchNorm

    shape = (FLAGS.batch, FLAGS.size, FLAGS.size, channels)
    x = tf.constant(np.random.default_rng(0).random(shape, np.float32))
    layer = FusedBatchNorm()
    layer.build(shape)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(layer(x, training=True))
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])[0]

    step()
    return lambda: step().numpy()


def gradient_step(size: int, channels: int, pad: int):
    """A compiled fused batch-norm gradient (atom_tf's path) with `pad` zero channels."""
    import tensorflow as tf

    from atom_tf.models.layers import fused_batch_norm_gradient

    rng = np.random.default_rng(0)
    x, upstream = (tf.constant(rng.random((FLAGS.batch, size, size, channels), np.float32))
                   for _ in range(2))  # fmt: skip
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    gamma = tf.ones([channels])
    step = tf.function(lambda: fused_batch_norm_gradient(upstream, x, gamma, mean, variance,
                                                         1e-5, pad=pad)[0])  # fmt: skip
    step()
    return lambda: step().numpy()


def atom_step(model: str):
    """bench/train_step.py's ATOM training step, compiled: a call runs FLAGS.step_steps + 1
    steps in one `fit` and returns the seconds between the ends of consecutive steps."""
    import keras

    from bench.timing import train_step_model

    fitted, data = train_step_model(model, "atom", jit=False)
    fitted.fit(data, epochs=1, steps_per_epoch=1, verbose=0)

    def steps() -> list[float]:
        stamps: list[float] = []
        timer = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs=None: stamps.append(time.perf_counter())
        )
        fitted.fit(data, epochs=1, steps_per_epoch=FLAGS.step_steps + 1, verbose=0,
                   callbacks=[timer])  # fmt: skip
        return list(np.diff(stamps))

    return steps


def main(argv: list[str]) -> None:
    del argv
    from atom_tf.cpu import onednn_state
    from atom_tf.models import layers

    lanes = layers._onednn_lanes()
    where = (f"where channels % {layers.BLOCKED_CHANNELS} != 0"
             if lanes >= layers.BLOCKED_CHANNELS else "everywhere")  # fmt: skip
    print(f"{onednn_state()}; oneDNN vectors of {lanes} floats: atom_tf's path {where}",
          flush=True)  # fmt: skip
    for channels in (int(c) for c in FLAGS.channels):
        seconds = alternate({name: with_kernel(k, lambda c=channels: layer_step(c))
                             for name, k in kernels().items()}, FLAGS.rounds)  # fmt: skip
        print(f"BN+ReLU train [{FLAGS.batch}, {FLAGS.size}, {FLAGS.size}, {channels}]: "
              f"oneDNN {1e3 * seconds['onednn']:.1f} ms, atom_tf {1e3 * seconds['atom_tf']:.1f} "
              f"ms, oneDNN / atom_tf {seconds['onednn'] / seconds['atom_tf']:.2f}"
              f"{'' if layers.own_kernel_for(channels) else '  (blocked: oneDNN used)'}",
              flush=True)  # fmt: skip
    for shape in FLAGS.gradient_shapes:
        size, channels = (int(n) for n in shape.split("x"))
        pad = (-channels) % layers.PADDED_CHANNELS  # padded for the comparison, needed or not
        seconds = alternate({"plain": gradient_step(size, channels, 0),
                             "padded": gradient_step(size, channels, pad)}, FLAGS.rounds)  # fmt: skip
        print(f"BN gradient [{FLAGS.batch}, {size}, {size}, {channels}]: oneDNN's kernel "
              f"{1e3 * seconds['plain']:.1f} ms, with {pad} zero channels "
              f"{1e3 * seconds['padded']:.1f} ms, plain / padded "
              f"{seconds['plain'] / seconds['padded']:.2f} (atom_tf pads "
              f"{layers.gradient_padding(channels)})", flush=True)  # fmt: skip
    if FLAGS.step_model:
        steps = {"onednn": with_kernel(kernels()["onednn"], lambda: atom_step(FLAGS.step_model)),
                 "own_statistics": without_reused_statistics(lambda: atom_step(FLAGS.step_model)),
                 "atom_tf": atom_step(FLAGS.step_model)}  # the shipped choice per layer  # fmt: skip
        seconds = alternate(steps, FLAGS.step_rounds)
        print(f"ATOM step {FLAGS.step_model} (median): oneDNN everywhere {seconds['onednn']:.2f} "
              f"s, atom_tf's choice per layer {seconds['own_statistics']:.2f} s computing every "
              f"layer's statistics, {seconds['atom_tf']:.2f} s reusing the concatenations' "
              f"(DenseNet); oneDNN / atom_tf {seconds['onednn'] / seconds['atom_tf']:.3f}, "
              f"reuse {seconds['own_statistics'] / seconds['atom_tf']:.3f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
