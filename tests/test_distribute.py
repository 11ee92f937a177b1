"""The train step under tf.distribute: two logical CPU replicas give the same update as one
(so the loss is scaled for summed replica gradients). Runs in a subprocess because logical
devices must be configured before TensorFlow starts."""

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from atom_tf.training.methods import get_method
from atom_tf.training.train_step import RobustOODModel
import sys
METHOD = sys.argv[1]

rng = np.random.default_rng(0)
data = (rng.random((16, 32, 32, 3), np.float32), rng.integers(0, 2, 16), rng.random((16, 32, 32, 3), np.float32))

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((32, 32, 3))
        network = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
        model = RobustOODModel(network, get_method(METHOD), 2)
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True), jit_compile=False)
    ds = tf.data.Dataset.from_tensors(data).repeat(3)
    model.fit(ds, epochs=1, verbose=0)
    return [w.numpy() for w in network.weights]

two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
one = run(tf.distribute.get_strategy())
diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
moved = max(float(np.abs(a).max()) for a in one)
print("MAXDIFF", diff, moved)
"""


def test_two_replicas_update_like_one():
    # ntom: no attack, whose random start is drawn per replica and so differs from one replica's
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "ntom"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("MAXDIFF"))
    diff, moved = map(float, line.split()[1:])
    assert moved > 0.1 and diff < 1e-3, (
        line
    )  # float32 sums differ; a 2x loss-scaling error moves ~0.5
