"""atom_tf.reproduce.published: the paper's Table 1 as printed, checked against the rows that
docs/protocol.md §8 quotes, and complete (every dataset, method and threat)."""

import pathlib
import re

from atom_tf.reproduce.published import TABLE_1, THREATS, published_rows
from tests.conftest import REPO

METHODS = {"msp", "odin", "mahalanobis", "sofl", "oe", "acet", "ccu", "rowl", "ntom", "atom"}
DATASETS = {"SVHN": "svhn", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100"}


def test_every_dataset_has_every_method_of_table_1_under_every_threat():
    assert set(TABLE_1) == set(DATASETS.values())
    for rows in TABLE_1.values():
        assert set(rows) == METHODS
        for row in rows.values():
            assert tuple(row) == THREATS == ("natural", "corruption", "linf", "compositional")
            assert all(0 <= fpr <= 100 and 0 <= auroc <= 100 for fpr, auroc in row.values())


def test_the_rows_quoted_in_the_protocol_match():
    text = pathlib.Path(REPO, "docs", "protocol.md").read_text()
    section = text.split('<a id="published"></a>')[1].split("<a id=")[0]
    rows = re.findall(r"^\| (SVHN|CIFAR-10|CIFAR-100) \| (\w+) \|(.*)\|$", section, re.M)
    assert len(rows) >= 10
    for dataset, method, cells in rows:
        pairs = [tuple(float(v) for v in c.split("/")) for c in cells.split("|")]
        measured = TABLE_1[DATASETS[dataset]][method.lower()]
        assert [measured[threat] for threat in THREATS] == pairs, (dataset, method)


def test_a_dataset_the_paper_did_not_report_has_no_rows():
    assert published_rows("digits") == {}
    assert published_rows("cifar10")["atom"]["linf"] == (20.55, 88.94)
