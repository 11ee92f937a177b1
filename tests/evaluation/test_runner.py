"""Evaluation end to end on a small run trained here: detector API, threats, resumable
per-(set, threat) scores, reports, and bin/evaluate.py as a user runs it."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import atom_tf
from atom_tf.data.ood_sets import load_ood_set
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.metrics import auroc, threshold_at_tpr
from atom_tf.evaluation.reports import write_reports
from atom_tf.evaluation.runner import EvalSettings, evaluate
from atom_tf.evaluation.threats import AttackSettings, ThreatContext, get_threat
from atom_tf.training.trainer import TrainConfig, train
from tests.conftest import REPO

FAST = dict(dataset="digits", model="small_cnn", epochs=2, num_candidates=512, num_selected=256,
            lr_decay_epochs=(1,), jit_compile=False, seed=3)  # fmt: skip
QUICK = AttackSettings(steps=5, step_size=2 / 255)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(TrainConfig(method="ntom", **FAST), str(path), verbose=0)
    return str(path)


def test_detector_api_accepts_95_percent_and_labels(run_dir):
    from atom_tf.data import load_in_distribution

    detector = atom_tf.load_detector(run_dir)
    data = load_in_distribution("digits")
    accepted, labels = detector.predict(data.x_test)
    assert accepted.mean() == pytest.approx(0.95, abs=0.01)
    assert labels.shape == (360,) and labels.max() < 10
    assert os.path.exists(os.path.join(run_dir, "threshold_kplus1.json"))
    cached = atom_tf.load_detector(run_dir)
    assert cached.threshold == detector.threshold
    assert np.allclose(
        detector.score(data.x_test[:5]), detector.score(data.x_test[:5].astype(np.float32) / 255)
    )


def test_a_threshold_cached_under_other_numerics_is_taken_again(run_dir, tmp_path, monkeypatch):
    """Scores from other kernels (oneDNN on / off, another TensorFlow or device) differ in
    their last bits, so a threshold cached under them is not reused."""
    import shutil

    import atom_tf.evaluation.detector as detector_module
    from atom_tf.files import digest_of

    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    record_path = os.path.join(run, "threshold_kplus1.json")
    here = atom_tf.load_detector(str(run)).threshold
    with open(record_path) as f:
        record = json.load(f)
    record["payload"]["threshold"] = 1e9  # a planted value: reused only while the key holds
    record["sha256"] = digest_of(record["payload"])
    with open(record_path, "w") as f:
        json.dump(record, f)
    assert atom_tf.load_detector(str(run)).threshold == 1e9
    real = detector_module.numerics
    monkeypatch.setattr(detector_module, "numerics", lambda: real() + ", other kernels")
    assert atom_tf.load_detector(str(run)).threshold == here


def context(detector, attack=QUICK):
    return ThreatContext(detector.logits, detector.scorer, detector.num_classes, attack, detector.score,
                         batch_size=64, verbose=False)  # fmt: skip


def test_linf_threat_lowers_the_margin_and_never_worsens_the_objective(run_dir):
    import tensorflow as tf

    detector = atom_tf.load_detector(run_dir)
    images = load_ood_set("textures", max_images=64).astype(np.float32) / 255
    attacked = get_threat("linf")(images, context(detector))
    assert (
        np.abs(attacked - images).max() <= 8 / 255 + 1e-6
        and attacked.min() >= 0
        and attacked.max() <= 1
    )
    assert detector.score(attacked).mean() > detector.score(images).mean()  # more in-distribution
    objective = detector.scorer.attack_objective(10)
    clean = objective(detector.logits(tf.constant(images))).numpy()
    adv = objective(detector.logits(tf.constant(attacked))).numpy()
    assert np.all(adv >= clean - 1e-5)
    longer = get_threat("linf")(
        images, context(detector, AttackSettings(steps=15, step_size=2 / 255))
    )
    assert objective(detector.logits(tf.constant(longer))).numpy().mean() >= adv.mean() - 1e-6
    assert np.array_equal(get_threat("natural")(images, context(detector)), images)


def test_evaluate_is_resumable_and_reports(run_dir, tmp_path, capsys):
    settings = EvalSettings(ood_sets=("faces", "uniform_noise"), attack=QUICK, max_ood_images=40)
    results = evaluate(run_dir, str(tmp_path), settings)
    assert set(results["ood"]) == {"faces", "uniform_noise"}
    for per_threat in results["ood"].values():
        for m in per_threat.values():
            assert 0 <= m["fpr95"] <= 100 and 0 <= m["auroc"] <= 100
    assert results["in_distribution"]["tpr"] == pytest.approx(95, abs=1)
    saved = np.load(tmp_path / "scores" / "faces__linf.npz")["scores"]
    # a second run loads every score instead of recomputing it
    again = evaluate(run_dir, str(tmp_path), settings)
    assert capsys.readouterr().out.count("not recomputed") == 4
    assert again["ood"] == results["ood"]
    assert np.array_equal(np.load(tmp_path / "scores" / "faces__linf.npz")["scores"], saved)
    write_reports(results, str(tmp_path), str(tmp_path / "tb"))
    for name in (
        "results.json",
        "results.csv",
        "results.md",
        "scores_natural.png",
        "scores_linf.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert (
        "| faces | 40 |" in table and "| uniform_noise | 40 |" in table and "**average**" in table
    )
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["attack"]["steps"] == 5
    # other attack settings in the same folder are refused
    from atom_tf.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="--overwrite"):
        evaluate(
            run_dir,
            str(tmp_path),
            EvalSettings(ood_sets=("faces",), attack=AttackSettings(steps=7)),
        )


def test_bin_evaluate_prints_the_table_and_fails_cleanly(run_dir, tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "bin", "evaluate.py"), f"--checkpoint={run_dir}",
           "--ood_sets=gaussian_noise", "--max_ood_images=20", "--attack_steps=2", f"--results_dir={tmp_path}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| gaussian_noise |" in result.stdout and (tmp_path / "results.csv").exists()
    bad = subprocess.run(
        [*cmd[:2], f"--checkpoint={tmp_path / 'none'}"], capture_output=True, text=True, timeout=600
    )
    assert (
        bad.returncode == 2 and "not a training run" in bad.stderr and "Traceback" not in bad.stderr
    )
    bad = subprocess.run(
        [*cmd, "--threats=natural,blur", "--overwrite"], capture_output=True, text=True, timeout=600
    )
    assert bad.returncode == 2 and "unknown threat model" in bad.stderr


def test_corruption_threat_in_the_evaluation_reports_winners(run_dir, tmp_path):
    from atom_tf.evaluation.reports import markdown_table

    attack = AttackSettings(steps=2, corruptions="common")
    settings = EvalSettings(
        ood_sets=("faces",), threats=("natural", "corruption"), attack=attack, max_ood_images=16
    )
    results = evaluate(run_dir, str(tmp_path), settings, verbose=False)
    counts = results["corruption_winners"]["faces"]["corruption"]
    assert sum(counts.values()) == 16
    assert (
        results["ood"]["faces"]["corruption"]["auroc"]
        <= results["ood"]["faces"]["natural"]["auroc"] + 1e-9
    )
    assert "Which corruption fooled the detector most" in markdown_table(results)
    alone = results["corruption_types"]["faces"]  # each corruption alone is weaker than all
    assert len(alone) == 15 and all(
        m["auroc"] >= results["ood"]["faces"]["corruption"]["auroc"] - 1e-9 for m in alone.values()
    )
    worst = min(alone, key=lambda n: (-alone[n]["fpr95"], alone[n]["auroc"]))
    assert f"| {worst} | {alone[worst]['fpr95']:.2f} / " in markdown_table(results)
    again = evaluate(run_dir, str(tmp_path), settings, verbose=False)  # winners reloaded from disk
    assert again["corruption_winners"] == results["corruption_winners"]
    assert again["corruption_types"] == results["corruption_types"]


@pytest.mark.parametrize("damage", ["other_layers", "garbage"])
@pytest.mark.parametrize("recorded", [True, False])
def test_weights_that_do_not_fit_the_model_fail_in_one_line(run_dir, tmp_path, damage, recorded):
    """With the SHA-256 that training recorded, changed weights are refused before they are
    read; without it (a run written before digests), a file that does not fit is named."""
    import shutil

    from atom_tf.errors import UserError
    from atom_tf.models import build_model

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = copy / "network.weights.h5"
    if not recorded:
        summary = json.loads((copy / "summary.json").read_text())
        del summary["weights_sha256"]
        (copy / "summary.json").write_text(json.dumps(summary))
    if damage == "garbage":
        weights.write_bytes(b"not an HDF5 file")
    else:  # e.g. a run written by an atom_tf whose layers differ
        build_model("wrn_40_2", 11).save_weights(str(weights))
    message = "is damaged: its SHA-256" if recorded else "does not fit the small_cnn"
    with pytest.raises(UserError, match=message):
        atom_tf.load_detector(str(copy))


def test_detector_checks_what_it_is_given(run_dir):
    from atom_tf.data import load_in_distribution
    from atom_tf.data.image_files import resize_short_side_center_crop
    from atom_tf.errors import InvalidInputError

    detector = atom_tf.load_detector(run_dir)
    images = load_in_distribution("digits").x_test[:6]
    cases = {
        "divide by 255": images.astype(np.float32),  # 0..255 floats were all accepted
        "must be 32x32; got 28x28": images[:, :28, :28],
        "pass images\\[None\\]": images[0],
        "grey images: np.repeat": images[..., :1],
        "uint8 \\(0-255\\) or float": images.astype(np.int64),
        "NaN or infinite": np.full((2, 32, 32, 3), np.nan, np.float32),
    }
    for message, bad in cases.items():
        with pytest.raises(InvalidInputError, match=message):
            detector.predict(bad)
    big = np.stack([cv2_resize(i) for i in images])  # 64 x 64
    accepted, labels = detector.predict(big, resize=True)
    manual = np.stack([resize_short_side_center_crop(i, 32) for i in big])
    assert np.array_equal(detector.score(big, resize=True), detector.score(manual))
    assert labels.dtype == np.int64 and accepted.dtype == bool
    accepted, labels = detector.predict(np.zeros((0, 32, 32, 3), np.uint8))
    assert accepted.shape == labels.shape == (0,) and labels.dtype == np.int64


def cv2_resize(image):
    import cv2

    return cv2.resize(image, (64, 64), interpolation=cv2.INTER_NEAREST)


def test_attack_and_evaluation_settings_are_checked():
    from atom_tf.errors import InvalidConfigError

    for bad in (dict(epsilon=-0.1), dict(steps=-3), dict(step_size=0.0), dict(restarts=0)):
        with pytest.raises(InvalidConfigError, match="attack settings need"):
            AttackSettings(**bad)
    with pytest.raises(InvalidConfigError, match="--max_ood_images must be positive"):
        EvalSettings(ood_sets=("faces",), max_ood_images=-5)
    with pytest.raises(InvalidConfigError, match="--max_in_images must be positive"):
        EvalSettings(ood_sets=("faces",), max_in_images=-5)
    with pytest.raises(InvalidConfigError, match="--near_ood_sets names mnist, not among"):
        EvalSettings(ood_sets=("faces",), near_ood_sets=("mnist",))
    with pytest.raises(InvalidConfigError, match="unknown --end_to_end_attack 'fgsm'"):
        EvalSettings(ood_sets=("faces",), end_to_end_attack="fgsm")


def test_the_ensemble_and_the_robustness_checks_end_to_end(run_dir, tmp_path, capsys):
    """`--attack=ensemble`: never below PGD's FPR95 on any set, its winners in results and the
    report; `--robustness_checks`: the ε-curve, the steps and Square's share in results.json,
    results.md and epsilon_curve.png, reused on a rerun."""
    sets = ("letters",)
    pgd = evaluate(run_dir, str(tmp_path / "pgd"),
                   EvalSettings(ood_sets=sets, threats=("linf",), attack=QUICK, max_ood_images=16),
                   verbose=False)  # fmt: skip
    ensemble_attack = AttackSettings(steps=5, step_size=2 / 255, attack="ensemble", queries=40)
    settings = EvalSettings(ood_sets=sets, threats=("linf",), attack=ensemble_attack,
                            max_ood_images=16, robustness_checks=True, robustness_images=8)  # fmt: skip
    results = evaluate(run_dir, str(tmp_path / "ens"), settings, verbose=False)
    for label in sets:
        assert results["ood"][label]["linf"]["fpr95"] >= pgd["ood"][label]["linf"]["fpr95"]
        shares = results["attack_winners"][label]["linf"]
        assert sum(shares.values()) == pytest.approx(100) and set(shares) >= {"clean", "square"}
    [checks] = results["robustness_checks"]  # the first set's only, OOD side only
    assert checks["set"] == "letters" and checks["side"] == "ood" and checks["images"] == 8
    assert set(checks["epsilon"]) == {"1", "2", "4", "8", "16", "32", "64"}
    write_reports(results, str(tmp_path / "ens"), None, plots=True)
    markdown = (tmp_path / "ens" / "results.md").read_text()
    assert "Which attack of the ensemble won" in markdown and "Gradient-masking checks" in markdown
    assert (tmp_path / "ens" / "epsilon_curve.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "ens" / "robustness_checks.json").read_text())
    capsys.readouterr()
    again = evaluate(run_dir, str(tmp_path / "ens"), settings)
    assert again["robustness_checks"] == [saved["entries"]["ood:letters"]["checks"]]  # reused
    assert "robustness checks:" not in capsys.readouterr().out
    write_reports(again, str(tmp_path / "ens"), None)  # read back with sorted keys: in order
    markdown = (tmp_path / "ens" / "results.md").read_text()
    assert "| ε (/255) | 0 (clean) | 1 | 2 | 4 | 8 | 16 | 32 | 64 |" in markdown
    assert "| steps | 40 | 100 | 200 |" in markdown
    # a file of the first version (one set's checks at its top level) is reused too
    legacy = saved["entries"]["ood:letters"]
    legacy["checks"].pop("side")
    (tmp_path / "ens" / "robustness_checks.json").write_text(json.dumps(legacy))
    assert evaluate(run_dir, str(tmp_path / "ens"), settings)["robustness_checks"] == [checks]
    assert "robustness checks:" not in capsys.readouterr().out


def test_the_robustness_checks_of_every_named_set_and_of_the_in_distribution_side(
    run_dir, tmp_path, capsys
):
    """`--robustness_sets` names the OOD sets checked; with an end-to-end threat that attacks
    in-distribution images, those are checked too (their rejected share, AUROC against the
    first checked set's clean scores); each entry reused on its own; one line for a set
    that is not evaluated."""
    sets = ("letters", "uniform_noise")
    settings = EvalSettings(ood_sets=sets, threats=("natural", "linf_in"), attack=QUICK,
                            max_ood_images=12, max_in_images=10, robustness_checks=True,
                            robustness_images=6, robustness_sets=("uniform_noise", "letters"))  # fmt: skip
    results = evaluate(run_dir, str(tmp_path / "e2e"), settings, verbose=True)
    out = capsys.readouterr().out
    entries = results["robustness_checks"]
    assert [(c["side"], c["set"]) for c in entries] == [
        ("ood", "uniform_noise"),
        ("ood", "letters"),
        ("in", "in_distribution"),
    ]
    assert out.count("robustness checks:") == 3
    inside = entries[2]
    assert inside["images"] == 6 and set(inside["clean"]) == {"rejected", "auroc"}
    scores = tmp_path / "e2e" / "scores"
    in_scores = np.load(scores / "in_distribution.npz")["scores"]
    first_six = in_scores[np.load(scores / "in_distribution__linf_in.npz")["indices"][:6]]
    noise = np.load(scores / "uniform_noise__natural.npz")["scores"]  # the first set checked
    assert inside["clean"] == {  # the first six of the attacked subset, clean
        "rejected": pytest.approx(100 * np.mean(first_six < threshold_at_tpr(in_scores))),
        "auroc": pytest.approx(100 * auroc(first_six, noise)),
    }
    write_reports(results, str(tmp_path / "e2e"), None, plots=True)
    markdown = (tmp_path / "e2e" / "results.md").read_text()
    assert markdown.count("Gradient-masking checks") == 3
    assert "in-distribution images attacked towards OOD; rejected (%) / AUROC" in markdown
    assert (tmp_path / "e2e" / "epsilon_curve.png").stat().st_size > 1000
    # only the first set is checked without --robustness_sets: its entry is reused, and the
    # in-distribution side's AUROC now reads the first set's scores, so that side is redone
    fewer = dataclasses.replace(settings, robustness_sets=())
    again = evaluate(run_dir, str(tmp_path / "e2e"), fewer, verbose=True)
    assert [c["set"] for c in again["robustness_checks"]] == ["letters", "in_distribution"]
    assert again["robustness_checks"][0] == entries[1]
    assert capsys.readouterr().out.count("robustness checks:") == 1
    with pytest.raises(InvalidConfigError, match="--robustness_sets names mnist, not among"):
        EvalSettings(ood_sets=sets, robustness_sets=("mnist",))


def test_the_end_to_end_threats_leave_every_existing_number_and_share_their_scores(
    run_dir, tmp_path, capsys
):
    """linf_in / linf_out / linf_both (docs/protocol.md §10) beside natural and linf: those two
    bit-identical to an evaluation without them; linf_out = linf under the same attack; the
    in-distribution subset drawn with the seed, attacked once, rejected more at the clean
    threshold; the near / far averages; every score reused on a rerun."""
    from atom_tf.evaluation.runner import in_distribution_subset

    sets = ("letters", "uniform_noise")
    plain = evaluate(run_dir, str(tmp_path / "plain"),
                     EvalSettings(ood_sets=sets, attack=QUICK, max_ood_images=16), verbose=False)  # fmt: skip
    threats = ("natural", "linf", "linf_in", "linf_out", "linf_both")
    settings = EvalSettings(ood_sets=sets, threats=threats, attack=QUICK, max_ood_images=16,
                            max_in_images=24, near_ood_sets=("letters",))  # fmt: skip
    out = str(tmp_path / "e2e")
    results = evaluate(run_dir, out, settings, verbose=False)
    assert results["threshold"] == plain["threshold"]
    for label in sets:
        got, before = results["ood"][label], plain["ood"][label]
        assert got["natural"] == before["natural"] and got["linf"] == before["linf"]
        assert {k: got["linf_out"][k] for k in before["linf"]} == before["linf"]
        # linf_in shows the OOD images clean: at the clean threshold its FPR95 is natural's
        assert got["linf_in"]["fpr95_clean_threshold"] == before["natural"]["fpr95"]
        assert got["linf_both"]["fpr95_clean_threshold"] == got["linf_out"]["fpr95"]
        assert got["linf_both"]["auroc"] <= got["linf_out"]["auroc"]
        assert got["linf_in"]["in_images"] == 24
    assert not (tmp_path / "e2e" / "scores" / "letters__linf_in.npz").exists()  # shared, not copied
    saved = np.load(tmp_path / "e2e" / "scores" / "in_distribution__linf_in.npz")
    indices = saved["indices"]
    assert list(indices) == list(in_distribution_subset(360, 24, 0)) and len(set(indices)) == 24
    assert list(in_distribution_subset(360, 24, 1)) != list(indices)
    attacked = results["in_distribution"]["attacked"]
    assert attacked["images"] == 24 and attacked["rejected"] > attacked["rejected_clean"]
    assert attacked["mean_score"] < attacked["mean_score_clean"]
    assert attacked["rejected"] == results["ood"]["letters"]["linf_in"]["in_rejected"]
    assert results["groups"] == {"near": ["letters"], "far": ["uniform_noise"]}
    assert results["average_by_group"]["near"]["linf_both"] == {
        k: v for k, v in results["ood"]["letters"]["linf_both"].items() if k != "images"}  # fmt: skip
    write_reports(results, out, None, plots=True)
    markdown = (tmp_path / "e2e" / "results.md").read_text()
    assert "AUROC In+Out" in markdown and "near: letters" in markdown
    assert (tmp_path / "e2e" / "scores_linf_in.png").stat().st_size > 1000
    seconds = results["seconds"]  # measured once per side, kept with the scores
    assert set(seconds) == {"in_distribution", *sets} and seconds["in_distribution"]["linf_in"] > 0
    assert all(set(seconds[label]) == {"natural", "linf", "linf_out"} for label in sets)
    capsys.readouterr()
    again = evaluate(run_dir, out, settings)
    assert again["ood"] == results["ood"] and again["seconds"] == seconds
    # 2 sets x 3 OOD sides (natural, linf, linf_out) + the attacked in-distribution subset
    assert capsys.readouterr().out.count("not recomputed") == 7
    # another end-to-end attack changes linf_out, never linf; in the same folder
    apgd = evaluate(run_dir, out, EvalSettings(**{**settings.__dict__, "end_to_end_attack": "apgd"}),
                    verbose=False)  # fmt: skip
    assert apgd["ood"]["letters"]["linf"] == results["ood"]["letters"]["linf"]
    assert apgd["settings"]["end_to_end_attack"] == "apgd"
    assert apgd["in_distribution"]["attacked"]["attack"] == "apgd"


@pytest.mark.parametrize("scorer", ["kplus1", "energy"])
def test_the_ensembles_early_stop_changes_no_metric(run_dir, tmp_path, scorer):
    """The end-to-end threats under the ensemble with and without --ensemble_early_stop: FPR95
    (at both thresholds), AUROC and the rejected share the same (the images it stops attacking
    can change none of them; AUPR can move through ties, so it is left out where an image settled
    early), the attacks' cost per
    member reported; energy scores are unbounded, so there some images settle early and fewer
    are attacked (kplus1's saturate below every clean in-distribution score: none do)."""
    sets = ("letters", "uniform_noise")
    attack = AttackSettings(steps=5, step_size=2 / 255, attack="ensemble", queries=30)
    settings = EvalSettings(ood_sets=sets, threats=("natural", "linf_in", "linf_out", "linf_both"),
                            attack=attack, max_ood_images=16, max_in_images=24, scorer=scorer)  # fmt: skip
    stopped = evaluate(run_dir, str(tmp_path / "stop"), settings, verbose=False)
    full_settings = EvalSettings(**{**settings.__dict__,
                                    "attack": AttackSettings(**{**attack.__dict__, "early_stop": False})})  # fmt: skip
    full = evaluate(run_dir, str(tmp_path / "full"), full_settings, verbose=False)
    settled = []
    for label in sets:
        for threat in settings.threats:
            got, expected = stopped["ood"][label][threat], full["ood"][label][threat]
            if "settled_early" not in got:  # every image saw every member: AUPR too is the same
                assert got == pytest.approx(expected), (label, threat)
                continue
            settled.append(got.pop("settled_early"))  # AUPR left out, everything else exact
            assert set(expected) - set(got) == {"aupr_in", "aupr_out"}, (label, threat)
            assert got == pytest.approx({k: expected[k] for k in got}), (label, threat)
    assert all(n > 0 for n in settled) and bool(settled) == (scorer == "energy")
    for threat in settings.threats:  # an average has AUPR only where every set has it
        every = all("aupr_in" in stopped["ood"][label][threat] for label in sets)
        assert ("aupr_in" in stopped["average"][threat]) == every, threat
    attacked = [
        stopped["in_distribution"]["attacked"]["attack_cost"],
        *(stopped["attack_cost"][label]["linf_out"] for label in sets),
    ]
    unstopped = [full["in_distribution"]["attacked"]["attack_cost"],
                 *(full["attack_cost"][label]["linf_out"] for label in sets)]  # fmt: skip
    for cost, every in zip(attacked, unstopped, strict=True):
        assert cost["pgd"]["images"] == every["pgd"]["images"] in (16, 24)
        assert all(cost[m]["images"] <= every[m]["images"] for m in cost)
    write_reports(stopped, str(tmp_path / "stop"), None, plots=False)
    assert "What each attack of the ensemble cost" in (tmp_path / "stop" / "results.md").read_text()
    if scorer == "energy":
        square = [sum(c["square"]["images"] for c in costs) for costs in (attacked, unstopped)]
        assert square[0] < square[1]
