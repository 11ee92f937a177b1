"""Runs bin/train.py or bin/evaluate.py as a job of tests/test_distribution.py:

    python tests/distributed_job.py train|evaluate LOGICAL_CPUS [flags...]

LOGICAL_CPUS > 1 splits the CPU into that many logical devices before TensorFlow starts (for
--distribution=mirrored). The model `strided_tiny` is registered first: convolutions with
stride instead of max pooling, so that float rounding (one device and N replicas sum in
different orders) cannot flip which input a pooling gradient goes to.
"""

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def strided_tiny(num_outputs: int, normalization=None):
    import keras

    from atom_tf.models.layers import bn_relu, conv, inputs_32, logits_layer

    inputs, x = inputs_32(normalization)
    x = bn_relu(conv(x, 8, 3, stride=2))
    x = bn_relu(conv(x, 16, 3, stride=2))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, logits_layer(num_outputs)(x), name="strided_tiny")


def main() -> None:
    entry, cpus, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf

    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpus
        )
    from atom_tf.models import MODELS, register_model

    if "strided_tiny" not in MODELS.names():
        register_model("strided_tiny", strided_tiny)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin",
                          f"{entry}.py")  # fmt: skip
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
