"""The paper's published Table 1 rows (DenseNet-BC-100; PROTOCOL §8), to print beside measured
ones. FPR at 95% TPR ↓ / AUROC ↑ in percent, averaged over the six OOD test sets."""

from __future__ import annotations

THREATS = ("natural", "corruption", "linf", "compositional")


def _row(*cells: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """(FPR95, AUROC) per threat, in the column order of Table 1 (THREATS)."""
    return dict(zip(THREATS, cells, strict=True))


# {in-distribution: {method: {threat: (fpr95, auroc)}}}
TABLE_1: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "svhn": {
        "oe": _row((0.60, 99.88), (23.44, 96.23), (69.36, 52.19), (99.65, 1.27)),
        "ntom": _row((0.04, 99.98), (2.87, 99.16), (60.28, 64.06), (99.78, 1.50)),
        "atom": _row((0.07, 99.97), (5.47, 98.52), (7.02, 98.00), (96.33, 49.52)),
    },
    "cifar10": {
        "msp": _row((50.54, 91.79), (100.0, 58.35), (100.0, 13.82), (100.0, 13.67)),
        "oe": _row((3.66, 98.82), (56.25, 90.66), (99.94, 0.34), (99.99, 0.16)),
        "acet": _row((12.28, 97.67), (66.93, 88.43), (74.45, 78.05), (96.88, 53.71)),
        "ntom": _row((1.87, 99.28), (30.58, 94.67), (99.90, 1.22), (99.99, 0.45)),
        "atom": _row((1.69, 99.20), (25.26, 95.29), (20.55, 88.94), (38.89, 86.71)),
    },
    "cifar100": {
        "ntom": _row((36.94, 92.61), (98.17, 65.70), (99.97, 0.76), (100.0, 0.16)),
        "atom": _row((32.30, 93.06), (93.15, 71.96), (38.72, 88.03), (93.44, 69.15)),
    },
}  # fmt: skip


def published_rows(dataset: str) -> dict[str, dict[str, tuple[float, float]]]:
    """The paper's rows for an in-distribution dataset (empty when it has none)."""
    return TABLE_1.get(dataset, {})
