"""Evaluates a trained detector on every (OOD set × threat model) asked for.

Scores are saved per (set, threat) under `results_dir/scores/`, so an interrupted evaluation,
run again, continues where it stopped and recomputes nothing finished. The settings that
determine the numbers are saved in `results_dir/settings.json`; a different setting in the
same folder is refused unless `overwrite`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from atom_tf.data.ood_sets import load_ood_set, ood_set_label
from atom_tf.distribution import is_chief
from atom_tf.evaluation.detector import Detector, as_unit_float, load_run
from atom_tf.evaluation.metrics import detection_metrics, end_to_end_accuracy
from atom_tf.evaluation.threats import AttackSettings, ThreatContext, get_threat
from atom_tf.training.checkpoint import claim_directory


def winner_counts(winners: np.ndarray, which: str) -> dict[str, int]:
    """How often each variant ('name@severity', or 'clean') fooled the detector most."""
    from atom_tf.evaluation.corruption_threats import variant_names

    names = ["clean", *variant_names(which)]
    values, counts = np.unique(winners + 1, return_counts=True)
    return {names[v]: int(c) for v, c in zip(values, counts, strict=True)}


@dataclasses.dataclass
class EvalSettings:
    ood_sets: tuple[str, ...]
    threats: tuple[str, ...] = ("natural", "linf")
    scorer: str | None = None
    scorer_options: dict = dataclasses.field(default_factory=dict)  # e.g. ODIN's T and η
    attack: AttackSettings = dataclasses.field(default_factory=AttackSettings)
    max_ood_images: int | None = None
    batch_size: int = 256
    seed: int = 0
    jit_compile: bool = False

    def identity(self) -> dict:
        """What determines the saved scores (the list of sets/threats may grow freely)."""
        d = dataclasses.asdict(self)
        for key in ("ood_sets", "threats", "batch_size", "jit_compile"):
            d.pop(key)
        if not d["scorer_options"]:  # results written before scorer options keep their identity
            d.pop("scorer_options")
        return d


def _prepare_results_dir(results_dir: str, identity: dict, overwrite: bool) -> None:
    claim_directory(results_dir, "settings.json", identity, overwrite, "--results_dir")
    os.makedirs(os.path.join(results_dir, "scores"), exist_ok=True)


def ood_scores(
    detector: Detector,
    images: np.ndarray,
    threat: str,
    settings: EvalSettings,
    verbose: bool,
    shared: dict | None = None,
    compiled: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Detection scores of OOD images after the threat model, and what the threat recorded
    per image (e.g. the winning corruption). `shared` carries results between the threat
    models of one image set (the compositional threat reuses the corruption search)."""
    ctx = ThreatContext(
        logits_fn=detector.scorer.attack_outputs or detector.logits,
        scorer=detector.scorer,
        num_classes=detector.num_classes,
        attack=settings.attack,
        score_fn=detector.score,
        batch_size=settings.batch_size,
        jit_compile=settings.jit_compile,
        seed=settings.seed,
        verbose=verbose,
        shared={} if shared is None else shared,
        compiled={} if compiled is None else compiled,
        strategy=detector.strategy,
    )
    shown = get_threat(threat)(as_unit_float(images), ctx)
    return detector.score(shown), ctx.records


def evaluate(
    run_dir: str,
    results_dir: str,
    settings: EvalSettings,
    overwrite: bool = False,
    data_dir: str | None = None,
    ood_dir: str | None = None,
    overrides: dict | None = None,
    verbose: bool = True,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Runs the evaluation; returns (and writes) every number with the exact settings. With a
    `strategy`, attacks and scoring are split over its replicas (and workers: only the chief
    writes `results_dir`; the others write to a temporary folder)."""
    for threat in settings.threats:
        get_threat(threat)  # unknown names fail before any work
    detector, config, data = load_run(run_dir, settings.scorer, overrides=overrides,
                                      strategy=strategy, scorer_options=settings.scorer_options)  # fmt: skip
    if strategy is not None and not is_chief(strategy):
        results_dir, verbose = tempfile.mkdtemp(prefix="atom_tf_worker_eval_"), False
    scorer_name = detector.scorer.name
    identity = {**settings.identity(), "scorer": scorer_name, "run": os.path.abspath(run_dir)}
    _prepare_results_dir(results_dir, identity, overwrite)

    in_scores = detector.score(data.x_test)
    threshold = detector.threshold
    predictions = detector.classify(data.x_test)
    results = {
        "run_dir": os.path.abspath(run_dir),
        "dataset": config["dataset"],
        "method": config["method"],
        "model": config["model"],
        "settings": {
            **identity,
            "ood_sets": list(settings.ood_sets),
            "threats": list(settings.threats),
        },
        "threshold": threshold,
        "scorer_params": detector.scorer_summary(),
        "in_distribution": {
            "test_images": len(data.x_test),
            "accuracy": 100 * float(np.mean(predictions == data.y_test)),
            "end_to_end_accuracy": 100
            * end_to_end_accuracy(in_scores, predictions, data.y_test, threshold),
            "tpr": 100 * float(np.mean(in_scores >= threshold)),
        },
        "ood": {},
    }
    scores_dir = os.path.join(results_dir, "scores")
    np.save(os.path.join(scores_dir, "in_distribution.npy"), in_scores)
    labels = [ood_set_label(s) for s in settings.ood_sets]
    compiled: dict = {}  # attacks traced once, used for every set
    for set_name, label in zip(settings.ood_sets, labels, strict=True):
        images, shared = None, {}
        for threat in settings.threats:
            path = os.path.join(scores_dir, f"{label}__{threat}.npz")
            if os.path.exists(path):
                with np.load(path) as saved:
                    scores = saved["scores"]
                    records = {k: saved[k] for k in saved.files if k != "scores"}
                if verbose:
                    print(f"{label} / {threat}: scores found, not recomputed")
            else:
                if images is None:
                    images = load_ood_set(
                        set_name, settings.max_ood_images, data_dir, ood_dir, seed=settings.seed
                    )
                start = time.perf_counter()
                scores, records = ood_scores(
                    detector, images, threat, settings, verbose, shared, compiled
                )
                np.savez(path + ".tmp.npz", scores=scores, **records)
                os.replace(path + ".tmp.npz", path)
                if verbose:
                    print(
                        f"{label} / {threat}: {len(scores):,} images in {time.perf_counter() - start:.1f} s"
                    )
            metrics = detection_metrics(in_scores, scores)
            results["ood"].setdefault(label, {})[threat] = {"images": len(scores), **metrics}
            if "winners" in records:
                counts = winner_counts(records["winners"], settings.attack.corruptions)
                results.setdefault("corruption_winners", {}).setdefault(label, {})[threat] = counts
    results["average"] = {
        threat: {
            key: float(np.mean([results["ood"][s][threat][key] for s in labels]))
            for key in ("fpr95", "auroc", "aupr_in", "aupr_out")
        }
        for threat in settings.threats
    }
    return results
