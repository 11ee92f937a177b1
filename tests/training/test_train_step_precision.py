"""Mixed precision: the logits (and so the objectives) stay float32, the attack's gradient is
not lost to bfloat16/float16 rounding or underflow, and a mixed_float16 run trains with loss
scaling."""

import json

import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.objectives import kplus1_ce
from atom_tf.attacks.pgd import pgd_attack
from atom_tf.data.pipeline import TrainingFeed
from atom_tf.distribution import precision_policy
from atom_tf.models import build_model
from atom_tf.training.methods import get_method
from atom_tf.training.train_step import RobustOODModel
from tests.helpers import blob_data

# The attack under mixed precision must raise the objective at least this share as much as in
# float32 (measured: bfloat16 ~0.9-1.1, float16 ~1.0 of float32's gain).
GAIN_SHARE = 0.75


@pytest.fixture(scope="module")
def trained_weights():
    """small_cnn after one epoch of ATOM on two-class blobs with random outliers."""
    data = blob_data(num_train=256)
    feed = TrainingFeed(data, in_batch=32, out_batch=32, seed=0)
    network = build_model("small_cnn", 3)
    model = RobustOODModel(network, get_method("atom"), 2, seed=0)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    outliers = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    feed.set_outliers(0, outliers)
    model.fit(feed.dataset(range(1)), epochs=1, steps_per_epoch=feed.steps_per_epoch, verbose=0)
    return network.get_weights()


def attack_gain(precision, weights, images):
    with precision_policy(precision):
        network = build_model("small_cnn", 3)
    network.set_weights(weights)
    assert network.output.dtype == "float32"

    def logits(x):
        return network(x, training=False)

    clean = kplus1_ce(logits(images))
    _, best = pgd_attack(logits, images, kplus1_ce, epsilon=8 / 255, steps=10, step_size=1 / 255,
                         seed=tf.constant([0, 1], tf.int64))  # fmt: skip
    return float(tf.reduce_mean(best - clean))


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_the_attack_as_strong(trained_weights, precision):
    images = tf.constant(np.random.default_rng(1).random((16, 32, 32, 3)), tf.float32)
    reference = attack_gain("float32", trained_weights, images)
    mixed = attack_gain(precision, trained_weights, images)
    assert reference > 0.05
    assert mixed >= GAIN_SHARE * reference, (mixed, reference)


def test_mixed_float16_trains_with_loss_scaling(tmp_path):
    # float16 kernels are slow on CPU: a tiny strided model, 2 epochs of 11 steps
    from atom_tf.models import MODELS, register_model
    from atom_tf.training import TrainConfig, train
    from tests.distributed_job import strided_tiny

    if "strided_tiny" not in MODELS.names():
        register_model("strided_tiny", strided_tiny)
    config = TrainConfig(dataset="digits", model="strided_tiny", method="atom", epochs=2,
                         lr_decay_epochs=(2,), num_candidates=512, num_selected=256,
                         in_batch=128, out_batch=32, jit_compile=False, precision="mixed_float16")  # fmt: skip
    train(config, str(tmp_path / "run"), verbose=0)
    with open(tmp_path / "run" / "history.jsonl") as f:
        losses = [json.loads(line)["in_loss"] for line in f]
    assert all(np.isfinite(losses)) and losses[1] < losses[0], losses
    with open(tmp_path / "run" / "config.json") as f:
        assert '"precision": "mixed_float16"' in f.read()
