"""atom_tf/models/layers.py: the attacks' input gradients with the inference batch norms' scale
folded into the next convolution (`input_gradients_only`, `link_scale_folds`)."""

import collections
import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as kl

from atom_tf.cpu import onednn_enabled
from atom_tf.models import build_model, layers
from atom_tf.models.densenet import densenet_bc
from atom_tf.models.layers import FusedBatchNorm, input_gradients_only, link_scale_folds


def randomise_batch_norms(model: keras.Model, rng) -> None:
    """Running statistics and affine parameters away from their initial values, with a negative
    and a zero γ in every layer (the fold holds for any sign)."""
    for layer in model.layers:
        if isinstance(layer, FusedBatchNorm):
            c = layer.gamma.shape[0]
            gamma = rng.uniform(0.3, 1.5, c)
            gamma[0], gamma[1 % c] = -0.7, 0.0
            layer.gamma.assign(gamma.astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.3, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))


def inference(model: keras.Model, images, fold: bool):
    """The logits in inference mode, inside `input_gradients_only` where `fold`."""
    with input_gradients_only() if fold else contextlib.nullcontext():
        return model(images, training=False)


def input_gradient(model: keras.Model, images, fold: bool, sources=None):
    """(logits, the gradient of a K+1 log-softmax with respect to the images [and `sources`]),
    traced inside `input_gradients_only` where `fold`; and the graph's ops counted by type."""

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = inference(model, x, fold)
            loss = tf.reduce_sum(tf.nn.log_softmax(logits)[:, -1] * tf.range(1.0, 4.0))
        return logits, tape.gradient(loss, [x, *(sources or [])])

    logits, gradients = run(images)
    ops = collections.Counter(
        op.type for op in run.get_concrete_function(images).graph.get_operations()
    )
    return logits, gradients, ops


@pytest.mark.parametrize("name", ["densenet", "small_cnn"])
def test_folded_input_gradient_is_the_gradient(name, rng):
    """Inside the context: the same logits to the bit, the same input gradient to float
    rounding, and (on oneDNN's path) no backward pass of the batch norms' depthwise scale."""
    keras.utils.set_random_seed(0)
    model = densenet_bc(11, depth=16, growth=4) if name == "densenet" else build_model(name, 11)
    pairs = link_scale_folds(model)
    assert pairs == (14 if name == "densenet" else 3)  # DenseNet: 2 per layer, 2 transitions
    randomise_batch_norms(model, rng)
    images = tf.constant(rng.random((3, 32, 32, 3)).astype(np.float32))
    plain_logits, (plain,), plain_ops = input_gradient(model, images, fold=False)
    folded_logits, (folded,), folded_ops = input_gradient(model, images, fold=True)
    np.testing.assert_array_equal(folded_logits, plain_logits)
    scale = np.abs(plain).max()
    np.testing.assert_allclose(folded, plain, rtol=0, atol=1e-5 * scale)
    assert np.abs(plain).min() < scale  # not a constant gradient
    backward_scale = "DepthwiseConv2dNativeBackpropInput"
    if onednn_enabled():  # one backward scale pass fewer per pair
        assert folded_ops[backward_scale] == plain_ops[backward_scale] - pairs
    else:  # the plain multiply-add, nothing folded
        assert backward_scale not in plain_ops + folded_ops


def test_inside_convolution_kernels_keep_their_gradient_and_folded_norms_give_none(rng):
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", 11)
    randomise_batch_norms(model, rng)
    norms = [layer for layer in model.layers if getattr(layer, "_folds", False)]
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, kl.Conv2D)]
    images = tf.constant(rng.random((3, 32, 32, 3)).astype(np.float32))
    sources = [*kernels, norms[0].gamma]
    _, plain, _ = input_gradient(model, images, fold=False, sources=sources)
    _, folded, _ = input_gradient(model, images, fold=True, sources=sources)
    for ours, reference in zip(folded[1:-1], plain[1:-1], strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    assert plain[-1] is not None
    assert folded[-1] is None if onednn_enabled() else folded[-1] is not None


def test_eager_gradients_inside_are_not_folded(rng):
    """Outside a tf.function nothing is folded: the gradient is the plain one exactly."""
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", 11)
    randomise_batch_norms(model, rng)
    images = tf.constant(rng.random((2, 32, 32, 3)).astype(np.float32))
    gradients = []
    for fold in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = inference(model, images, fold)
        gradients.append(tape.gradient(tf.reduce_sum(logits[:, -1]), images))
    np.testing.assert_array_equal(gradients[1], gradients[0])


def test_only_exclusive_batch_norm_relu_convolution_chains_are_paired():
    inputs = keras.Input((8, 8, 4))
    shared = kl.ReLU()(FusedBatchNorm()(inputs))  # feeds two convolutions: not paired
    a = layers.conv(shared, 4, 3)
    b = layers.conv(shared, 4, 1)
    capped = layers.conv(kl.ReLU(max_value=6.0)(FusedBatchNorm()(a)), 4, 3)  # ReLU6: not
    norm = FusedBatchNorm()
    normalized = norm(b)
    side = kl.GlobalAveragePooling2D()(normalized)  # the batch norm's output read twice: not
    exclusive = layers.conv(kl.ReLU()(FusedBatchNorm()(capped)), 4, 3)  # paired
    plain = kl.Conv2D(4, 3, padding="same")(kl.ReLU()(FusedBatchNorm()(exclusive)))  # keras': not
    outputs = kl.Concatenate()([kl.GlobalAveragePooling2D()(kl.ReLU()(normalized)), side,
                                kl.GlobalAveragePooling2D()(plain)])  # fmt: skip
    model = keras.Model(inputs, outputs)
    assert link_scale_folds(model) == 1
    assert [type(layer).__name__ for layer in model.layers if getattr(layer, "_folds", False)] == [
        "FusedBatchNorm"
    ]


def test_checkpoints_of_plain_keras_convolutions_load(tmp_path, rng, monkeypatch):
    """Weights saved when atom_tf's convolutions were keras' own Conv2D load into today's
    (weight files address layers by class name, and atom_tf's keeps keras' one), with the same
    outputs."""
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    with monkeypatch.context() as patch:
        patch.setattr(layers, "Conv2D", kl.Conv2D)
        keras.utils.set_random_seed(1)
        before = densenet_bc(11, depth=16, growth=4)
    assert not any(isinstance(layer, layers.Conv2D) for layer in before.layers)
    before(images, training=True)  # moving statistics away from their initial values
    before.save_weights(tmp_path / "before.weights.h5")
    keras.utils.set_random_seed(2)
    today = densenet_bc(11, depth=16, growth=4)
    assert any(isinstance(layer, layers.Conv2D) for layer in today.layers)
    today.load_weights(tmp_path / "before.weights.h5")
    np.testing.assert_array_equal(today(images, training=False), before(images, training=False))
