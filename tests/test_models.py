import numpy as np
import pytest

from atom_tf.models import build_model


def trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_densenet_bc_100_matches_the_pytorch_parameter_count():
    # PROTOCOL §7: PyTorch counts 769,505 parameters with 11 outputs. PyTorch's count equals
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

    # PROTOCOL §7: about 288M multiply-adds (DenseNet-BC-100) and 1.30G (WRN-40-4) per image
    assert round(forward_macs(build_model("densenet_bc_100", 11)) / 1e6) in range(280, 297)
    assert round(forward_macs(build_model("wrn_40_4", 10)) / 1e9, 2) == 1.30
