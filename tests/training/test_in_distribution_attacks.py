"""Methods that attack in-distribution images during training (ALOE, AOE, atom_adv,
atom_trades), FGSM with a random start, and the catastrophic-overfitting guard."""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from atom_tf.attacks.objectives import label_ce
from atom_tf.errors import InvalidConfigError
from atom_tf.training.methods import method_for
from atom_tf.training.overfitting import (
    CatastrophicOverfittingError,
    OverfittingGuard,
    RobustLossCheck,
    collapsed,
)
from atom_tf.training.train_step import AttackConfig, RobustOODModel, _kl
from atom_tf.training.trainer import TrainConfig, canonical_config, train
from tests.helpers import (
    assert_same_weights_file,
    linear_network,
    tiny_network,
    train_interrupted_then_resumed,
)
from tests.helpers import random_batch as batch

EPS = 8 / 255
NEW_METHODS = ["aloe", "aoe", "atom_adv", "atom_trades"]


def _model(name: str, attack: AttackConfig | None = None, **settings) -> RobustOODModel:
    method = method_for({"method": name, **settings})
    model = RobustOODModel(linear_network(method.num_outputs(2)), method, 2, attack=attack)
    model.compile(optimizer="sgd")
    return model


@pytest.mark.parametrize(
    "name, settings, share",
    [("aloe", {}, 1.0), ("aoe", {}, 1.0), ("atom_adv", {"in_objective": "label"}, 0.5),
     ("atom_adv", {"in_objective": "ood"}, 0.5), ("atom_adv", {"in_objective": "both"}, 0.5)],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["pgd", "fgsm_rs"])
def test_in_distribution_attack_stays_in_the_ball_and_raises_each_objective(
    name, settings, share, kind, rng
):
    model = _model(name, AttackConfig(kind=kind), **settings)
    x_in, y_in, _ = batch(rng, n_in=16)
    attacked = model.attack_in_distribution(x_in, y_in)
    first = 16 - int(16 * share)
    assert attacked.shape[0] == 16 - first
    clean = x_in[first:]
    delta = np.abs(attacked.numpy() - clean.numpy())
    assert 0 < delta.max() <= EPS + 1e-6
    assert attacked.numpy().min() >= 0 and attacked.numpy().max() <= 1
    # each part of the attacked images raises its own objective on average
    objectives = model.method.in_distribution_objectives(y_in[first:])
    bounds = np.linspace(0, len(clean), len(objectives) + 1).astype(int)
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        objective = model.method.in_distribution_objectives(y_in[first:][lo:hi])[i]
        before = objective(model.network(clean[lo:hi])).numpy()
        after = objective(model.network(attacked[lo:hi])).numpy()
        assert after.mean() > before.mean(), (i, before.mean(), after.mean())
    # the in-distribution images attacked end up with a higher training loss than clean
    before = label_ce(model.network(clean), y_in[first:]).numpy().mean()
    after = label_ce(model.network(attacked), y_in[first:]).numpy().mean()
    assert after > before


def test_ood_objective_pushes_in_distribution_images_towards_the_extra_class(rng):
    model = _model("atom_adv", in_objective="ood")
    x_in, y_in, _ = batch(rng, n_in=16)
    attacked = model.attack_in_distribution(x_in, y_in)
    ood = lambda x: tf.nn.softmax(model.network(x))[:, -1].numpy()  # noqa: E731
    assert ood(attacked).mean() > ood(x_in[8:]).mean()


def test_trades_attack_raises_the_kl_and_stays_in_the_ball(rng):
    model = _model("atom_trades")
    x_in, y_in, _ = batch(rng, n_in=16)
    attacked = model.trades_attack(x_in, y_in)
    assert attacked.shape[0] == 8
    assert np.abs(attacked.numpy() - x_in[8:].numpy()).max() <= EPS + 1e-6
    clean = tf.nn.softmax(model.network(x_in[8:]))
    assert float(tf.reduce_mean(_kl(clean, model.network(attacked)))) > 1e-4


def test_trades_adversary_towards_ood_raises_the_extra_class_not_only_the_kl(rng):
    """--trades_adversary=ood: x' is the attack towards the K+1-th class (atom_adv's "ood"
    objective) on the same half of the batch, in the ball; the KL's own maximiser moves p(OOD)
    less, from the same start."""
    x_in, y_in, _ = batch(rng, n_in=16)
    towards_ood = _model("atom_trades", trades_adversary="ood")
    kl = _model("atom_trades")
    kl.network.set_weights(towards_ood.network.get_weights())
    ood = lambda x: tf.nn.softmax(towards_ood.network(x))[:, -1].numpy()  # noqa: E731
    attacked = towards_ood.trades_attack(x_in, y_in)
    assert attacked.shape[0] == 8
    assert np.abs(attacked.numpy() - x_in[8:].numpy()).max() <= EPS + 1e-6
    assert ood(attacked).mean() > ood(x_in[8:]).mean()
    assert ood(attacked).mean() > ood(kl.trades_attack(x_in, y_in)).mean()
    assert towards_ood.method.in_objective == "ood" and kl.method.in_objective == "label"


def test_in_objective_does_not_tell_trades_runs_apart():
    """atom_trades never read --in_objective (its x' comes from --trades_adversary): two runs
    that differ only there are the same run."""
    record = {"method": "atom_trades"}
    assert canonical_config({**record, "in_objective": "ood"}) == canonical_config(record)
    adversary = {**record, "trades_adversary": "ood"}
    assert canonical_config(adversary) != canonical_config(record)
    assert method_for({**record, "in_objective": "ood"}).trades_adversary == "kl"


def test_kl_matches_its_definition():
    p = np.array([[0.7, 0.2, 0.1]])
    logits = np.array([[1.0, 0.0, -1.0]])
    q = np.exp(logits) / np.exp(logits).sum()
    expected = (p * np.log(p / q)).sum()
    np.testing.assert_allclose(_kl(tf.constant(p, tf.float32), tf.constant(logits, tf.float32)),
                               [expected], rtol=1e-4)  # fmt: skip


def test_aloe_attacks_every_outlier_and_aoe_none(rng):
    _, _, x_out = batch(rng)
    aloe = _model("aloe")
    assert np.all(
        np.abs(aloe.attack_outliers(x_out).numpy() - x_out.numpy()).reshape(8, -1).max(1) > 0
    )
    assert not method_for({"method": "aoe"}).attack


def test_fgsm_rs_is_one_step_of_1_25_eps_from_a_uniform_start(rng):
    model = _model("acet", AttackConfig(kind="fgsm_rs"))
    _, _, x_out = batch(rng, n_out=16)
    attacked = model.attack_outliers(x_out)[8:]
    delta = np.abs(attacked.numpy() - x_out[8:].numpy())
    assert delta.max() <= EPS + 1e-6
    # the start is not rounded to 1/255 steps, and the step reaches the ball's edge often
    assert np.mean(np.isclose(delta, EPS, atol=1e-6)) > 0.5
    objective = model.method.pgd_objective()
    assert objective(model.network(attacked)).numpy().mean() > objective(
        model.network(x_out[8:])).numpy().mean()  # fmt: skip
    with pytest.raises(ValueError, match="fgsm_rs"):
        AttackConfig(kind="fgsm")


@pytest.mark.parametrize(
    "name, settings",
    [*((name, {}) for name in NEW_METHODS), ("atom_trades", {"trades_adversary": "ood"})],
)
@pytest.mark.parametrize("kind", ["pgd", "fgsm_rs"])
def test_each_new_methods_step_lowers_its_loss(name, settings, kind, rng):
    method = method_for({"method": name, **settings})
    model = RobustOODModel(tiny_network(method.num_outputs(2)), method, 2,
                           attack=AttackConfig(kind=kind))  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    data = tf.data.Dataset.from_tensors(batch(rng)).repeat()
    history = model.fit(data, epochs=4, steps_per_epoch=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert ("trades_loss" in history) == (name == "atom_trades")


def test_collapse_rule():
    assert not collapsed([], 5.0)
    assert not collapsed([1.0, 0.8], 1.2)  # noise
    assert not collapsed([0.1], 0.3)  # tripled, but by a fifth of a nat
    assert collapsed([1.0, 0.8], 2.0)
    assert collapsed([1.0], float("nan"))
    # far above the loss under the training attack: caught in epoch 1 already (the CPU-scale
    # atom_adv fine-tune with FGSM-RS measured PGD-10 7.44 against a training loss near 1.2)
    assert collapsed([], 7.44, 1.2)
    assert not collapsed([], 1.5, 1.2)  # PGD-10 is a little stronger than the training attack


class _Blowup(keras.callbacks.Callback):
    """A constructed collapse: from epoch `start` on, the logits are scaled ×50 at the end of
    each epoch (clean predictions unchanged, attacked images confidently wrong)."""

    def __init__(self, start: int):
        super().__init__()
        self.start = start

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start:
            last = self.model.network.layers[-1]
            last.kernel.assign(last.kernel * 50.0)
            last.bias.assign(last.bias * 50.0)


class _Saved(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.parametrize("blowup", [True, False])
def test_overfitting_guard_stops_a_collapsing_run_and_leaves_a_sound_one(blowup, rng):
    method = method_for({"method": "atom_adv"})
    model = RobustOODModel(tiny_network(method.num_outputs(2)), method, 2,
                           attack=AttackConfig(kind="fgsm_rs"))  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9), jit_compile=False)
    x_in, y_in, x_out = batch(rng, n_in=16, n_out=16)
    check = RobustLossCheck(model, (x_in.numpy() * 255).round(), y_in.numpy(),
                            (x_out.numpy() * 255).round())  # fmt: skip
    saved = _Saved()
    guard = OverfittingGuard(check, lambda: saved.epochs[-1] if saved.epochs else None)
    callbacks = ([_Blowup(1)] if blowup else []) + [guard, saved]
    data = tf.data.Dataset.from_tensors(batch(rng)).repeat()
    if blowup:
        with pytest.raises(
            CatastrophicOverfittingError, match="last good checkpoint kept: epoch 1"
        ):
            model.fit(data, epochs=4, steps_per_epoch=4, verbose=0, callbacks=callbacks)
        assert saved.epochs == [0]  # the collapsed epoch was never saved
    else:
        history = model.fit(data, epochs=4, steps_per_epoch=4, verbose=0, callbacks=callbacks)
        assert saved.epochs == [0, 1, 2, 3]
        assert len(guard.history) == 4 and "robust_in_accuracy" in history.history


def test_a_collapse_in_the_first_epoch_is_told_in_one_line():
    """The values of the CPU suite's FGSM-RS atom_adv fine-tune at its first epoch: stopped,
    and the line names only what it compared (no epoch before it)."""
    values = {"robust_loss": 7.609, "train_attack_loss": 2.088}
    guard = OverfittingGuard(lambda: values, lambda: None)
    with pytest.raises(CatastrophicOverfittingError) as stopped:
        guard.on_epoch_end(0, {})
    assert str(stopped.value) == (
        "catastrophic overfitting at epoch 1: the PGD-10 robust loss is 7.609 (under the training "
        "attack 2.088); last good checkpoint kept: none (no epoch completed); use "
        "--train_attack=pgd or a smaller --epsilon"
    )


FAST = dict(dataset="digits", model="small_cnn", epochs=2, num_candidates=512, num_selected=256,
            lr_decay_epochs=(1,), jit_compile=False, seed=3, deterministic=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_METHODS)
def test_each_new_method_trains_and_resumes_bit_identically(name, tmp_path, monkeypatch):
    config = TrainConfig(method=name, train_attack="fgsm_rs", **FAST)
    straight = str(tmp_path / "straight")
    summary = train(config, straight, verbose=0)
    with open(f"{straight}/history.jsonl") as f:
        history = [json.loads(line) for line in f]
    assert [r["epoch"] for r in history] == [0, 1] and all("robust_loss" in r for r in history)
    assert summary["test_accuracy"] > 0.3

    resumed = str(tmp_path / "resumed")
    train_interrupted_then_resumed(config, resumed, monkeypatch)
    assert_same_weights_file(f"{straight}/network.weights.h5", f"{resumed}/network.weights.h5")


def test_a_wrong_in_objective_is_one_line(tmp_path):
    with pytest.raises(InvalidConfigError, match="--in_objective must be one of label, ood, both"):
        train(TrainConfig.from_json({**FAST, "method": "atom_adv", "in_objective": "away"}),
              str(tmp_path / "run"), verbose=0)  # fmt: skip
