import json
import os
import shutil

import numpy as np
import pytest

from atom_tf.errors import InvalidConfigError, NonFiniteLossError
from atom_tf.training.trainer import TrainConfig, earlier_epoch_seconds, train
from tests.helpers import assert_same_weights_file, train_interrupted_then_resumed

FAST = dict(dataset="digits", model="small_cnn", epochs=2, num_candidates=512, num_selected=256,
            lr_decay_epochs=(1,), jit_compile=False, seed=3)  # fmt: skip


def test_train_writes_checkpoints_logs_and_summary(tmp_path):
    summary = train(TrainConfig(method="ntom", **FAST), str(tmp_path), verbose=0)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert os.path.exists(tmp_path / "network.weights.h5")
    assert json.loads((tmp_path / "checkpoints" / "latest").read_text())["epoch"] == 1
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert "mining/window_score_max" in history[0] and "val_in_accuracy" in history[0]
    assert summary["train_seconds"] >= sum(h["epoch_seconds"] for h in history) > 0
    assert summary["train_seconds_complete"] and summary["resumed_from_epoch"] == 0
    windows = [(h["mining/window_score_min"], h["mining/window_score_max"]) for h in history]
    assert windows[0] != windows[1]  # the model changed, so did the mined window
    assert any(
        f.startswith("events") for _, _, fs in os.walk(tmp_path / "logs" / "mining") for f in fs
    )
    # running again on a finished run changes nothing and trains no epoch: the saved summary
    # (with the first run's training time) comes back and no file is rewritten
    files = {
        p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"
    }
    again = train(TrainConfig(method="ntom", **FAST), str(tmp_path), verbose=0)
    assert again == summary
    assert {p: p.stat().st_mtime_ns for p in files} == files
    # nor does a finished run whose checkpoints were removed (a shipped detector's folder)
    shutil.rmtree(tmp_path / "checkpoints")
    assert train(TrainConfig(method="ntom", **FAST), str(tmp_path), verbose=0) == summary
    assert (tmp_path / "network.weights.h5").stat().st_mtime_ns == files[
        tmp_path / "network.weights.h5"
    ]


def test_a_different_configuration_is_refused_unless_overwrite(tmp_path):
    train(TrainConfig(method="oe", **{**FAST, "epochs": 1}), str(tmp_path), verbose=0)
    with pytest.raises(InvalidConfigError, match="--overwrite"):
        train(
            TrainConfig(method="oe", **{**FAST, "epochs": 1, "seed": 4}), str(tmp_path), verbose=0
        )
    summary = train(TrainConfig(method="oe", **{**FAST, "epochs": 1, "seed": 4}), str(tmp_path),
                    overwrite=True, verbose=0)  # fmt: skip
    assert summary["resumed_from_epoch"] == 0
    # OE selects at random: the window quantile cannot change its result, the run is the same
    same = train(TrainConfig(method="oe", **{**FAST, "epochs": 1, "seed": 4, "quantile": 0.5}),
                 str(tmp_path), verbose=0)  # fmt: skip
    assert same == summary


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(
        method="ntom", **{**FAST, "epochs": 3, "learning_rate": 1e30, "lr_decay_epochs": ()}
    )
    with pytest.raises(NonFiniteLossError) as err:
        train(config, str(tmp_path), verbose=0)
    assert "\n" not in str(err.value) and "learning_rate" in str(err.value)
    latest = tmp_path / "checkpoints" / "latest"
    if latest.exists():  # any checkpoint that was written holds finite weights
        import h5py

        epoch = json.loads(latest.read_text())["epoch"]
        with h5py.File(tmp_path / "checkpoints" / f"epoch_{epoch:04d}" / "model.weights.h5") as f:
            values = []
            f.visititems(lambda _, d: values.append(np.asarray(d)) if hasattr(d, "shape") else None)
        assert all(np.all(np.isfinite(v)) for v in values)


@pytest.mark.parametrize(
    "changes,match",
    [({"method": "vos"}, "unknown method"), ({"num_candidates": 10, "num_selected": 20}, "n must be <= N"),
     ({"num_candidates": 100, "num_selected": 50, "quantile": 0.75}, r"\[0, 1 - n/N\]"),
     ({"out_batch": 7}, "even"), ({"method": "oe", "mining": "window"}, "OOD score to mine by"),
     ({"method": "ccu", "mixture_learning_rate": 0.0}, "--mixture_learning_rate must be positive"),
     ({"ema_momentum": 1.0}, r"--ema_momentum must lie in \[0, 1\)"),
     ({"reestimate_bn_batches": -1}, r"--reestimate_bn_batches must be >= 0"),
     ({"init_share": 1.0}, r"--init_share must lie in \[0, 1\)"),
     ({"init_share": 0.1}, "--init_share interpolates with --init_from's network: set both")],
)  # fmt: skip
def test_invalid_configurations_fail_before_training(tmp_path, changes, match):
    with pytest.raises(InvalidConfigError, match=match):
        train(TrainConfig.from_json({**FAST, **changes}), str(tmp_path / "run"), verbose=0)


def test_config_json_of_the_previous_version_reads_back_to_the_same_record():
    """Flat records as earlier versions wrote them: a method's own setting at a non-default
    value beside the fields; settings added later absent while at their defaults."""
    from atom_tf.training.methods import method_for
    from atom_tf.training.trainer import canonical_config

    sofl = {**TrainConfig().to_json(), "method": "sofl", "reject_classes": 10}
    assert "precision" not in sofl and "margin_in" not in sofl
    config = TrainConfig.from_json(sofl)
    assert config.method_settings == {"reject_classes": 10}
    assert config.to_json() == sofl
    assert method_for(config.record()).num_outputs(100) == 110
    # another method's setting does not tell runs apart; the method's own does
    assert canonical_config({**sofl, "margin_in": -3.0}) == canonical_config(sofl)
    assert canonical_config({**sofl, "reject_classes": 5}) != canonical_config(sofl)


def test_cosine_schedule_anneals_to_1e_6_over_the_run():
    from atom_tf.training.trainer import learning_rate_schedule

    config = TrainConfig(**{**FAST, "lr_schedule": "cosine", "epochs": 4, "learning_rate": 0.1})
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(20)) == pytest.approx(0.05, rel=1e-3)
    assert float(schedule(40)) == pytest.approx(1e-6, rel=1e-3)


def test_earlier_epochs_seconds_of_a_resumed_run(tmp_path):
    """A resumed run's training time adds what history.jsonl recorded for the epochs before
    the resume (the last record of an epoch trained twice); it is a lower bound when an epoch
    has no time (trained before epochs were timed)."""
    lines = [{"epoch": 0, "epoch_seconds": 10.0}, {"epoch": 1, "epoch_seconds": 30.0},
             {"epoch": 1, "epoch_seconds": 20.0}, {"epoch": 2, "epoch_seconds": 40.0}]  # fmt: skip
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert earlier_epoch_seconds(str(tmp_path), 0) == (0.0, True)
    assert earlier_epoch_seconds(str(tmp_path), 2) == (30.0, True)
    assert earlier_epoch_seconds(str(tmp_path), 4) == (70.0, False)  # epoch 3: never recorded
    (tmp_path / "history.jsonl").write_text(json.dumps({"epoch": 0}) + "\n")
    assert earlier_epoch_seconds(str(tmp_path), 1) == (0.0, False)


def test_weight_averaging_ends_on_the_average_of_the_steps_and_resumes_bit_identically(
    tmp_path, monkeypatch
):
    """--ema_momentum m: the final network's trainable weights are the exponential average of
    the weights after each step (a_1 = w_1, a_t = m a_(t-1) + (1 - m) w_t, by hand in float64);
    its batch-norm statistics and the last epoch checkpoint are the trained weights'; a run
    stopped after its first epoch resumes to the same final network."""
    from atom_tf.evaluation.detector import load_network
    from atom_tf.training import trainer as trainer_module
    from atom_tf.training.checkpoint import CheckpointManager

    m = 0.8
    config = TrainConfig(method="ntom", ema_momentum=m, **{**FAST, "deterministic": True})
    trained, frozen = [], []

    def record(self, batch, logs=None):
        network = self.model.network
        trained.append([np.asarray(v, np.float64) for v in network.trainable_weights])
        frozen[:] = [np.asarray(v) for v in network.non_trainable_weights]

    monkeypatch.setattr(trainer_module.EpochCheckpoint, "on_train_batch_end", record)
    straight = str(tmp_path / "straight")
    summary = train(config, straight, verbose=0)
    monkeypatch.undo()
    assert len(trained) > 20 and 0.3 < summary["test_accuracy"] <= 1.0
    average = trained[0]
    for weights in trained[1:]:
        average = [m * a + (1 - m) * w for a, w in zip(average, weights, strict=True)]
    network = load_network(straight)[0]
    final = [np.asarray(v) for v in network.trainable_weights]
    for got, want in zip(final, average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(got, last) for got, last in zip(final, trained[-1], strict=True))
    for got, want in zip(network.non_trainable_weights, frozen, strict=True):
        assert np.array_equal(np.asarray(got), want)
    CheckpointManager(straight).restore_network(network)  # the last epoch's trained weights
    for got, last in zip(network.trainable_weights, trained[-1], strict=True):
        assert np.array_equal(np.asarray(got), last.astype(np.float32))

    resumed = str(tmp_path / "resumed")
    again = train_interrupted_then_resumed(config, resumed, monkeypatch)
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert_same_weights_file(f"{straight}/network.weights.h5", f"{resumed}/network.weights.h5")


def test_reestimated_statistics_change_only_the_averages_statistics_and_resume_identically(
    tmp_path, monkeypatch
):
    """--reestimate_bn_batches: the averaged network keeps its weights and gets statistics of its
    own (each batch norm's: not the trained weights'), the same for a resumed run."""
    from atom_tf.evaluation.detector import load_network

    base = {**FAST, "deterministic": True, "method": "ntom", "ema_momentum": 0.8}
    averaged = str(tmp_path / "averaged")
    train(TrainConfig(**base), averaged, verbose=0)
    config = TrainConfig(**base, reestimate_bn_batches=3)
    straight = str(tmp_path / "straight")
    train(config, straight, verbose=0)
    before, after = load_network(averaged)[0], load_network(straight)[0]
    for got, want in zip(after.trainable_weights, before.trainable_weights, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    statistics = [(np.asarray(a), np.asarray(b)) for a, b in
                  zip(after.non_trainable_weights, before.non_trainable_weights, strict=True)]  # fmt: skip
    assert statistics and all(not np.allclose(a, b) for a, b in statistics)

    resumed = str(tmp_path / "resumed")
    train_interrupted_then_resumed(config, resumed, monkeypatch)
    assert_same_weights_file(f"{straight}/network.weights.h5", f"{resumed}/network.weights.h5")


def test_init_share_interpolates_the_final_network_with_the_start_and_resumes_identically(
    tmp_path, monkeypatch
):
    """--init_share s (WiSE-FT): every weight of the final network, batch-norm statistics
    included, is (1 - s) x the fine-tuned one + s x the start's (by hand), training itself
    unchanged; a run stopped after its first epoch resumes to the same network."""
    from atom_tf.evaluation.detector import load_network

    start = str(tmp_path / "start")
    train(TrainConfig(method="ntom", **{**FAST, "epochs": 1}), start, verbose=0)
    tuned = {**FAST, "deterministic": True, "method": "ntom", "init_from": start,
             "learning_rate": 0.05}  # fmt: skip
    plain, mixed = str(tmp_path / "plain"), str(tmp_path / "mixed")
    train(TrainConfig(**tuned), plain, verbose=0)
    config = TrainConfig(**tuned, init_share=0.25)
    train(config, mixed, verbose=0)
    # the epochs trained the same weights: only the final network differs
    assert_same_weights_file(f"{plain}/checkpoints/epoch_0001/model.weights.h5",
                             f"{mixed}/checkpoints/epoch_0001/model.weights.h5")  # fmt: skip
    weights = [load_network(run)[0].weights for run in (start, plain, mixed)]
    assert len({len(w) for w in weights}) == 1
    changed = 0
    for w_start, w_plain, w_mixed in zip(*weights, strict=True):
        a, b = np.asarray(w_start, np.float64), np.asarray(w_plain, np.float64)
        changed += not np.allclose(a, b)
        np.testing.assert_allclose(np.asarray(w_mixed), 0.75 * b + 0.25 * a, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    assert changed == len(weights[0])  # the fine-tune moved every weight: a real mixture

    resumed = str(tmp_path / "resumed")
    train_interrupted_then_resumed(config, resumed, monkeypatch)
    assert_same_weights_file(f"{mixed}/network.weights.h5", f"{resumed}/network.weights.h5")
