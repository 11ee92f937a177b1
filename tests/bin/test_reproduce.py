"""bin/reproduce.py end to end on a tiny image-file suite: trains, evaluates under the four
threat models, writes the combined table with the paper's rows; a rerun redoes nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.data.test_image_files import write_image

REPRODUCE = [sys.executable, os.path.join(REPO, "bin", "reproduce.py")]


def run(args):
    return subprocess.run(REPRODUCE + args, capture_output=True, text=True, cwd=REPO, timeout=900)


@pytest.fixture
def tiny_suite(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "cifar10"  # the folder name labels the table: the paper's CIFAR-10 rows
    for split, count in (("train", 32), ("test", 16)):
        for c in range(2):
            for i in range(count):
                image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
                image[:, 16 * c : 16 * c + 16] += 150  # class = the bright half
                write_image(data / split / f"class{c}" / f"{i}.png", image)
    for i in range(30):
        write_image(
            tmp_path / "pool" / f"{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        )
    for i in range(6):
        write_image(
            tmp_path / "unseen" / "n0" / f"{i}.png",
            rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
        )
    train = tmp_path / "train.flags"
    train.write_text("\n".join([
        f"--dataset=images:{data}", "--model=small_cnn", "--method=atom", "--pool=images",
        f"--pool_path={tmp_path / 'pool'}", "--in_batch=16", "--out_batch=16", "--num_selected=64",
        "--num_candidates=128", "--epochs=1", "--lr_decay_epochs=1", "--verbose=2",
        "--jit_compile=false",
    ]))  # fmt: skip
    evaluate = tmp_path / "evaluate.flags"
    evaluate.write_text("\n".join([
        f"--ood_sets=images:{tmp_path / 'unseen'},gaussian_noise",
        "--threats=natural,linf,corruption,compositional", "--max_ood_images=6",
        "--attack_steps=2", "--corruptions=common", "--batch_size=32", "--plots=false",
    ]))  # fmt: skip
    return [f"--train_flagfile={train}", f"--eval_flagfile={evaluate}", "--suite=atom,oe",
            f"--runs_dir={tmp_path / 'runs'}"]  # fmt: skip


@pytest.mark.slow
def test_reproduce_trains_evaluates_and_tabulates_and_a_rerun_redoes_nothing(tmp_path, tiny_suite):
    result = run(tiny_suite)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tmp_path / "runs"
    table = json.loads((runs / "results.json").read_text())
    assert table["dataset"] == "cifar10"
    assert table["threats"] == ["natural", "corruption", "linf", "compositional"]
    assert list(table["rows"]) == ["atom", "oe"]
    assert table["rows"]["oe"]["scorer"] == "msp" and table["rows"]["atom"]["scorer"] == "kplus1"
    assert set(table["rows"]["atom"]["per_set"]) == {"unseen", "gaussian_noise"}
    assert table["published"]["atom"]["linf"] == {"fpr95": 20.55, "auroc": 88.94}
    markdown = (runs / "results.md").read_text()
    assert "| measured | atom |" in markdown and "| paper | atom | 1.69 / 99.20" in markdown
    assert (runs / "fpr95.png").stat().st_size > 1000
    timings = json.loads((runs / "timings.json").read_text())
    assert set(timings) == {"atom", "oe"} and all(
        set(t) == {"train", "evaluate"} for t in timings.values()
    )

    again = run(tiny_suite)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("nothing to train") == 2
    assert again.stdout.count("scores found, not recomputed") == 2 * 2 * 4
    assert json.loads((runs / "timings.json").read_text()) == timings  # no work, no time
    (runs / "results.md").unlink()
    only = run([*tiny_suite, "--tabulate_only"])
    assert only.returncode == 0 and "train:" not in only.stdout
    assert (runs / "results.md").read_text() == markdown
    missing = run([*tiny_suite, "--tabulate_only", "--suite=atom,ntom"])
    assert missing.returncode == 2 and "ntom has no finished evaluation" in missing.stderr
    assert json.loads((runs / "results.json").read_text())["rows"] == table["rows"]


def test_reproduce_mistakes_are_one_line(tmp_path, tiny_suite):
    for args, needle in [
        ([*tiny_suite, "--suite=atom,vos"], "unknown suite entry 'vos'"),
        ([*tiny_suite[1:], f"--train_flagfile={tmp_path / 'none.flags'}"], "no file"),
        ([*tiny_suite, "--pretrained_bases=atom:nope"], "NAME one of cifar10_cpu_atom,"),
    ]:
        result = run(args)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def entry_commands(flags_dir, files: dict[str, str]):
    """The stage commands of an entry, by name, with these entry flag files in `flags_dir`."""
    from atom_tf.reproduce.suite import get_suite_entry
    from atom_tf.reproduce.suite_runner import stage_commands

    for name, text in files.items():
        (flags_dir / f"{name}.flags").write_text(text)
    runs = str(flags_dir / "runs")
    return lambda name: stage_commands(get_suite_entry(name), "t.flags", "e.flags", runs, "bin",
                                       str(flags_dir))  # fmt: skip


def test_entries_sharing_a_run_and_entry_flag_files(tmp_path):
    commands = entry_commands(tmp_path, {"sofl": "--out_batch=320\n", "standard": "--epochs=3\n"})
    runs = str(tmp_path / "runs")
    odin, msp, sofl = commands("odin"), commands("msp"), commands("sofl")
    assert odin["train"] == msp["train"]  # one standard run, trained once
    assert f"--flagfile={tmp_path / 'standard.flags'}" in msp["train"]
    assert f"--output_dir={runs}/standard" in odin["train"]
    assert "--scorer=odin" in odin["evaluate"]
    assert f"--results_dir={runs}/standard/eval_suite_odin" in odin["evaluate"]
    assert f"--results_dir={runs}/standard/eval_suite_msp" in msp["evaluate"]
    assert f"--init_from={runs}/standard" in sofl["train"]  # fine-tunes the suite's run
    position = sofl["train"].index(f"--flagfile={tmp_path / 'sofl.flags'}")
    assert position > sofl["train"].index("--method=sofl")  # entry files come last
    assert not any("atom.flags" in c for c in commands("atom")["train"])  # none: nothing added


def test_a_strength_sweep_reads_its_methods_flag_file_at_its_own_strength(tmp_path):
    from atom_tf.reproduce.suite import get_suite_entry

    commands = entry_commands(tmp_path, {"atom_adv": "--train_attack=fgsm_rs\n",
                                         "aloe": "--epochs=2\n"})  # fmt: skip
    runs = str(tmp_path / "runs")

    def train(name):
        return commands(name)["train"]

    for name, flag, strength in (("atom_trades_beta3", "--trades_beta=3", 3),
                                 ("atom_trades_beta9", "--trades_beta=9", 9),
                                 ("atom_trades_pgd_6epochs_beta9", "--trades_beta=9", 9),
                                 ("atom_trades_pgd_eps12", f"--epsilon={12 / 255!r}", 12),
                                 ("atom_trades_pgd_eps4", f"--attack_step_size={1 / 255!r}", 4),
                                 ("atom_adv_eps2", f"--epsilon={2 / 255!r}", 2),
                                 ("atom_adv", f"--epsilon={8 / 255!r}", 8)):  # fmt: skip
        command = train(name)
        assert f"--init_from={runs}/atom" in command
        # the strength after the method's flag file: no suite's file can change it
        assert command.index(flag) > command.index(f"--flagfile={tmp_path / 'atom_adv.flags'}")
        assert get_suite_entry(name).strength.value == strength
    assert f"--output_dir={runs}/atom_adv_eps2" in train("atom_adv_eps2")  # a run of its own
    aloe, aloe4 = train("aloe"), train("aloe_eps4")
    assert "--attack_steps=2" in aloe and "--attack_steps=2" not in aloe4  # as released at 1/255
    assert f"--epsilon={4 / 255!r}" in aloe4
    assert f"--flagfile={tmp_path / 'aloe.flags'}" in aloe4
    assert get_suite_entry("atom_adv_label").strength is None  # a variant, not a strength


@pytest.mark.parametrize(
    "name",
    [
        "reproduce_cifar10_cpu",
        "reproduce_cifar10_cpu_end_to_end",
        "reproduce_table1_svhn",
        "reproduce_table1_cifar10",
        "reproduce_table1_cifar100",
    ],
)
def test_every_baseline_suite_flagfile_resolves(name):
    result = run([f"--flagfile=configs/{name}.flags", "--dry_run",
                  "--suite=msp,odin,mahalanobis,sofl,oe,acet,ccu,rowl,energy,atom"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count(" train: ") == 10


@pytest.mark.parametrize(
    "name",
    ["reproduce_cifar10_cpu", "reproduce_cifar10_cpu_end_to_end", "reproduce_table1_cifar10"],
)
def test_the_in_distribution_attack_entries_resolve(name):
    result = run([f"--flagfile=configs/{name}.flags", "--dry_run",
                  "--suite=atom,oe,aloe,aoe,aloe_eps8,aoe_eps8,atom_adv,atom_adv_label,"
                  "atom_adv_ood,atom_trades,atom_adv_eps2,aloe_eps4,atom_trades_beta12,"
                  "atom_trades_pgd_6epochs_ema998_bn_share10"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--method=atom_trades" in result.stdout and "--in_objective=ood" in result.stdout
    assert "--ema_momentum=0.998 --reestimate_bn_batches=100 --init_share=0.1" in result.stdout


def test_pretrained_bases_replace_only_the_named_base_runs():
    """--pretrained_bases=atom:cifar10_cpu_atom: fine-tunes of the suite's ATOM run start from
    the shipped one; fine-tunes of other runs (SOFL's standard run) and the rest stay."""
    from atom_tf.reproduce.suite import get_suite_entry, with_pretrained_bases

    bases = {"atom": "cifar10_cpu_atom"}
    trades = with_pretrained_bases(get_suite_entry("atom_trades_pgd_6epochs"), bases)
    assert "--init_from=pretrained:cifar10_cpu_atom" in trades.train_flags
    assert not any("{runs_dir}" in flag for flag in trades.train_flags)
    assert trades.final_flags == get_suite_entry("atom_trades_pgd_6epochs").final_flags
    for name in ("sofl", "aloe", "atom"):  # other bases, or no base at all: unchanged
        assert with_pretrained_bases(get_suite_entry(name), bases) == get_suite_entry(name)


def test_recipes_as_released_and_pgd_entries_win_over_the_suites_training_attack(tmp_path):
    """A suite whose flag files choose FGSM-RS (the CPU suite's atom_adv.flags, read by
    aloe.flags) still trains ALOE at 1/255 with its released 2 PGD steps, and the `_pgd`
    entries with PGD-5: their recipe comes after the files."""
    commands = entry_commands(tmp_path, {
        "atom_adv": "--train_attack=fgsm_rs\n",
        "aloe": f"--flagfile={tmp_path / 'atom_adv.flags'}\n"})  # fmt: skip

    def last(command: list[str], flag: str) -> str:
        return [c for c in command if c.startswith(f"--{flag}=")][-1].split("=", 1)[1]

    def after_file(command: list[str], flag: str, name: str) -> bool:
        return command.index(f"--{flag}={last(command, flag)}") > command.index(
            f"--flagfile={tmp_path / name}")  # fmt: skip

    for name, file, steps in (("aloe", "aloe.flags", "2"), ("aoe", "aoe.flags", "2"),
                              ("atom_adv_pgd", "atom_adv.flags", "5"),
                              ("aloe_eps8_pgd", "aloe.flags", "5"),
                              ("atom_trades_pgd_6epochs", "atom_adv.flags", "5")):  # fmt: skip
        command = commands(name)["train"]
        assert last(command, "train_attack") == "pgd" and last(command, "attack_steps") == steps
        if (tmp_path / file).exists():
            assert after_file(command, "train_attack", file), name
    aloe8 = commands("aloe_eps8")["train"]
    assert not any(c.startswith("--train_attack=") for c in aloe8)  # the suite's own attack
    assert float(last(commands("aloe_eps8_pgd")["train"], "epsilon")) == 8 / 255
    six = commands("atom_trades_pgd_6epochs")["train"]
    assert last(six, "epochs") == "6" and after_file(six, "epochs", "atom_adv.flags")
