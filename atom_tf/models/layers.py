"""Building blocks shared by the architectures (PyTorch-equivalent initialisation)."""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from atom_tf.cpu import onednn_enabled, onednn_vector_floats


# PyTorch reference models: kaiming normal (fan_out) convolutions, BN eps 1e-5 / momentum 0.1.
# Initialisers are made per layer, after `keras.utils.set_random_seed`: an instance created at
# import time would draw its seed from an unseeded RNG (and repeat it for every layer).
def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def dense_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def inputs_32(normalization) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input of 32×32×3 images in [0,1], normalised inside the model when asked."""
    inputs = keras.Input((32, 32, 3), name="images")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(
            x
        )
    return inputs, x


def conv(x, filters: int, kernel: int, stride: int = 1, name: str | None = None):
    """Bias-free convolution with PyTorch-style symmetric padding."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2)(x)
        padding = "valid"
    else:
        padding = "same"
    return Conv2D(
        filters,
        kernel,
        stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_init(),
        name=name,
    )(x)


def _depthwise_scaling(inputs) -> bool:
    """Whether inference-mode batch norm multiplies by its scale as a 1×1 depthwise
    convolution: only where oneDNN's kernels run it (float32 images on a CPU, not in an XLA
    cluster, which fuses the plain multiply and add itself)."""
    from tensorflow.python.ops import control_flow_util

    return (
        len(inputs.shape) == 4
        and inputs.dtype == tf.float32
        and onednn_enabled()
        and not tf.config.list_logical_devices("GPU")
        and not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    )


def _scale_and_offset(inputs, scale, offset):
    """inputs · scale + offset per channel, as oneDNN's fused 1×1 depthwise convolution plus
    offset (one pass, and the following ReLU fused in too)."""
    kernel = tf.reshape(scale, [1, 1, -1, 1])
    return tf.nn.bias_add(tf.nn.depthwise_conv2d(inputs, kernel, [1, 1, 1, 1], "VALID"), offset)


# Inference-mode batch norm, ReLU and convolution, differentiated for the input only (the
# attacks). With r = relu(a·x + b) (a, b the batch norm's per-channel scale and offset) and
# z = conv(r, W), the input gradient is ∂L/∂x = a ⊙ 1[r > 0] ⊙ convᵀ(W, ∂L/∂z)
# = 1[r > 0] ⊙ convᵀ(a·W, ∂L/∂z): the scale rides in the convolution's kernel (scaled along its
# input channels, a [C_in, C_out] product) instead of a pass over the batch norm's input, which
# is DenseNet's wide concatenation (bench/profile_step.py --onednn_primitives: oneDNN's
# depthwise backward pass, 0.8 s of the DenseNet-BC-100 ATOM step).
_FOLDING = threading.local()


@contextlib.contextmanager
def input_gradients_only():
    """Inside, networks are traced for gradients with respect to their inputs only (the
    attacks): where `link_scale_folds` paired an inference-mode batch norm with the convolution
    after its ReLU, the input gradient carries the batch norm's scale in the convolution's
    kernel (the same gradient, rounded differently). Gradients with respect to those batch
    norms' parameters are None inside; every other gradient is unchanged. Graph mode only
    (tf.function), on oneDNN's CPU path (where inference batch norm is a depthwise pass)."""
    depth = getattr(_FOLDING, "depth", 0)
    _FOLDING.depth = depth + 1
    try:
        yield
    finally:
        _FOLDING.depth = depth


def _folding() -> bool:
    return getattr(_FOLDING, "depth", 0) > 0 and not tf.executing_eagerly()


def _folded_outputs() -> dict[int, tuple]:
    """This thread's (graph, tensor name) of each folding batch norm's last output traced
    (per thread: replicas trace their copies of the model in threads of their own)."""
    if not hasattr(_FOLDING, "outputs"):
        _FOLDING.outputs = {}
    return _FOLDING.outputs


def _pass_scale_to_convolution(inputs, scale, offset):
    """inputs · scale + offset (`_scale_and_offset`) whose gradient passes the upstream one
    through unscaled: the convolution after the ReLU has scaled it already."""

    @tf.custom_gradient
    def normalize(x):
        return _scale_and_offset(x, scale, offset), lambda upstream: upstream

    return normalize(inputs)


@keras.saving.register_keras_serializable("atom_tf")
class Conv2D(layers.Conv2D):
    """Keras' Conv2D whose input gradient, inside `input_gradients_only`, carries the scale of
    the inference-mode batch norm that `link_scale_folds` paired with it. The same class name
    as keras' on purpose: weight files address layers by class name ("conv2d_3"), so
    checkpoints saved with keras' Conv2D load unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._folded_norm = None  # weakref to the paired FusedBatchNorm (not a sublayer)

    def _folded_scale(self, inputs):
        """The paired batch norm's scale where it passed its gradient on unscaled in this
        graph (its last output traced here: the model calls it, then the ReLU, then this
        convolution), else None."""
        norm = self._folded_norm() if self._folded_norm is not None else None
        folded = _folded_outputs().get(id(norm)) if norm is not None else None
        if folded is None or not _folding() or folded[0]() is not inputs.graph:
            return None
        source = inputs.op.inputs[0] if inputs.op.type == "Relu" else None
        if source is None or source.name != folded[1]:  # a gradient would lose the scale
            raise RuntimeError(
                f"{self.name}: its input is not the ReLU of {norm.name}'s output, which passed "
                "its gradient on for this convolution to scale (link_scale_folds)"
            )
        return tf.stop_gradient(norm.inference_scale())

    def convolution_op(self, inputs, kernel):
        scale = self._folded_scale(inputs)
        if scale is None:
            return super().convolution_op(inputs, kernel)
        convolve = super().convolution_op
        attributes = {
            "strides": [1, *self.strides, 1], "padding": self.padding.upper(),
            "dilations": [1, *self.dilation_rate, 1], "data_format": "NHWC",
        }  # fmt: skip

        @tf.custom_gradient
        def folded(r, w):
            def gradient(upstream):
                dr = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(r), filter=w * scale[:, None], out_backprop=upstream,
                    **attributes,
                )  # fmt: skip
                dw = tf.raw_ops.Conv2DBackpropFilter(
                    input=r, filter_sizes=tf.shape(w), out_backprop=upstream, **attributes
                )
                return dr, dw

            return convolve(r, w), gradient

        return folded(inputs, kernel)


def _only_consumer(layer) -> layers.Layer | None:
    nodes = layer._outbound_nodes
    return nodes[0].operation if len(nodes) == 1 else None


def link_scale_folds(model: keras.Model) -> int:
    """Pairs each FusedBatchNorm → ReLU → Conv2D chain of `model` (a functional
    model) in which the batch norm's output feeds only the ReLU and the ReLU's only the
    convolution (a 2-D, ungrouped, channels-last one; keras' plain ReLU), for
    `input_gradients_only`. Returns the number of pairs; the model is unchanged otherwise."""
    pairs = 0
    for layer in model.layers:
        if not isinstance(layer, FusedBatchNorm) or len(layer._inbound_nodes) != 1:
            continue
        relu = _only_consumer(layer)
        if not isinstance(relu, layers.ReLU) or len(relu._inbound_nodes) != 1:
            continue
        if relu.max_value is not None or relu.negative_slope or relu.threshold:
            continue
        convolution = _only_consumer(relu)
        if (
            isinstance(convolution, Conv2D)
            and len(convolution._inbound_nodes) == 1
            and convolution.groups == 1
            and convolution.data_format == "channels_last"
        ):
            convolution._folded_norm = weakref.ref(layer)
            layer._folds = True
            pairs += 1
    return pairs


# oneDNN's training batch norm on AVX-512 is fast on channel counts that fill its blocked
# layout (16 floats) and about 1.4x slower otherwise (bench/batch_norm.py), as on most of
# DenseNet's concatenations (24 + 12 k channels). With 8-float AVX2 vectors it was slower than
# atom_tf's path at every channel count measured (1.33-1.70x at 48-216 channels, multiples of
# 8 and 16 included; an AVX-512 CPU with oneDNN capped at AVX2).
BLOCKED_CHANNELS = 16


@functools.cache
def _onednn_lanes() -> int:
    return onednn_vector_floats()


def own_kernel_for(channels: int) -> bool:
    """Whether oneDNN's training batch norm is the slower one at this channel count
    (bench/batch_norm.py): with AVX-512 vectors where the channels are not a multiple of
    BLOCKED_CHANNELS, with AVX2 vectors always."""
    return _onednn_lanes() < BLOCKED_CHANNELS or bool(channels % BLOCKED_CHANNELS)


def _own_training_batch_norm(inputs) -> bool:
    """Whether training-mode batch norm takes `_batch_norm_training` instead of oneDNN's own
    kernel: where oneDNN runs and its kernel is the slower one (`own_kernel_for`)."""
    return _depthwise_scaling(inputs) and own_kernel_for(inputs.shape[-1])


def _synchronized_replicas() -> bool:
    """Whether batch norm runs in a replica context of several replicas (global statistics)."""
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


def _batch_norm_training(inputs, gamma, beta, epsilon: float, moments=None):
    """Training-mode batch norm for oneDNN's CPU kernels where its own is the slower one
    (`_own_training_batch_norm`): (outputs, batch mean, biased batch variance). The forward
    pass is the statistics (two passes; none where `moments`, [2, C] mean and biased variance of
    `inputs` computed before, are given) and one fused scale-offset(-ReLU) pass; the gradient is
    TensorFlow's fused batch-norm gradient, given the same statistics (which carries their
    dependence on the inputs: none flows through `moments`; `fused_batch_norm_gradient`)."""
    known = None if moments is None else tf.unstack(tf.stop_gradient(moments))

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2]) if known is None else known
        scale = gamma * tf.math.rsqrt(variance + epsilon)
        outputs = _scale_and_offset(x, scale, beta - mean * scale)

        def gradient(upstream, *_):  # the statistics feed the moving averages, no loss
            return fused_batch_norm_gradient(upstream, x, gamma, mean, variance, epsilon)

        return (outputs, mean, variance), gradient

    return normalize(inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))


# The channel multiple the fused batch-norm gradient is padded to (`gradient_padding`).
PADDED_CHANNELS = 8


def gradient_padding(channels: int) -> int:
    """Zero channels appended for the fused batch-norm gradient (oneDNN's kernel): up to a
    multiple of PADDED_CHANNELS where the channels are not a multiple of 4, none elsewhere.
    oneDNN vectorises its batch-norm gradient over 4 (SSE4.1) or 8 or more channels; at other
    channel counts it runs a reference kernel, 2.1-2.7× slower than its vector kernel on the
    padded tensors
    (`python bench/batch_norm.py --channels= --gradient_shapes=16x150,8x162,8x342`;
    DenseNet-BC's third block, 150 + 12 k). At multiples of 4 the copies cost more than they
    save."""
    return (-channels) % PADDED_CHANNELS if channels % 4 else 0


def fused_batch_norm_gradient(upstream, x, gamma, mean, variance, epsilon: float, pad=None):
    """TensorFlow's fused training batch-norm gradient (dx, dgamma, dbeta) given the batch
    `mean` and biased `variance`, on channels padded by `pad` zero channels (default
    `gradient_padding`): zero inputs with a zero upstream gradient have zero gradients, and
    every channel's gradient reads only that channel, so the real channels' are unchanged."""
    channels = x.shape[-1]
    if pad is None:
        pad = gradient_padding(channels) if channels is not None else 0
    if pad:
        upstream, x = (tf.pad(t, [[0, 0]] * 3 + [[0, pad]]) for t in (upstream, x))
        gamma, mean, variance = (tf.pad(v, [[0, pad]], constant_values=fill)
                                 for v, fill in ((gamma, 1.0), (mean, 0.0), (variance, 1.0)))  # fmt: skip
    dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=upstream, x=x, scale=gamma, reserve_space_1=mean, reserve_space_2=variance,
        reserve_space_3=tf.zeros([0]), epsilon=epsilon, data_format="NHWC", is_training=True,
    )  # fmt: skip
    if pad:
        dx, dgamma, dbeta = dx[..., :channels], dgamma[:channels], dbeta[:channels]
    return dx, dgamma, dbeta


def _unbiased(variance, count):
    """The batch variance over `count` values with Bessel's correction (PyTorch's running_var)."""
    count = tf.cast(count, tf.float32)
    return variance * count / tf.maximum(count - 1, 1)


def channel_moments(x) -> tf.Tensor:
    """[2, C]: the per-channel mean and biased variance of `x` over all but its last axis."""
    return tf.stack(tf.nn.moments(x, axes=list(range(len(x.shape) - 1))))


@keras.saving.register_keras_serializable("atom_tf")
class ConcatMoments(layers.Layer):
    """The training batch statistics of a growing concatenation, assembled from its parts'
    (DenseNet: a block's input, then each layer's new channels), so that the batch norms that
    read the concatenation do not compute again the statistics of the channels before (each
    channel's statistics are its own). Inputs: [x] (the statistics of x) or [moments, y]
    (the statistics so far, then y's). Zeros, which FusedBatchNorm ignores, wherever it would
    not read them: outside training, and where it does not compute statistics itself (other
    kernels, mixed precision, synchronized replicas)."""

    def call(self, inputs, training=None):
        *known, part = inputs
        if not training or _synchronized_replicas() or not _depthwise_scaling(part):
            return tf.zeros(self.compute_output_shape([t.shape for t in inputs]), tf.float32)
        moments = channel_moments(part)
        return tf.concat([known[0], moments], axis=1) if known else moments

    def compute_output_shape(self, input_shapes):
        *known, part = input_shapes
        return (2, (known[0][-1] if known else 0) + part[-1])


@keras.saving.register_keras_serializable("atom_tf")
class FusedBatchNorm(layers.Layer):
    """Batch normalisation over the last axis with TensorFlow's fused kernel, PyTorch semantics.

    Training mode normalises with the batch statistics and moves the running statistics by
    `1 - momentum` towards the batch mean and the *unbiased* batch variance (PyTorch's
    `running_var`); inference mode applies the running statistics as one scale and offset.

    Why not `keras.layers.BatchNormalization`: Keras 3 computes the moments with separate ops;
    the fused kernel (and its fused gradient, and oneDNN's BN+ReLU fusion) made the
    DenseNet-BC-100 training step 1.4× faster on CPU (bench/train_step.py).
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon
        self._folds = False  # paired with the convolution after its ReLU (link_scale_folds)

    def inference_scale(self):
        """The per-channel scale of inference mode: γ / √(running variance + ε)."""
        return self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)

    def build(self, input_shape):
        if isinstance(input_shape, list):  # [x, moments]
            input_shape = input_shape[0]
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, name="gamma", initializer="ones", autocast=False)
        self.beta = self.add_weight(shape=shape, name="beta", initializer="zeros", autocast=False)
        for name, initializer in (("moving_mean", "zeros"), ("moving_variance", "ones")):
            setattr(self, name, self.add_weight(
                shape=shape, name=name, initializer=initializer, trainable=False, autocast=False,
                aggregation="mean",  # replicas update it in sync (identical values)
            ))  # fmt: skip

    def _synchronized(self, inputs):
        """Training mode over several replicas: the statistics of the global batch (summed
        over replicas, two passes), so that N replicas train as one device does."""
        context = tf.distribute.get_replica_context()
        x = tf.cast(inputs, tf.float32)
        axes = list(range(len(x.shape) - 1))
        sum_op = tf.distribute.ReduceOp.SUM
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        total, count = context.all_reduce(sum_op, [tf.reduce_sum(x, axes), count])
        mean = total / count
        variance = context.all_reduce(sum_op, tf.reduce_sum(tf.square(x - mean), axes)) / count
        outputs = (x - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta
        return tf.cast(outputs, inputs.dtype), mean, _unbiased(variance, count)

    def call(self, inputs, training=None):
        moments = None
        if isinstance(inputs, (list, tuple)):  # [x, its training statistics (ConcatMoments)]
            inputs, moments = inputs
        if not training:
            scale = self.inference_scale()
            offset = tf.cast(self.beta - self.moving_mean * scale, inputs.dtype)
            scale = tf.cast(scale, inputs.dtype)
            if _depthwise_scaling(inputs):
                # The same products and sums as below, but oneDNN runs scale, offset and a
                # following ReLU as one pass over the tensor instead of three (the attacks'
                # and the scorers' forward passes; bench/profile_step.py)
                if self._folds and _folding():
                    scale, offset = tf.stop_gradient(scale), tf.stop_gradient(offset)
                    outputs = _pass_scale_to_convolution(inputs, scale, offset)
                    _folded_outputs()[id(self)] = (weakref.ref(outputs.graph), outputs.name)
                    return outputs
                return _scale_and_offset(inputs, scale, offset)
            return inputs * scale + offset
        if _synchronized_replicas():
            outputs, mean, variance = self._synchronized(inputs)
        elif _own_training_batch_norm(inputs):
            outputs, mean, variance = _batch_norm_training(
                inputs, self.gamma, self.beta, self.epsilon, moments
            )
            variance = _unbiased(variance, tf.reduce_prod(tf.shape(inputs)[:-1]))
        else:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )  # `variance` is the unbiased batch variance
        decay = 1.0 - self.momentum
        self.moving_mean.assign_sub((self.moving_mean - mean) * decay)
        self.moving_variance.assign_sub((self.moving_variance - variance) * decay)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def reestimate_batch_norm(network: keras.Model, batches: Iterable[tf.Tensor]) -> int:
    """Replaces the running statistics of every batch norm of `network` (FusedBatchNorm, Keras'
    BatchNormalization) by their equal-weight average over `batches`: each layer's batch mean
    and batch variance (each layer's own: unbiased for FusedBatchNorm) in training mode, where
    every batch norm normalises with its batch's own statistics, so no layer's estimate depends
    on another's (SWA's batch-norm update, Izmailov et al. 2018, section 3.2). For weights that no
    training step produced (an average of weights): the statistics they were trained with
    belong to other weights. Nothing else changes. Returns the number of batches read."""
    kinds = (FusedBatchNorm, layers.BatchNormalization)
    norms = [layer for layer in network._flatten_layers() if isinstance(layer, kinds)]
    momenta = [norm.momentum for norm in norms]
    sums = [np.zeros((2, *norm.moving_mean.shape), np.float64) for norm in norms]
    count = 0
    try:
        for norm in norms:
            norm.momentum = 0.0  # a training call leaves exactly its batch's statistics
        forward = tf.function(lambda x: network(x, training=True))  # traced with momentum 0
        for images in batches:
            forward(images)
            for total, norm in zip(sums, norms, strict=True):
                total += [keras.ops.convert_to_numpy(norm.moving_mean),
                          keras.ops.convert_to_numpy(norm.moving_variance)]  # fmt: skip
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
    if count == 0:
        raise ValueError("no batches to re-estimate the batch-norm statistics on")
    for total, norm in zip(sums, norms, strict=True):
        norm.moving_mean.assign((total[0] / count).astype(np.float32))
        norm.moving_variance.assign((total[1] / count).astype(np.float32))
    return count


def bn_relu(x, moments=None):
    """Batch norm and ReLU; `moments`: x's training statistics from ConcatMoments, if known."""
    x = FusedBatchNorm(momentum=0.9, epsilon=1e-5)(x if moments is None else [x, moments])
    return layers.ReLU()(x)


def logits_layer(num_outputs: int) -> layers.Dense:
    """The linear layer to the logits, float32 under mixed precision (the objectives, PGD and
    the scorers work on float32 logits)."""
    return layers.Dense(
        num_outputs, kernel_initializer=dense_init(), bias_initializer="zeros", name="logits",
        dtype="float32",
    )  # fmt: skip


def classifier_head(x, num_outputs: int, moments=None):
    """BN-ReLU, global average pooling, linear layer to the logits."""
    x = bn_relu(x, moments)
    x = layers.GlobalAveragePooling2D()(x)
    return logits_layer(num_outputs)(x)
