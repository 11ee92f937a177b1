"""atom_tf.reproduce.suite_report: evaluations combined in the paper's threat order, the
paper's rows only for methods the suite measured, a mean FPR95 computed by hand."""

import csv
import json

import pytest

from atom_tf.reproduce.suite_report import (
    _setting_text,
    combine,
    mean_fpr95,
    suite_markdown,
    tradeoff_panels,
    tradeoffs,
    write_suite_reports,
)


def evaluation(method: str, fpr: dict[str, float]) -> dict:
    """A results.json as bin/evaluate.py writes it, with the fields the suite reads."""
    metrics = {t: {"fpr95": v, "auroc": 100 - v, "images": 5} for t, v in fpr.items()}
    return {"method": method, "model": "small_cnn", "settings": {"scorer": "kplus1"},
            "in_distribution": {"accuracy": 0.9, "end_to_end_accuracy": 0.85},
            "average": metrics, "ood": {"letters": metrics}}  # fmt: skip


@pytest.fixture
def table():
    evaluations = {  # 'linf' listed before 'natural', an unknown threat last
        "atom": evaluation("atom", {"linf": 30.0, "natural": 10.0, "blur": 50.0}),
        "mine": evaluation("ntom", {"natural": 20.0, "linf": 80.0}),
    }
    return combine(evaluations, {"atom": {"train": 120.0, "evaluate": 30.0}}, "cifar10")


def test_threats_follow_the_paper_and_the_paper_rows_are_those_of_measured_methods(table):
    assert table["threats"] == ["natural", "linf", "blur"]
    assert set(table["published"]) == {"atom"}  # 'mine' is no method of the paper's table
    assert table["published"]["atom"]["natural"] == {"fpr95": 1.69, "auroc": 99.20}
    assert table["rows"]["atom"]["average"]["linf"] == {"fpr95": 30.0, "auroc": 70.0}
    assert table["rows"]["mine"]["ood_sets"] == {"letters": 5}


def test_mean_fpr95_is_the_plain_mean_and_missing_threats_give_none(table):
    atom = table["rows"]["atom"]["average"]
    assert mean_fpr95(atom, ["natural", "linf", "blur"]) == pytest.approx((10 + 30 + 50) / 3)
    assert mean_fpr95(table["rows"]["mine"]["average"], ["natural", "linf", "blur"]) is None


def test_the_reports_hold_every_measured_and_published_cell(table, tmp_path):
    markdown = suite_markdown(table)
    assert "| measured | atom | 10.00 / 90.00 | 30.00 / 70.00 | 50.00 / 50.00 | 30.00 |" in markdown
    assert "| paper | atom | 1.69 / 99.20 | 20.55 / 88.94 | – | – |" in markdown
    assert "| atom | small_cnn | kplus1 | 0.90 | 0.85 | 2.0 | 0.5 |" in markdown
    write_suite_reports(table, str(tmp_path), plots=False)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    # measured: (3 + 2 threats) x (average + one set); paper: atom's 4 threats
    assert len(rows) == 5 * 2 + 4
    assert json.loads((tmp_path / "results.json").read_text()) == table
    assert not (tmp_path / "fpr95.png").exists()


def test_the_end_to_end_table_is_atds_layout_with_what_the_ensemble_adds():
    def metrics(auroc, fpr, **extra):
        return {"fpr95": fpr, "auroc": auroc, "images": 5, **extra}

    per = {"natural": metrics(99.0, 2.0), "linf": metrics(80.0, 40.0),
           "linf_in": metrics(60.0, 50.0, fpr95_clean_threshold=2.0, in_rejected=70.0),
           "linf_out": metrics(70.0, 55.0, fpr95_clean_threshold=55.0),
           "linf_both": metrics(20.0, 90.0, fpr95_clean_threshold=55.0, in_rejected=70.0)}  # fmt: skip
    results = evaluation("atom", {})
    results.update(average=per, ood={"letters": per}, average_by_group={"near": per})
    results["settings"].update(end_to_end_attack="ensemble", attack={"attack": "pgd"})
    results["in_distribution"]["attacked"] = {"rejected": 70.0, "images": 24}
    timed = {**results, "seconds": {"in_distribution": {"linf_in": 30.0},
                                    "letters": {"linf": 2.0, "linf_out": 50.0}}}  # fmt: skip
    member = lambda images, seconds: {"images": images, "seconds": seconds}  # noqa: E731
    costed = {**timed, "in_distribution": {**results["in_distribution"], "attacked": {
        **results["in_distribution"]["attacked"],
        "attack_cost": {"pgd": member(24, 5.0), "square": member(4, 20.0)}}},
        "attack_cost": {"letters": {"linf_out": {"pgd": member(5, 2.0), "square": member(5, 40.0)}}}}  # fmt: skip
    table = combine({"atom": results, "timed": timed, "costed": costed}, {}, "cifar10")
    assert "seconds" not in table["rows"]["atom"]["end_to_end"]  # not measured: no column
    # 80 s for 24 + 5 images against 2 s for 5: (80 / 29) / (2 / 5) = 6.9x per image
    assert "| timed | 80 (29) | 2 (5) | 6.9x | – | – | – |" in suite_markdown(table)
    # Square: 60 of the 80 s, so the rest (20 / 29) / (2 / 5) = 1.7x; 20 of the 24
    # in-distribution images settled before it
    assert "| costed | 80 (29) | 2 (5) | 6.9x | 1.7x | 75 % | 20 |" in suite_markdown(table)
    assert table["threats"] == ["natural", "linf"]  # the end-to-end ones have their own table
    markdown = suite_markdown(table)
    row = "| atom | all | ensemble | 99.00 | 60.00 | 70.00 | 20.00 | 55.00 | 70.00 | +15.00 / -10.00 (vs pgd) |"
    assert row in markdown and "| atom | near | ensemble |" in markdown


def swept(accuracy, natural, both, method="atom_trades"):
    """An evaluation of one point of a sweep (with the end-to-end threats unless `both` is
    None)."""
    results = evaluation(method, {"natural": natural})
    results["in_distribution"]["accuracy"] = accuracy
    if both is not None:
        per = {"natural": {"fpr95": natural, "auroc": 99.0, "images": 5},
               "linf_both": {"fpr95": 90.0, "auroc": both, "images": 5}}  # fmt: skip
        results.update(average=per, ood={"letters": per})
        results["settings"].update(end_to_end_attack="ensemble", attack={"attack": "pgd"})
    return results


def test_a_strength_sweep_gives_the_trade_off_in_order_of_strength(tmp_path):
    evaluations = {"atom_trades": swept(70.0, 12.0, 30.0), "beta1": swept(78.0, 8.0, 5.0),
                   "beta12": swept(61.0, 20.0, None), "atom": evaluation("atom", {"natural": 3.0}),
                   "eps2": evaluation("atom_adv", {"natural": 3.0})}  # fmt: skip
    strengths = {"atom_trades": {"method": "atom_trades", "setting": "beta", "value": 6},
                 "beta1": {"method": "atom_trades", "setting": "beta", "value": 1},
                 "beta12": {"method": "atom_trades", "setting": "beta", "value": 12},
                 "eps2": {"method": "atom_adv", "setting": "eps", "value": 2}}  # fmt: skip
    table = combine(evaluations, {}, "cifar10", strengths)
    assert list(table["tradeoffs"]) == ["atom_trades"]  # atom_adv has one point: no sweep
    sweep = table["tradeoffs"]["atom_trades"]
    assert [p["entry"] for p in sweep["points"]] == ["beta1", "atom_trades", "beta12"]
    assert [p["in_out_auroc"] for p in sweep["points"]] == [5.0, 30.0, None]
    assert [p["natural_fpr95"] for p in sweep["points"]] == [8.0, 12.0, 20.0]
    assert tradeoffs(table["rows"]) == table["tradeoffs"]
    markdown = suite_markdown(table)
    assert "| 6 | atom_trades | 70.00 | 12.00 | 30.00 |" in markdown
    assert "| 12 | beta12 | 61.00 | 20.00 | – |" in markdown
    write_suite_reports(table, str(tmp_path))
    assert (tmp_path / "tradeoff.png").stat().st_size > 0
    assert combine(evaluations, {}, "cifar10")["tradeoffs"] == {}  # no strengths: no sweep


def test_a_comparison_of_training_attacks_gives_each_ones_cost_and_robustness():
    """Entries that differ in a categorical setting (FGSM-RS against PGD-5) side by side, with
    the value each run trained with and its training time; a setting with one entry: none."""
    evaluations = {"atom_adv": swept(78.0, 36.0, 0.4, "atom_adv"),
                   "atom_adv_pgd": swept(76.0, 38.0, 9.5, "atom_adv"),
                   "atom_adv_label": swept(79.0, 35.0, 0.2, "atom_adv")}  # fmt: skip
    attack = lambda value: {"method": "atom_adv", "setting": "train_attack", "value": value}  # noqa: E731
    objective = lambda value: {"method": "atom_adv", "setting": "in_objective", "value": value}  # noqa: E731
    choices = {"atom_adv": [attack("fgsm_rs"), objective("both")],
               "atom_adv_pgd": [attack("pgd")], "atom_adv_label": [objective("label")]}  # fmt: skip
    seconds = {"atom_adv": {"train": 949.0},
               "atom_adv_pgd": {"train": 1610.0, "train_lower_bound": True}}  # fmt: skip
    table = combine(evaluations, seconds, "cifar10", None, choices)
    assert list(table["comparisons"]) == ["atom_adv: train_attack", "atom_adv: in_objective"]
    points = table["comparisons"]["atom_adv: train_attack"]["points"]
    assert [(p["value"], p["in_out_auroc"], p["train_seconds"]) for p in points] == [
        ("fgsm_rs", 0.4, 949.0), ("pgd", 9.5, 1610.0)]  # fmt: skip
    markdown = suite_markdown(table)
    assert "Comparison of atom_adv: train_attack" in markdown
    assert "| pgd | atom_adv_pgd | 76.00 | 38.00 | 9.50 | ≥ 1610 |" in markdown
    assert "| fgsm_rs | atom_adv | 78.00 | 36.00 | 0.40 | 949 |" in markdown
    assert " | ≥ 26.8 | – |" in markdown  # the main table, in minutes
    assert "| label | atom_adv_label | 79.00 | 35.00 | 0.20 | – |" in markdown
    single = combine(evaluations, seconds, "cifar10", None, {"atom_adv_pgd": [attack("pgd")]})
    assert single["comparisons"] == {}


def test_a_numeric_comparison_gets_a_trade_off_panel_in_order_of_value(tmp_path):
    """Entries compared by a numeric setting (--init_share 0.2, 0, 0.1 in suite order) are
    drawn like a strength sweep, in order of value; a categorical comparison is not drawn."""
    evaluations = {"share20": swept(62.0, 31.5, 49.0, "atom_trades"),
                   "share0": swept(59.0, 28.0, 54.9, "atom_trades"),
                   "share10": swept(60.4, 30.0, 52.0, "atom_trades"),
                   "pgd": swept(60.0, 15.0, 27.0, "atom_trades")}  # fmt: skip
    share = lambda value: [{"method": "atom_trades", "setting": "init_share", "value": value}]  # noqa: E731
    attack = lambda value: [{"method": "atom_trades", "setting": "train_attack", "value": value}]  # noqa: E731
    choices = {"share20": share(0.2), "share0": share(0.0) + attack("pgd"), "share10": share(0.1),
               "pgd": attack("fgsm_rs")}  # fmt: skip
    table = combine(evaluations, {}, "cifar10", None, choices)
    panels = tradeoff_panels(table)
    assert [(title, setting) for title, setting, _ in panels] == [
        ("atom_trades: init_share", "init_share")
    ]
    assert [p["entry"] for p in panels[0][2]] == ["share0", "share10", "share20"]
    assert [p["in_out_auroc"] for p in panels[0][2]] == [54.9, 52.0, 49.0]
    write_suite_reports(table, str(tmp_path))
    assert (tmp_path / "tradeoff.png").stat().st_size > 0
    assert tradeoff_panels(combine(evaluations, {}, "cifar10", None, {"pgd": attack("pgd")})) == []


def test_a_comparison_names_what_else_its_entries_differ_in():
    """Runs compared by epochs that also differ in their training attack and schedule say so
    in a column of their own; the compared setting, settings all share and runtime settings
    (the data folder) are not named."""
    evaluations = {"short": swept(57.0, 31.0, 32.4, "atom_trades"),
                   "long_pgd": swept(60.0, 15.3, 27.0, "atom_trades")}  # fmt: skip
    epochs = lambda value: [{"method": "atom_trades", "setting": "epochs", "value": value}]  # noqa: E731
    shared = {"trades_beta": 6.0, "epsilon": 8 / 255}
    runs = {"short": {**shared, "epochs": 2, "train_attack": "fgsm_rs", "lr_decay_epochs": [1],
                      "data_dir": "a"},
            "long_pgd": {**shared, "epochs": 6, "train_attack": "pgd", "lr_decay_epochs": [4],
                         "data_dir": "b"}}  # fmt: skip
    table = combine(evaluations, {}, "cifar10", None,
                    {"short": epochs(2), "long_pgd": epochs(6)}, runs)  # fmt: skip
    points = table["comparisons"]["atom_trades: epochs"]["points"]
    assert [p["others"] for p in points] == [
        {"lr_decay_epochs": [1], "train_attack": "fgsm_rs"},
        {"lr_decay_epochs": [4], "train_attack": "pgd"},
    ]
    markdown = suite_markdown(table)
    assert "| train s | also differs in |" in markdown
    assert (
        "| 6 | long_pgd | 60.00 | 15.30 | 27.00 | – | lr_decay_epochs 4, train_attack pgd |"
        in markdown
    )
    runs["long_pgd"].update(train_attack="fgsm_rs", lr_decay_epochs=[1])  # epochs alone differ
    table = combine(evaluations, {}, "cifar10", None, {"short": epochs(2), "long_pgd": epochs(6)},
                    runs)  # fmt: skip
    assert "also differs in" not in suite_markdown(table)
    assert _setting_text("epsilon", 12 / 255) == "epsilon 12/255"
