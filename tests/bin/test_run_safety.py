"""No silent wrong numbers, no code from a run folder, no stack traces (issue 19): each case
reproduces what a new or a hostile user did to a run folder, an OOD folder or the flags."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import atom_tf
from atom_tf.errors import UserError
from atom_tf.evaluation.runner import EvalSettings, evaluate
from atom_tf.files import sha256_of_file
from atom_tf.training.trainer import TrainConfig, train
from tests.conftest import REPO
from tests.helpers import h5_arrays

FAST = dict(dataset="digits", model="small_cnn", method="ntom", epochs=2, num_candidates=512,
            num_selected=256, lr_decay_epochs=(1,), jit_compile=False, seed=3)  # fmt: skip
TRAIN_FLAGS = ["--dataset=digits", "--model=small_cnn", "--method=ntom", "--epochs=2",
               "--num_candidates=512", "--num_selected=256", "--lr_decay_epochs=1",
               "--jit_compile=false", "--seed=3", "--verbose=0"]  # fmt: skip
NATURAL = EvalSettings(ood_sets=("letters",), threats=("natural",), max_ood_images=60)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(TrainConfig(**FAST), str(path), verbose=0)
    return str(path)


def copy_run(run_dir: str, dest) -> str:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("logs", ".lock"))
    return str(dest)


def unfinished_copy(run_dir: str, dest) -> str:
    """The run as it was when killed during its second epoch: one checkpoint, no summary."""
    path = copy_run(run_dir, dest)
    for name in ("summary.json", "network.weights.h5"):
        os.remove(os.path.join(path, name))
    shutil.rmtree(os.path.join(path, "checkpoints", "epoch_0001"))
    weights = os.path.join(path, "checkpoints", "epoch_0000", "model.weights.h5")
    with open(os.path.join(path, "checkpoints", "latest"), "w") as f:
        json.dump({"epoch": 0, "model_sha256": sha256_of_file(weights)}, f)
    return path


def numbers(results: dict) -> dict:
    return {k: results[k] for k in ("threshold", "in_distribution", "ood")}


def run_entry(entry: str, cases: list[list[str]], tmp_path, workers: int = 1) -> list[dict]:
    """Each command line of `cases` through the entry point, in `workers` processes (each
    taking an equal share, in order), tf.functions run eagerly (tiny inputs)."""
    driver = os.path.join(REPO, "tests", "entry_driver.py")
    shares = [cases[i::workers] for i in range(workers)]
    procs, outs = [], []
    for i, share in enumerate(shares):
        cases_path, out_path = tmp_path / f"cases{i}.json", tmp_path / f"out{i}.json"
        cases_path.write_text(json.dumps(share))
        command = [
            sys.executable,
            driver,
            os.path.join(REPO, entry),
            str(cases_path),
            str(out_path),
        ]
        env = {**os.environ, "ENTRY_DRIVER_EAGER": "1"}
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL))
        outs.append(out_path)
    for proc in procs:
        assert proc.wait(timeout=900) == 0
    results = [json.loads(out.read_text()) for out in outs]
    return [results[i % workers][i // workers] for i in range(len(cases))]


def assert_one_error_line(result: dict, needle: str) -> None:
    assert result["traceback"] == "", result["traceback"]
    lines = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert result["code"] == 2 and len(lines) == 1, result["stderr"][-1500:]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result["stderr"]


def test_an_unfinished_run_is_marked_and_its_caches_die_with_its_weights(run_dir, tmp_path, capsys):
    """Evaluate a run killed in epoch 2, finish it, evaluate again: the second evaluation must
    not reuse the first one's threshold or scores (it did, with exit 0). Restoring the
    unfinished run must not touch the optimizer (it crashed on a learning-rate schedule)."""
    partial = unfinished_copy(run_dir, tmp_path / "run")
    results_dir = str(tmp_path / "eval")
    early = evaluate(partial, results_dir, NATURAL)
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first.startswith(f"note: {partial} has not finished training") and "epoch 1 of 2" in first
    )
    assert early["run"]["finished"] is False and early["run"]["epochs_done"] == 1
    with pytest.warns(UserWarning, match="has not finished training"):
        atom_tf.load_detector(partial)
    for name in ("summary.json", "network.weights.h5", "checkpoints"):  # training finishes
        source, target = os.path.join(run_dir, name), os.path.join(partial, name)
        if os.path.isdir(source):
            shutil.rmtree(target)
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    late = evaluate(partial, results_dir, NATURAL, verbose=False)
    fresh = evaluate(copy_run(run_dir, tmp_path / "intact"), str(tmp_path / "fresh"), NATURAL,
                     verbose=False)  # fmt: skip
    assert late["run"]["finished"] is True
    assert numbers(late) == numbers(fresh)
    assert numbers(early) != numbers(late)  # the case is real: the numbers moved


def write_images(folder, images: np.ndarray) -> None:
    import cv2

    os.makedirs(folder)
    for i, image in enumerate(images):
        cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), image[..., ::-1])


def test_ood_folders_of_one_name_are_told_apart_and_never_scored_from_another(run_dir, tmp_path):
    from atom_tf.data.ood_sets import load_ood_set

    a, b = tmp_path / "x" / "a" / "set", tmp_path / "x" / "b" / "set"
    write_images(a, load_ood_set("letters", max_images=20))
    write_images(b, load_ood_set("uniform_noise", max_images=40))
    specs = {"a": f"images:{a}", "b": f"images:{b}"}
    alone = {k: evaluate(run_dir, str(tmp_path / f"alone_{k}"),
                         EvalSettings(ood_sets=(s,), threats=("natural",)), verbose=False)["ood"]["set"]
             for k, s in specs.items()}  # fmt: skip
    assert alone["a"] != alone["b"]
    both = evaluate(run_dir, str(tmp_path / "both"),
                    EvalSettings(ood_sets=tuple(specs.values()), threats=("natural",)), verbose=False)  # fmt: skip
    assert both["ood"] == {"a/set": alone["a"], "b/set": alone["b"]}
    # another folder of the same name, later, into a results folder that scored the first one
    later = evaluate(run_dir, str(tmp_path / "alone_a"),
                     EvalSettings(ood_sets=(specs["b"],), threats=("natural",)), verbose=False)  # fmt: skip
    assert later["ood"]["set"] == alone["b"]


class RunsCode:
    """A pickle that would create `marker` if anything unpickled it unrestricted."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("scorer", ["odin", "mahalanobis"])
def test_a_run_folder_never_runs_code_it_holds(run_dir, tmp_path, scorer):
    run = copy_run(run_dir, tmp_path / "run")
    os.makedirs(os.path.join(run, "pool"))
    marker = tmp_path / "it_ran"
    with open(os.path.join(run, "pool", "train_data_batch_1"), "wb") as f:
        pickle.dump({"data": RunsCode(str(marker)), "labels": [0]}, f)
    config_path = os.path.join(run, "config.json")
    config = json.loads(Path(config_path).read_text())
    config.update(pool="imagenet_rc", pool_path=os.path.join(run, "pool"))
    with open(config_path, "w") as f:
        json.dump(config, f)
    with pytest.raises(UserError, match=r"asks to call posix\.system.*nothing in it was run"):
        atom_tf.load_detector(run, scorer=scorer)
    assert not marker.exists()


def evaluate_flags(run: str, *extra: str) -> list[str]:
    return [f"--checkpoint={run}", "--ood_sets=letters", "--max_ood_images=40",
            "--threats=natural", "--plots=false", "--batch_size=64", *extra]  # fmt: skip


def test_user_mistakes_and_damaged_run_files_end_in_one_error_line(run_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    runs = {}

    def damaged(name: str, edit) -> str:
        runs[name] = path = copy_run(run_dir, tmp_path / name)
        edit(path)
        return path

    def rewrite(relative: str, text: str):
        return lambda path: Path(os.path.join(path, relative)).write_text(text)

    def drop_key(path):
        config = json.loads(Path(os.path.join(path, "config.json")).read_text())
        del config["model"]
        Path(os.path.join(path, "config.json")).write_text(json.dumps(config))

    def truncate(relative: str):
        def edit(path):
            with open(os.path.join(path, relative), "r+b") as f:
                f.truncate(os.path.getsize(os.path.join(path, relative)) // 2)

        return edit

    unfinished = unfinished_copy(run_dir, tmp_path / "unfinished")
    truncate("checkpoints/latest")(unfinished)
    # fmt: off
    cases = [
        (evaluate_flags(run_dir, f"--results_dir={afile}"), "is a file"),
        (evaluate_flags(run_dir, "--max_ood_images=-5"), "--max_ood_images must be positive"),
        (evaluate_flags(run_dir, "--attack_epsilon=-0.5", "--threats=linf",
                        f"--results_dir={tmp_path / 'e1'}"), "--attack_epsilon >= 0"),
        (evaluate_flags(run_dir, "--attack_step_size=0", f"--results_dir={tmp_path / 'e2'}"),
         "--attack_step_size > 0"),
        (evaluate_flags(damaged("bad_json", rewrite("config.json", "{not json"))),
         "config.json cannot be read"),
        (evaluate_flags(damaged("no_key", drop_key)), "config.json lacks 'model'"),
        (evaluate_flags(damaged("summary", truncate("summary.json"))), "summary.json cannot be read"),
        (evaluate_flags(unfinished), "latest cannot be read"),
        (evaluate_flags(str(tmp_path / "nothing_here")), "is not a training run folder"),
    ]
    # fmt: on
    results = run_entry("bin/evaluate.py", [argv for argv, _ in cases], tmp_path)
    for (_, needle), result in zip(cases, results, strict=True):
        assert_one_error_line(result, needle)


def test_a_damaged_threshold_is_recomputed_not_trusted(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    intact = run_entry("bin/evaluate.py", [evaluate_flags(run)], tmp_path)[0]
    assert intact["code"] == 0, intact["stderr"][-1500:] + intact["traceback"]
    expected = json.loads(Path(os.path.join(run, "eval_kplus1", "results.json")).read_text())
    path = os.path.join(run, "threshold_kplus1.json")
    with open(path, "r+b") as f:
        f.truncate(20)
    again = run_entry("bin/evaluate.py", [evaluate_flags(run)], tmp_path)[0]
    assert again["code"] == 0 and again["traceback"] == ""
    assert f"note: {path} cannot be read" in again["stderr"]
    got = json.loads(Path(os.path.join(run, "eval_kplus1", "results.json")).read_text())
    assert numbers(got) == numbers(expected)
    assert json.loads(Path(path).read_text())["payload"]["threshold"] == expected["threshold"]


def test_training_refuses_bad_folders_settings_and_damaged_checkpoints(run_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    unfinished = unfinished_copy(run_dir, tmp_path / "unfinished")
    no_optimizer = unfinished_copy(run_dir, tmp_path / "no_optimizer")
    with open(os.path.join(no_optimizer, "checkpoints", "epoch_0000", "optimizer.npz"), "r+b") as f:
        f.truncate(100)
    with open(os.path.join(unfinished, "checkpoints", "latest"), "w") as f:
        f.write('{"epoch": ')
    cases = [
        ([f"--output_dir={afile}"], "is a file"),
        ([f"--output_dir={afile / 'run'}"], "a file is in the way"),
        (["--output_dir=/proc/atom_tf_run"], "--output_dir: cannot write to /proc/atom_tf_run"),
        (["--output_dir=/sys/atom_tf_run"], "--output_dir: cannot write to /sys/atom_tf_run"),
        ([f"--output_dir={tmp_path / 'r1'}", "--epsilon=-0.1"], "--epsilon must be >= 0"),
        ([f"--output_dir={tmp_path / 'r2'}", "--attack_steps=-3"], "--attack_steps must be >= 0"),
        ([f"--output_dir={tmp_path / 'r3'}", "--attack_step_size=0"], "--attack_step_size must be positive"),
        ([f"--output_dir={no_optimizer}"], "optimizer.npz cannot be read"),
        ([f"--output_dir={unfinished}"], "latest cannot be read"),
    ]  # fmt: skip
    results = run_entry("bin/train.py", [[*TRAIN_FLAGS, *argv] for argv, _ in cases], tmp_path)
    for (_, needle), result in zip(cases, results, strict=True):
        assert_one_error_line(result, needle)


def test_a_damaged_summary_is_written_again_by_the_training_command(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    with open(os.path.join(run, "summary.json"), "w") as f:
        f.write('{"test_accuracy": 0.9')
    result = run_entry("bin/train.py", [[*TRAIN_FLAGS, f"--output_dir={run}"]], tmp_path)[0]
    assert result["code"] == 0, result["stderr"][-1500:] + result["traceback"]
    assert "summary.json cannot be read" in result["stdout"]
    summary = json.loads(Path(os.path.join(run, "summary.json")).read_text())
    # HDF5 files of the same weights differ byte for byte from one save to the next: the
    # summary records the file written now, and that file holds the original run's weights
    weights = os.path.join(run, "network.weights.h5")
    assert summary["weights_sha256"] == sha256_of_file(weights)
    original = h5_arrays(os.path.join(run_dir, "network.weights.h5"))
    rewritten = h5_arrays(weights)
    assert original.keys() == rewritten.keys() and len(original) > 4
    assert all(np.array_equal(original[k], rewritten[k]) for k in original)


def read_only(path: str, command: list[str]) -> list[str]:
    """`command` run with `path` mounted read-only (a user namespace of its own)."""
    script = (f'mount --bind "{path}" "{path}" && mount -o remount,bind,ro "{path}" && '
              'exec "$@"')  # fmt: skip
    return ["unshare", "-rm", "sh", "-c", script, "sh", *command]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_read_only_run_is_evaluated_into_its_results_folder(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    for name in os.listdir(run):  # nothing cached in the run: the threshold must be made
        if name.startswith("threshold_"):
            os.remove(os.path.join(run, name))
    before = sorted(os.listdir(run))
    evaluate_py = [sys.executable, os.path.join(REPO, "bin", "evaluate.py")]
    inside = subprocess.run(read_only(run, [*evaluate_py, *evaluate_flags(run)]),
                            capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert_one_error_line({"code": inside.returncode, "stderr": inside.stderr, "traceback": ""},
                          "pass --results_dir=DIR outside it")  # fmt: skip
    out = tmp_path / "out"
    outside = subprocess.run(read_only(run, [*evaluate_py, *evaluate_flags(run), f"--results_dir={out}"]),
                             capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert outside.returncode == 0, outside.stderr[-2000:]
    assert sorted(os.listdir(run)) == before
    assert (out / "threshold_kplus1.json").exists() and (out / "results.json").exists()
    assert (out / "logs").is_dir()


DIFFERENT_TYPES = ["x", 7, True, None, [], {}]


def json_paths(value, prefix=()):
    """Every place in a JSON value: key or index paths."""
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, child in items:
        yield (*prefix, key)
        yield from json_paths(child, (*prefix, key))


def json_kind(value) -> str:
    return (
        "number"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else type(value).__name__
    )


def mutate(path: str, rng: np.random.Generator) -> str:
    """One random damage to one file: truncate, delete, change a JSON value's type, or flip
    bytes of a binary file. Returns what was done."""
    size = os.path.getsize(path)
    try:
        record = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError):
        record = None
    kinds = ["truncate", "delete"] + (["retype"] if isinstance(record, dict) else []) + (
        ["flip"] if path.endswith((".h5", ".npz")) else [])  # fmt: skip
    kind = kinds[rng.integers(len(kinds))]
    if kind == "delete":
        os.remove(path)
    elif kind == "truncate":
        with open(path, "r+b") as f:
            f.truncate(int(rng.integers(0, max(size, 1))))
    elif kind == "flip":
        data = bytearray(Path(path).read_bytes())
        for offset in rng.integers(0, size, int(rng.integers(1, 9))):
            data[offset] ^= int(rng.integers(1, 256))
        Path(path).write_bytes(bytes(data))
    else:
        places = list(json_paths(record))
        where = places[rng.integers(len(places))]
        parent = record
        for key in where[:-1]:
            parent = parent[key]
        choices = [v for v in DIFFERENT_TYPES if json_kind(v) != json_kind(parent[where[-1]])]
        parent[where[-1]] = choices[rng.integers(len(choices))]
        Path(path).write_text(json.dumps(record))
        kind = f"retype {'/'.join(map(str, where))}"
    return f"{kind} {os.path.basename(path)}"


def test_two_hundred_damaged_run_folders_give_the_same_numbers_or_one_error_line(run_dir, tmp_path):
    base = copy_run(run_dir, tmp_path / "base")
    for name in os.listdir(base):
        if name.startswith(("threshold_", "eval")):
            os.remove(os.path.join(base, name)) if name.endswith(".json") else shutil.rmtree(
                os.path.join(base, name)
            )
    intact = run_entry("bin/evaluate.py", [evaluate_flags(base)], tmp_path)[0]
    assert intact["code"] == 0, intact["stderr"][-1500:] + intact["traceback"]
    expected = numbers(
        json.loads(Path(os.path.join(base, "eval_kplus1", "results.json")).read_text())
    )
    shutil.rmtree(os.path.join(base, "logs"), ignore_errors=True)
    files = sorted(os.path.relpath(os.path.join(root, f), base) for root, _, names in os.walk(base)
                   for f in names if f not in ("results.json", "results.csv", "results.md", ".lock"))  # fmt: skip
    assert {"config.json", "summary.json", "network.weights.h5", "threshold_kplus1.json",
            "checkpoints/latest", "eval_kplus1/settings.json"} <= set(files)  # fmt: skip
    rng = np.random.default_rng(19)
    copies, done = [], []
    for i in range(200):
        copy = copy_run(base, tmp_path / f"m{i:03d}")
        done.append(mutate(os.path.join(copy, files[rng.integers(len(files))]), rng))
        copies.append(copy)
    results = run_entry("bin/evaluate.py", [evaluate_flags(c) for c in copies], tmp_path, workers=2)
    errors = 0
    for copy, what, result in zip(copies, done, results, strict=True):
        assert result["traceback"] == "", f"{what}: {result['traceback']}"
        assert "Traceback" not in result["stderr"], what
        if result["code"] == 0:
            got = json.loads(Path(os.path.join(copy, "eval_kplus1", "results.json")).read_text())
            assert numbers(got) == expected, f"{what}: other numbers with exit 0"
        else:
            lines = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
            assert result["code"] == 2 and len(lines) == 1, f"{what}: {result['stderr'][-800:]}"
            errors += 1
    assert 20 < errors < 180  # both outcomes are exercised


# config.json as the version before settings were declared once (commit bb7cd87) wrote it for
# TRAIN_FLAGS: flat, without the settings added later while they hold their defaults
PREVIOUS_CONFIG = {
    "dataset": "digits", "model": "small_cnn", "method": "ntom", "mining": "",
    "pool": "natural_patches", "pool_path": "", "num_candidates": 512, "num_selected": 256,
    "quantile": 0.0, "epochs": 2, "learning_rate": 0.1, "lr_decay_epochs": [1], "lr_decay": 0.1,
    "momentum": 0.9, "weight_decay": 0.0001, "in_batch": 64, "out_batch": 128,
    "epsilon": 0.03137254901960784, "attack_steps": 5, "attack_step_size": 0.00784313725490196,
    "seed": 3, "data_dir": "", "download": True, "jit_compile": False, "deterministic": False,
}  # fmt: skip


def test_a_run_folder_of_the_previous_version_evaluates_and_resumes(run_dir, tmp_path):
    """Killed in its second epoch under the previous version: it evaluates from its
    checkpoint (the network alone read out of the training model's file, the same weights the
    training model restores) and `bin/train.py` with the same flags finishes it."""
    from atom_tf.evaluation.detector import load_network
    from atom_tf.training.checkpoint import CheckpointManager
    from atom_tf.training.methods import method_for
    from atom_tf.training.train_step import RobustOODModel

    old = unfinished_copy(run_dir, tmp_path / "old")
    Path(old, "config.json").write_text(json.dumps(PREVIOUS_CONFIG, indent=2))
    network, config, data, state = load_network(old)
    assert not state.finished and state.epochs_done == 1
    wrapper = RobustOODModel(load_network(run_dir)[0], method_for(config), data.num_classes)
    wrapper.build((None, 32, 32, 3))
    CheckpointManager(old).restore_model(wrapper)  # the training model's own restore
    images = data.x_test[:16].astype("float32") / 255
    np.testing.assert_array_equal(network(images).numpy(), wrapper.network(images).numpy())
    results = evaluate(old, str(tmp_path / "eval"), NATURAL, verbose=False)
    assert results["run"]["finished"] is False
    result = run_entry("bin/train.py", [[*TRAIN_FLAGS, f"--output_dir={old}"]], tmp_path)[0]
    assert result["code"] == 0, result["stderr"][-1500:] + result["traceback"]
    summary = json.loads(Path(old, "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 2
    assert json.loads(Path(old, "config.json").read_text()) == PREVIOUS_CONFIG
