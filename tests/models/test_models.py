import numpy as np
import pytest

from atom_tf.models import build_model


def trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_densenet_bc_100_matches_the_pytorch_parameter_count():
    # docs/protocol.md §7: PyTorch counts 769,505 parameters with 11 outputs. PyTorch's count equals
    # Keras' *trainable* count; Keras also lists batch-norm running mean/variance as
    # non-trainable weights (PyTorch buffers), which PyTorch does not count.
    model = build_model("densenet_bc_100", 11)
    assert trainable_count(model) == 769_505
    bn_stats = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert bn_stats == 23_988  # 2 × (channels of every batch-norm layer)


def test_wide_resnets_match_the_published_sizes():
    assert round(trainable_count(build_model("wrn_40_4", 10)) / 1e6, 2) == 8.95
    assert round(trainable_count(build_model("wrn_40_2", 10)) / 1e6, 2) == 2.24


@pytest.mark.parametrize("name", ["small_cnn", "densenet_bc_100"])
def test_outputs_and_internal_normalisation(name, rng):
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model = build_model(name, 11, stats)
    x = rng.random((2, 32, 32, 3)).astype(np.float32)
    assert model(x, training=False).shape == (2, 11)
    assert any(layer.name == "normalize" for layer in model.layers)
    assert not any(layer.name == "normalize" for layer in build_model(name, 11).layers)


def test_forward_macs_match_the_published_costs():
    from atom_tf.models.flops import forward_macs

    # docs/protocol.md §7: about 288M multiply-adds (DenseNet-BC-100) and 1.30G (WRN-40-4) per image
    assert round(forward_macs(build_model("densenet_bc_100", 11)) / 1e6) in range(280, 297)
    assert round(forward_macs(build_model("wrn_40_4", 10)) / 1e9, 2) == 1.30


def test_fused_batch_norm_has_pytorch_semantics(rng):
    from atom_tf.models.layers import FusedBatchNorm

    x = (rng.normal(size=(6, 4, 4, 3)) * [1.0, 2.0, 3.0] + [0.5, -1.0, 2.0]).astype(np.float32)
    layer = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    layer.build(x.shape)
    layer.gamma.assign([1.0, 2.0, 0.5])
    layer.beta.assign([0.0, 1.0, -1.0])
    y = np.asarray(layer(x, training=True))
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-5) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    np.testing.assert_allclose(y, expected, atol=1e-4)
    # running statistics: PyTorch's update with momentum 0.1 and the unbiased batch variance
    n = x.size // 3
    np.testing.assert_allclose(np.asarray(layer.moving_mean), 0.1 * mean, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(layer.moving_variance), 0.9 + 0.1 * var * n / (n - 1), atol=1e-5
    )
    # inference mode uses the running statistics, not the batch's
    inference = np.asarray(layer(x, training=False))
    rm, rv = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
    np.testing.assert_allclose(
        inference, (x - rm) / np.sqrt(rv + 1e-5) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0], atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(layer.moving_mean), rm)  # unchanged by inference


def test_inference_batch_norm_on_onednn_equals_the_plain_multiply_add(rng, monkeypatch):
    """Inference batch norm runs its scale as a 1×1 depthwise convolution where oneDNN fuses
    it with the offset and the following ReLU; the numbers (forward, input gradient, in a
    graph and in an XLA cluster) are those of x · scale + offset up to the last bit (a fused
    multiply-add rounds once: atom_tf.cpu.KERNELS keys caches by it)."""
    import tensorflow as tf

    from atom_tf.models import layers

    x = tf.constant((rng.normal(size=(4, 8, 8, 5)) * 2 + 0.3).astype(np.float32))
    layer = layers.FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    layer.build(x.shape)
    for variable in (layer.gamma, layer.beta, layer.moving_mean):
        variable.assign(rng.normal(size=5).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.1, 3.0, size=5).astype(np.float32))

    def forward_and_gradient(jit: bool):
        @tf.function(jit_compile=jit)
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.relu(layer(x, training=False))
                loss = tf.reduce_sum(y * tf.range(1.0, 6.0))
            return y, tape.gradient(loss, x)

        return [np.asarray(t) for t in run(x)]

    taken = []
    decide = layers._depthwise_scaling
    monkeypatch.setattr(
        layers, "_depthwise_scaling", lambda t: taken.append(decide(t)) or taken[-1]
    )
    fast, xla = forward_and_gradient(False), forward_and_gradient(True)
    from tensorflow.python.util import _pywrap_util_port

    assert taken == [_pywrap_util_port.IsMklEnabled(), False]  # XLA fuses the plain ops itself
    monkeypatch.setattr(layers, "_depthwise_scaling", lambda t: False)
    plain = forward_and_gradient(False)
    scale = np.asarray(layer.gamma) / np.sqrt(np.asarray(layer.moving_variance) + 1e-5)
    offset = np.asarray(layer.beta) - np.asarray(layer.moving_mean) * scale
    np.testing.assert_allclose(plain[0], np.maximum(np.asarray(x) * scale + offset, 0), atol=1e-5)
    for ours in (fast, xla):
        np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours[1], plain[1], rtol=1e-6, atol=1e-6)


def test_training_batch_norm_on_onednn_equals_the_fused_kernel(rng, monkeypatch):
    """Training batch norm where oneDNN runs and its own kernel is slow (with AVX-512 vectors
    channels not a multiple of 16, with AVX2 vectors every count: statistics, then the fused
    scale-offset pass, and TensorFlow's fused gradient) gives the fused kernel's outputs, input
    and parameter gradients and moving statistics, which match a float64 computation by hand."""
    import tensorflow as tf

    from atom_tf.models import layers

    x = tf.constant((rng.normal(size=(6, 8, 8, 5)) * 2 + 0.7).astype(np.float32))
    weights = np.arange(1.0, 6.0, dtype=np.float32)

    def train_step(fast: bool):
        monkeypatch.setattr(layers, "_depthwise_scaling", lambda t: fast)
        layer = layers.FusedBatchNorm(momentum=0.9, epsilon=1e-5)
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 5).astype(np.float32))
        layer.beta.assign(np.linspace(-0.2, 0.2, 5).astype(np.float32))

        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.relu(layer(x, training=True))
                loss = tf.reduce_sum(y * weights * y)
            return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

        out = [np.asarray(t) for t in run(x)]
        return out, np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)

    monkeypatch.setattr(layers, "_onednn_lanes", lambda: 16)  # AVX-512 vectors
    taken = []
    own = layers._batch_norm_training
    monkeypatch.setattr(layers, "_batch_norm_training", lambda *a: taken.append(1) or own(*a))
    fast, fast_mean, fast_var = train_step(True)
    fused, fused_mean, fused_var = train_step(False)
    assert len(taken) == 1  # the oneDNN path, only where oneDNN runs
    monkeypatch.setattr(layers, "_depthwise_scaling", lambda t: True)
    blocked = layers.FusedBatchNorm()  # 16 channels: oneDNN's own kernel is the fast one there
    blocked(tf.ones((2, 4, 4, layers.BLOCKED_CHANNELS)), training=True)
    assert len(taken) == 1
    monkeypatch.setattr(layers, "_onednn_lanes", lambda: 8)  # AVX2 vectors: atom_tf's path always
    layers.FusedBatchNorm()(tf.ones((2, 4, 4, layers.BLOCKED_CHANNELS)), training=True)
    assert len(taken) == 2
    for ours, theirs in zip(fast, fused, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast_mean, fused_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fast_var, fused_var, rtol=1e-6)
    x64 = np.asarray(x, np.float64)
    mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    expected = np.maximum((x64 - mean) / np.sqrt(var + 1e-5) * np.linspace(0.5, 1.5, 5)
                          + np.linspace(-0.2, 0.2, 5), 0)  # fmt: skip
    np.testing.assert_allclose(fast[0], expected, atol=1e-5)
    np.testing.assert_allclose(fast_mean, 0.1 * mean, rtol=1e-5)  # moved 0.1 of the way from 0
    np.testing.assert_allclose(fast_var, 0.9 + 0.1 * var * x64[..., 0].size / (x64[..., 0].size - 1),
                               rtol=1e-5)  # fmt: skip


def test_batch_norm_gradient_on_zero_padded_channels_is_the_gradient(rng):
    """The fused training batch-norm gradient, with or without zero channels appended (where
    oneDNN's vector kernels skip the channel count), is the float64 gradient by hand; counts
    that are not multiples of 4 are padded, up to a multiple of 8, the others not."""
    import tensorflow as tf

    from atom_tf.models import layers

    x = rng.normal(size=(4, 5, 5, 6)) * 1.5 + 0.3
    upstream = rng.normal(size=x.shape)
    gamma, epsilon = np.linspace(0.5, 1.5, 6), 1e-5
    mean, variance = x.mean((0, 1, 2)), x.var((0, 1, 2))
    normalized = (x - mean) / np.sqrt(variance + epsilon)
    expected = (gamma / np.sqrt(variance + epsilon)
                * (upstream - upstream.mean((0, 1, 2))
                   - normalized * (upstream * normalized).mean((0, 1, 2))),
                (upstream * normalized).sum((0, 1, 2)), upstream.sum((0, 1, 2)))  # fmt: skip
    f32 = [tf.constant(v, tf.float32) for v in (upstream, x, gamma, mean, variance)]
    for pad in (None, 0, 2, 10):
        got = layers.fused_batch_norm_gradient(*f32, epsilon, pad=pad)
        for ours, theirs in zip(got, expected, strict=True):
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    channels = (4, 6, 12, 60, 150, 160, 162, 342)
    assert [layers.gradient_padding(c) for c in channels] == [0, 2, 0, 0, 2, 0, 6, 2]


def test_densenet_reuses_the_statistics_of_earlier_channels_and_trains_as_before(rng, monkeypatch):
    """DenseNet's batch norms get the training statistics of the growing concatenation from
    ConcatMoments (each channel's computed once); on atom_tf's own path (every layer, as with
    AVX2 vectors) the training step's outputs, gradients and moving statistics equal the fused
    kernel's (which computes every layer's statistics itself), and inference ignores them."""
    import keras
    import tensorflow as tf

    from atom_tf.models import layers
    from atom_tf.models.densenet import densenet_bc

    x = tf.constant(rng.random((6, 32, 32, 3)).astype(np.float32))
    computed = []
    moments = layers.channel_moments
    monkeypatch.setattr(
        layers, "channel_moments", lambda t: computed.append(t.shape[-1]) or moments(t)
    )

    def step(own_path: bool):
        monkeypatch.setattr(layers, "_depthwise_scaling", lambda t: own_path)
        monkeypatch.setattr(layers, "_onednn_lanes", lambda: 8)
        keras.utils.set_random_seed(4)
        net = densenet_bc(11, depth=16, growth=4)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = net(x, training=True)
            loss = tf.reduce_sum(out * out)
        grads = tape.gradient(loss, [x, *net.trainable_variables])
        clean = net(x, training=False)
        return [np.asarray(t) for t in (out, clean, *grads, *net.non_trainable_variables)]

    ours, fused = step(True), step(False)
    # each block's input once, then each layer's 4 new channels (2 layers per block)
    assert computed == [8, 4, 4, 8, 4, 4, 8, 4, 4]  # none for the fused kernel, which ignores them
    assert len(ours) == len(fused)
    for a, b in zip(ours, fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_densenet_weights_saved_before_the_statistics_layers_load(tmp_path, rng):
    """A DenseNet checkpoint saved by the architecture without ConcatMoments (atom_tf before
    it) loads into today's and gives the same outputs: the weightless layers shift nothing."""
    import keras
    from keras import layers as kl

    from atom_tf.models.densenet import densenet_bc
    from atom_tf.models.layers import bn_relu, classifier_head, conv, inputs_32

    keras.utils.set_random_seed(1)
    inputs, x = inputs_32(None)
    x = conv(x, 8, 3)
    for block in range(3):
        for _ in range(2):
            x = kl.Concatenate()([x, conv(bn_relu(conv(bn_relu(x), 16, 1)), 4, 3)])
        if block < 2:
            x = kl.AveragePooling2D(2)(conv(bn_relu(x), 8, 1))
    before = keras.Model(inputs, classifier_head(x, 11))
    images = rng.random((3, 32, 32, 3)).astype(np.float32)
    before(images, training=True)  # moving statistics away from their initial values
    before.save_weights(tmp_path / "before.weights.h5")
    today = densenet_bc(11, depth=16, growth=4)
    today.load_weights(tmp_path / "before.weights.h5")
    np.testing.assert_array_equal(today(images, training=False), before(images, training=False))


def test_reestimated_batch_norm_statistics_are_the_average_of_each_layers_batch_moments(rng):
    """Every batch norm (ours: unbiased variance; Keras': biased) ends on the mean over the
    batches of its input's batch moments in training mode; momenta and weights stay."""
    import keras

    from atom_tf.models.layers import FusedBatchNorm, bn_relu, reestimate_batch_norm

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = bn_relu(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    x = keras.layers.BatchNormalization(momentum=0.8)(keras.layers.Conv2D(5, 3)(x))
    network = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    norms = [layer for layer in network._flatten_layers() if hasattr(layer, "moving_mean")]
    assert [type(n) for n in norms] == [FusedBatchNorm, keras.layers.BatchNormalization]
    batches = [rng.normal(i, 1 + i, (6, 8, 8, 3)).astype(np.float32) for i in range(3)]
    probe = keras.Model(inputs, [norm.input for norm in norms])
    features = [[np.asarray(f, np.float64) for f in probe(b, training=True)] for b in batches]
    expected = []
    for i, unbiased in enumerate((True, False)):
        layer_inputs = [f[i] for f in features]
        means = np.mean([f.mean((0, 1, 2)) for f in layer_inputs], 0)
        variances = np.mean([f.var((0, 1, 2), ddof=int(unbiased)) for f in layer_inputs], 0)
        expected.append((means, variances))
    weights = [np.asarray(w) for w in network.trainable_weights]

    assert reestimate_batch_norm(network, iter(batches)) == 3
    for norm, (mean, variance) in zip(norms, expected, strict=True):
        np.testing.assert_allclose(np.asarray(norm.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(norm.moving_variance), variance, rtol=1e-4)
    assert [n.momentum for n in norms] == [0.9, 0.8]
    for got, want in zip(network.trainable_weights, weights, strict=True):
        assert np.array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="no batches"):
        reestimate_batch_norm(network, [])
