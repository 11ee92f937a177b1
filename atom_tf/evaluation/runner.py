"""Evaluates a trained detector on every (OOD set × threat model) asked for.

Scores are saved per (set, threat) under `results_dir/scores/`, so an interrupted evaluation,
run again, continues where it stopped and recomputes nothing finished. The settings that
determine the numbers are saved in `results_dir/settings.json`; a different setting in the
same folder is refused unless `overwrite`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from atom_tf.cpu import onednn_state
from atom_tf.data.ood_sets import load_ood_set, resolved_set_name, unique_labels
from atom_tf.distribution import is_chief
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.detector import Detector, load_run, progress_note
from atom_tf.evaluation.inputs import as_unit_float
from atom_tf.evaluation.metrics import (
    AUPR_METRICS,
    detection_metrics,
    end_to_end_accuracy,
    end_to_end_metrics,
    fpr_at_tpr,
)
from atom_tf.evaluation.robustness_checks import CHECKS_VERSION, robustness_checks
from atom_tf.evaluation.scorers import SCORERS
from atom_tf.evaluation.threats import (
    ATTACK_NAMES,
    END_TO_END,
    ENSEMBLE,
    IN_ATTACKED,
    THREATS,
    AttackSettings,
    ThreatContext,
    attack_in_distribution,
    get_threat,
    ood_side,
)
from atom_tf.files import (
    DamagedFileError,
    atomic_write_json,
    digest_of,
    read_json,
    save_npz_atomic,
    sha256_of_arrays,
    writable_directory,
)
from atom_tf.settings import identity_of, setting
from atom_tf.training.checkpoint import claim_directory
from atom_tf.training.trainer import read_run_config


def averages(per_set: dict, labels: list[str], threats) -> dict:
    """Each metric of each threat averaged over the sets `labels` (the metrics all have)."""
    out = {}
    for threat in threats:
        keys = [k for k in per_set[labels[0]][threat]
                if k not in ("images", "settled_early")
                and all(k in per_set[s][threat] for s in labels)]  # fmt: skip
        out[threat] = {k: float(np.mean([per_set[s][threat][k] for s in labels])) for k in keys}
    return out


def attacked_summary(in_scores: np.ndarray, attacked: np.ndarray, records: dict,
                     threshold: float, attack: str) -> dict:  # fmt: skip
    """What the attack towards OOD did to the in-distribution subset: the share rejected at
    the clean threshold (before and after), mean scores, and the ensemble's winners."""
    clean = np.asarray(in_scores)[records["indices"]]
    summary = {
        "attack": attack, "images": len(attacked),
        "rejected_clean": 100 * float(np.mean(clean < threshold)),
        "rejected": 100 * float(np.mean(np.asarray(attacked) < threshold)),
        "mean_score_clean": float(np.mean(clean)), "mean_score": float(np.mean(attacked)),
    }  # fmt: skip
    if "attack_winners" in records:
        summary["attack_winners"] = attack_shares(records["attack_winners"])
    if "attack_member_images" in records:
        summary["attack_cost"] = attack_cost(records)
    return summary


def winner_counts(winners: np.ndarray, which: str) -> dict[str, int]:
    """How often each variant ('name@severity', or 'clean') fooled the detector most."""
    from atom_tf.evaluation.corruption_threats import variant_names

    names = ["clean", *variant_names(which)]
    values, counts = np.unique(winners + 1, return_counts=True)
    return {names[v]: int(c) for v, c in zip(values, counts, strict=True)}


def corruption_breakdown(in_scores: np.ndarray, variant_scores: np.ndarray, which: str
                         ) -> dict[str, dict]:  # fmt: skip
    """Each corruption alone as the attacker's only tool (docs/protocol.md §5 with one
    corruption): `detection_metrics` of the worst of the clean image and its severities 1-5,
    and `fpr95_by_severity`, the FPR95 of the worst of the clean image and each severity
    alone. `variant_scores`: the search's [images, 1 + variants], the clean image first."""
    from atom_tf.corruptions import SEVERITIES
    from atom_tf.evaluation.corruption_threats import searched_corruptions

    names = searched_corruptions(which)
    clean = variant_scores[:, :1]
    per_variant = variant_scores[:, 1:].reshape(len(variant_scores), len(names), len(SEVERITIES))
    out = {}
    for c, name in enumerate(names):
        severities = np.maximum(clean, per_variant[:, c])
        out[name] = {
            **detection_metrics(in_scores, severities.max(axis=1), f"corruption {name}"),
            "fpr95_by_severity": [100 * fpr_at_tpr(in_scores, s) for s in severities.T],
        }
    return out


def record_seconds(results: dict, label: str, side: str, records: dict) -> None:
    """results["seconds"][label][side]: the wall seconds a set's scores under a threat took
    (once per side: linf_both reuses linf_out's), where they were measured."""
    if "seconds" in records:
        results.setdefault("seconds", {}).setdefault(label, {})[side] = float(records["seconds"])


def attack_cost(records: dict) -> dict[str, dict[str, float]]:
    """Per member of the attack ensemble: the images it attacked (fewer than all where the
    ensemble stopped early) and the wall seconds it took."""
    return {name: {"images": int(n), "seconds": float(t)} for name, n, t in
            zip(ENSEMBLE, records["attack_member_images"], records["attack_member_seconds"],
                strict=True)}  # fmt: skip


def settled_early(records: dict) -> int:
    """The images the ensemble's early stop left before its last member (Square) past the
    bound that fixes FPR95, AUROC and the rejected share: their scores are not where the full
    ensemble would have left them. (Scores cached before the ensemble counted them: every image
    Square skipped, those at the scorer's ceiling included.)"""
    if "attack_stopped_at_bound" in records:
        return int(records["attack_stopped_at_bound"])
    if "attack_member_images" not in records:
        return 0
    return len(records["attack_winners"]) - int(records["attack_member_images"][-1])


def attack_shares(winners: np.ndarray) -> dict[str, float]:
    """The share (%) of images each member of the attack ensemble won ('clean': none beat the
    clean image)."""
    names = ["clean", *ENSEMBLE]
    counts = np.bincount(np.asarray(winners) + 1, minlength=len(names))
    total = max(int(counts.sum()), 1)
    return {name: 100 * int(c) / total for name, c in zip(names, counts, strict=True)}


@dataclasses.dataclass
class EvalSettings:
    ood_sets: tuple[str, ...]
    threats: tuple[str, ...] = setting(
        ("natural", "linf"), "Threat models: {choices}.", choices=THREATS
    )
    scorer: str | None = setting(
        None, "Detection score: {choices} (default: the method's, e.g. kplus1 for ATOM/NTOM, "
        "msp for OE).", kind="str", choices=SCORERS, normalize=lambda name: name or None,
    )  # fmt: skip
    scorer_options: dict = dataclasses.field(default_factory=dict)  # the scorer's `options`
    attack: AttackSettings = dataclasses.field(default_factory=AttackSettings)
    max_ood_images: int | None = setting(
        None, "Use at most this many images per OOD set (0 or unset: all).", kind="int",
        normalize=lambda count: count or None,
    )  # fmt: skip
    batch_size: int = setting(256, "Images per attack batch.")
    seed: int = setting(0, "Seed of attacks, noise sets and subsets.")
    jit_compile: bool = False  # resolved: bin/evaluate.py's --jit_compile unset means "auto"
    robustness_checks: bool = setting(
        False, "Gradient-masking checks on OOD images (--robustness_sets): the L-inf threat "
        "against eps (1 to 64/255), against steps (40, 100, 200), and Square against PGD and "
        "APGD (docs/protocol.md §11); with linf_in or linf_both among --threats, the same on "
        "in-distribution images attacked towards OOD. A warning line for each check that "
        "fails.", added_later=True,
    )  # fmt: skip
    robustness_images: int = setting(
        200, "Images the robustness checks attack per set (the first of each OOD set; the "
        "first of the --max_in_images subset).", added_later=True,
    )  # fmt: skip
    robustness_sets: tuple[str, ...] = setting(
        (), "Which of --ood_sets the robustness checks attack (default: the first).",
        added_later=True,
    )  # fmt: skip
    max_in_images: int | None = setting(
        None, "In-distribution test images the linf_in and linf_both threats attack: a subset "
        "drawn with --seed, the same for every run of a dataset (0 or unset: all).", kind="int",
        normalize=lambda count: count or None, added_later=True,
    )  # fmt: skip
    end_to_end_attack: str = setting(
        "", "The L-inf attack of the end-to-end threats linf_in, linf_out, linf_both: {choices} "
        "(empty: --attack), so that linf keeps the paper's PGD beside them.", kind="enum",
        choices=("", *ATTACK_NAMES), added_later=True,
    )  # fmt: skip
    near_ood_sets: tuple[str, ...] = setting(
        (), "Which of --ood_sets are near-OOD (OpenOOD's split); the others are far-OOD, and "
        "results average each group too.", added_later=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.max_ood_images is not None and self.max_ood_images < 1:
            raise InvalidConfigError(
                f"--max_ood_images must be positive, or 0 for all (got {self.max_ood_images})"
            )
        if self.batch_size < 1:
            raise InvalidConfigError(f"--batch_size must be positive (got {self.batch_size})")
        if not self.ood_sets:
            raise InvalidConfigError("no OOD sets to evaluate on; pass --ood_sets")
        if self.max_in_images is not None and self.max_in_images < 1:
            raise InvalidConfigError(
                f"--max_in_images must be positive, or 0 for all (got {self.max_in_images})"
            )
        if self.end_to_end_attack not in ("", *ATTACK_NAMES):
            raise InvalidConfigError(
                f"unknown --end_to_end_attack {self.end_to_end_attack!r}; choose one of "
                f"{', '.join(ATTACK_NAMES)} (or leave it empty for --attack)"
            )
        for flag, names in (("near_ood_sets", self.near_ood_sets),
                            ("robustness_sets", self.robustness_sets)):  # fmt: skip
            unknown = [name for name in names if name not in self.ood_sets]
            if unknown:
                raise InvalidConfigError(
                    f"--{flag} names {', '.join(unknown)}, not among --ood_sets "
                    f"({', '.join(self.ood_sets)})"
                )

    def attack_for(self, threat: str) -> AttackSettings:
        """The attack settings of a threat: `end_to_end_attack` for the end-to-end family."""
        if threat in END_TO_END and self.end_to_end_attack:
            return dataclasses.replace(self.attack, attack=self.end_to_end_attack)
        return self.attack

    def stops_early(self, threat: str) -> bool:
        """Whether the attack of `threat` is the ensemble with its exact early stop."""
        attack = self.attack_for(threat)
        return attack.attack == "ensemble" and attack.early_stop

    def identity(self) -> dict:
        """What determines the saved scores (the list of sets/threats may grow freely; what
        only the end-to-end threats read is in each of their scores' keys)."""
        d = {**identity_of(self), "attack": self.attack.identity()}
        for key in ("ood_sets", "threats", "batch_size", "jit_compile", "robustness_checks",
                    "robustness_images", "robustness_sets", "max_in_images", "end_to_end_attack",
                    "near_ood_sets"):  # fmt: skip
            d.pop(key, None)
        if not d["scorer_options"]:  # results written before scorer options keep their identity
            d.pop("scorer_options")
        return d


def end_to_end_settings(settings: EvalSettings) -> dict:
    """The end-to-end threats' settings, for results that have such threats."""
    if not any(t in END_TO_END for t in settings.threats):
        return {}
    return {"max_in_images": settings.max_in_images,
            "end_to_end_attack": settings.attack_for("linf_in").attack}  # fmt: skip


def _without_run_path(identity: dict) -> dict:
    """Where the run lay does not decide the numbers (each score file is keyed by the weights'
    digest), so a moved or shared run keeps its results folder."""
    return {k: v for k, v in identity.items() if k != "run"}


def _prepare_results_dir(results_dir: str, identity: dict, overwrite: bool) -> None:
    claim_directory(results_dir, "settings.json", identity, overwrite, "--results_dir",
                    _without_run_path)  # fmt: skip
    os.makedirs(os.path.join(results_dir, "scores"), exist_ok=True)


def check_results_dir(results_dir: str, run_dir: str) -> None:
    """The results folder can be written; inside a read-only run, say where else to write."""
    inside = os.path.realpath(results_dir).startswith(os.path.realpath(run_dir) + os.sep)
    try:
        writable_directory(results_dir, "--results_dir")
    except InvalidConfigError as err:
        if not inside:
            raise
        raise InvalidConfigError(
            f"{err}; the run folder {run_dir} cannot be written: pass "
            "--results_dir=DIR outside it (thresholds and fitted constants are then kept there)"
        ) from None


def scores_file(label: str, threat: str | None = None) -> str:
    """Where a set's scores under a threat (or the in-distribution scores) are kept, relative
    to the results folder."""
    name = label.replace("/", "__") + (f"__{threat}" if threat else "")
    return os.path.join("scores", f"{name}.npz")


def saved_scores(path: str, key: str, count: int) -> tuple[np.ndarray, dict] | None:
    """Scores saved for exactly this key (weights, scorer, attack, set content), else None; a
    damaged file counts as absent."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in saved.files}
    except Exception:  # a truncated or damaged file: numpy and zipfile raise many types
        print(f"note: {path} cannot be read; its scores are recomputed", file=sys.stderr)
        return None
    scores = arrays.pop("scores", None)
    if str(arrays.pop("key", "")) != key or scores is None or scores.shape != (count,):
        return None
    return scores, arrays


def score_key(state, detector: Detector, set_name: str, images: np.ndarray, threat: str,
              settings: EvalSettings, final_gain: float | None = None) -> str:  # fmt: skip
    """What a set's scores under a threat depend on (where the ensemble stops early, the gain
    it stops at: it depends on the other side's clean scores)."""
    stop = {} if final_gain is None else {"final_gain": final_gain}
    return digest_of({
        "weights": state.weights_sha256, "numerics": state.numerics,
        "scorer": detector.scorer.name, "params": detector.scorer_params, "attack": settings.attack_for(threat).identity(),
        "threat": threat, "set": resolved_set_name(set_name),
        "images": sha256_of_arrays(images), "seed": settings.seed, **stop,
    })  # fmt: skip


def threat_context(detector: Detector, settings: EvalSettings, verbose: bool,
                   shared: dict | None = None, compiled: dict | None = None,
                   threat: str = "linf", final_gain: float | None = None) -> ThreatContext:  # fmt: skip
    """What a threat model needs of the detector and the settings (the attack `threat` uses,
    stopping at `final_gain`)."""
    return ThreatContext(
        logits_fn=detector.scorer.attack_outputs or detector.logits,
        scorer=detector.scorer,
        num_classes=detector.num_classes,
        attack=settings.attack_for(threat),
        score_fn=detector.score,
        batch_size=settings.batch_size,
        jit_compile=settings.jit_compile,
        seed=settings.seed,
        verbose=verbose,
        shared={} if shared is None else shared,
        compiled={} if compiled is None else compiled,
        strategy=detector.strategy,
        final_gain=final_gain,
    )


def checked_robustness(detector: Detector, state, in_scores: np.ndarray, set_name: str,
                       images: np.ndarray, settings: EvalSettings, results_dir: str,
                       verbose: bool, ood_scores: np.ndarray | None = None) -> dict:  # fmt: skip
    """The gradient-masking checks on the first `robustness_images` images of a set, OOD, or
    with `ood_scores` (clean OOD scores to read AUROC against) the in-distribution subset
    attacked towards OOD. Saved in results_dir/robustness_checks.json, one entry per side and
    set, with what they depend on (reused while that holds); each failed check printed as a
    warning line."""
    side = "ood" if ood_scores is None else "in"
    subset = as_unit_float(images[: settings.robustness_images])
    threat = "robustness_checks" if side == "ood" else "robustness_checks_in"
    depends = {"scores": score_key(state, detector, set_name, subset, threat, settings),
               "in": sha256_of_arrays(in_scores), "version": CHECKS_VERSION}  # fmt: skip
    if ood_scores is not None:
        depends["ood"] = sha256_of_arrays(ood_scores)
    key = digest_of(depends)
    path = os.path.join(results_dir, "robustness_checks.json")
    try:
        saved = read_json(path) if os.path.exists(path) else {}
    except DamagedFileError:  # a damaged cache is recomputed
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    # one entry per side and set; a file of the first version held one entry at its top level
    entries = saved.get("entries", {"ood:" + str(saved.get("checks", {}).get("set")): saved})
    entry = entries.get(f"{side}:{set_name}")
    if isinstance(entry, dict) and entry.get("key") == key and "checks" in entry:
        checks = {"side": "ood", **entry["checks"]}
    else:
        if verbose:
            print(f"robustness checks: {len(subset)} {'OOD images of ' if side == 'ood' else ''}"
                  f"{set_name}", flush=True)  # fmt: skip
        ctx = dataclasses.replace(threat_context(detector, settings, verbose=False), side=side)
        name = f"{detector.scorer.name} detector of {state.weights_sha256[:12]}"
        checks = {"set": set_name,
                  **robustness_checks(in_scores, subset, ctx, name, ood_scores)}  # fmt: skip
    entries = {k: v for k, v in entries.items() if isinstance(v, dict) and "key" in v}
    entries[f"{side}:{set_name}"] = {"key": key, "checks": checks}
    atomic_write_json(path, {"entries": entries})
    for line in checks["warnings"]:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return checks


def ood_scores(
    detector: Detector,
    images: np.ndarray,
    threat: str,
    settings: EvalSettings,
    verbose: bool,
    shared: dict | None = None,
    compiled: dict | None = None,
    final_gain: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Detection scores of OOD images after the threat model, and what the threat recorded
    per image (e.g. the winning corruption). `shared` carries results between the threat
    models of one image set (the compositional threat reuses the corruption search)."""
    ctx = threat_context(detector, settings, verbose, shared, compiled, threat, final_gain)
    shown = get_threat(threat)(as_unit_float(images), ctx)
    return detector.score(shown), ctx.records


def in_distribution_subset(count: int, max_images: int | None, seed: int) -> np.ndarray:
    """Indices of the in-distribution test images the end-to-end threats attack: all, or
    `max_images` of them drawn with `seed` (sorted), the same for every run of a dataset."""
    if max_images is None or max_images >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_images, replace=False))


def cached_scores(path: str, key: str, count: int, compute: Callable[[], tuple[np.ndarray, dict]],
                  what: str, verbose: bool) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Scores saved at `path` under `key`, else `compute()`d and saved with that key and the
    wall seconds they took (records["seconds"], also when read back)."""
    found = saved_scores(path, key, count)
    if found is not None:
        if verbose:
            print(f"{what}: scores found, not recomputed")
        return found
    start = time.perf_counter()
    scores, records = compute()
    records = {**records, "seconds": np.float64(time.perf_counter() - start)}
    save_npz_atomic(path, scores=scores, key=np.array(key), **records)
    if verbose:
        print(f"{what}: {len(scores):,} images in {float(records['seconds']):.1f} s")
    return scores, records


def attacked_in_scores(detector: Detector, state, x_test: np.ndarray, settings: EvalSettings,
                       results_dir: str, verbose: bool, compiled: dict,
                       final_gain: float | None = None) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Detection scores of the in-distribution subset under the L∞ attack towards OOD (the
    attack of `linf_in`, stopping at `final_gain`), kept in
    scores/in_distribution__linf_in.npz with the subset's indices; reused while the weights,
    scorer, attack, subset, seed and final gain are unchanged."""
    indices = in_distribution_subset(len(x_test), settings.max_in_images, settings.seed)
    subset = x_test[indices]
    key = score_key(state, detector, "in_distribution", subset, "linf_in", settings, final_gain)

    def compute() -> tuple[np.ndarray, dict]:
        ctx = threat_context(detector, settings, verbose, compiled=compiled, threat="linf_in",
                             final_gain=final_gain)  # fmt: skip
        shown = attack_in_distribution(as_unit_float(subset), ctx)
        return detector.score(shown), {**ctx.records, "indices": indices}

    path = os.path.join(results_dir, scores_file("in_distribution", "linf_in"))
    return cached_scores(path, key, len(subset), compute, "in-distribution / linf_in", verbose)


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
    if strategy is not None and not is_chief(strategy):
        results_dir, verbose = tempfile.mkdtemp(prefix="atom_tf_worker_eval_"), False
    check_results_dir(results_dir, run_dir)
    note = progress_note(run_dir, {**read_run_config(run_dir), **(overrides or {})})
    if verbose and note:
        print(note, flush=True)
    detector, config, data = load_run(run_dir, settings.scorer, overrides=overrides,
                                      strategy=strategy, scorer_options=settings.scorer_options,
                                      cache_dir=results_dir)  # fmt: skip
    state = detector.run_state
    scorer_name = detector.scorer.name
    if verbose:
        print(f"evaluating {run_dir} with the {scorer_name} score: {', '.join(settings.threats)} "
              f"on {len(settings.ood_sets)} OOD set(s); {onednn_state()}", flush=True)  # fmt: skip
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
        "run": state.to_json(),
        "settings": {
            **identity,
            "ood_sets": list(settings.ood_sets),
            "threats": list(settings.threats),
            **end_to_end_settings(settings),
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
    save_npz_atomic(os.path.join(results_dir, scores_file("in_distribution")), scores=in_scores)
    labels = unique_labels(list(settings.ood_sets))
    compiled: dict = {}  # attacks traced once, used for every set
    set_names = dict(zip(labels, settings.ood_sets, strict=True))
    loaded: dict[str, np.ndarray] = {}  # each set's images, loaded once
    shared: dict[str, dict] = {}  # per set, results reused across its threats
    known: dict = {}  # scores by key, read or computed once in this evaluation
    ood_final_gain = float(np.max(in_scores))  # an OOD image above every clean ID score

    def set_images(label: str) -> np.ndarray:
        if label not in loaded:
            loaded[label] = load_ood_set(set_names[label], settings.max_ood_images, data_dir,
                                         ood_dir, seed=settings.seed)  # fmt: skip
        return loaded[label]

    def set_scores(label: str, side: str) -> tuple[np.ndarray, dict]:
        images = set_images(label)
        gain = ood_final_gain if settings.stops_early(side) else None
        key = score_key(state, detector, set_names[label], images, side, settings, gain)
        if key not in known:
            known[key] = cached_scores(
                os.path.join(results_dir, scores_file(label, side)), key, len(images),
                functools.partial(ood_scores, detector, images, side, settings, verbose,
                                  shared.setdefault(label, {}), compiled, gain),
                f"{label} / {side}", verbose,
            )  # fmt: skip
        return known[key]

    attacked_in: tuple[np.ndarray, dict] | None = None
    if any(t in IN_ATTACKED for t in settings.threats):
        in_final_gain = None
        if settings.stops_early("linf_in"):  # below τ and every clean OOD score of every set
            lowest = min(float(np.min(set_scores(label, "natural")[0])) for label in labels)
            in_final_gain = -min(threshold, lowest)
        attacked_in = attacked_in_scores(detector, state, data.x_test, settings, results_dir,
                                         verbose, compiled, in_final_gain)  # fmt: skip
        results["in_distribution"]["attacked"] = attacked_summary(
            in_scores, *attacked_in, threshold, settings.attack_for("linf_in").attack
        )
        record_seconds(results, "in_distribution", "linf_in", attacked_in[1])
    for label in labels:
        for threat in settings.threats:
            side = ood_side(threat)  # linf_in shows natural OOD images, linf_both linf_out's
            scores, records = set_scores(label, side)
            record_seconds(results, label, side, records)
            what = f"{label} / {threat}"
            if threat in END_TO_END:
                attacked = attacked_in[0] if threat in IN_ATTACKED else None
                metrics = end_to_end_metrics(in_scores, scores, threshold, attacked, what)
                settled = settled_early(records) + (
                    settled_early(attacked_in[1]) if attacked is not None else 0)  # fmt: skip
                if settled:  # AUPR's step sum reads ties the early stop did not make: no AUPR
                    metrics = {k: v for k, v in metrics.items() if k not in AUPR_METRICS}
                    metrics["settled_early"] = float(settled)
            else:
                metrics = detection_metrics(in_scores, scores, what)
            results["ood"].setdefault(label, {})[threat] = {"images": len(scores), **metrics}
            if "winners" in records:
                counts = winner_counts(records["winners"], settings.attack.corruptions)
                results.setdefault("corruption_winners", {}).setdefault(label, {})[threat] = counts
            if "variant_scores" in records:  # the corruption threat's (compositional drops them)
                results.setdefault("corruption_types", {})[label] = corruption_breakdown(
                    in_scores, records["variant_scores"], settings.attack.corruptions
                )
            if "attack_winners" in records:
                shares = attack_shares(records["attack_winners"])
                results.setdefault("attack_winners", {}).setdefault(label, {})[threat] = shares
            if "attack_member_images" in records:
                cost = attack_cost(records)
                results.setdefault("attack_cost", {}).setdefault(label, {})[side] = cost
        loaded.pop(label, None)
        shared.pop(label, None)
    results["average"] = averages(results["ood"], labels, settings.threats)
    if settings.near_ood_sets:
        near = {labels[settings.ood_sets.index(name)] for name in settings.near_ood_sets}
        results["groups"] = {"near": [x for x in labels if x in near],
                             "far": [x for x in labels if x not in near]}  # fmt: skip
        results["average_by_group"] = {
            group: averages(results["ood"], members, settings.threats)
            for group, members in results["groups"].items() if members
        }  # fmt: skip
    if settings.robustness_checks:
        results["robustness_checks"] = []
        checked = [labels[settings.ood_sets.index(name)]
                   for name in settings.robustness_sets or settings.ood_sets[:1]]  # fmt: skip
        for label in checked:
            results["robustness_checks"].append(checked_robustness(
                detector, state, in_scores, set_names[label], set_images(label), settings,
                results_dir, verbose,
            ))  # fmt: skip
        if attacked_in is not None:  # AUROC against the first checked set's clean scores
            clean_ood = set_scores(checked[0], "natural")[0]
            subset = data.x_test[attacked_in[1]["indices"]]
            results["robustness_checks"].append(checked_robustness(
                detector, state, in_scores, "in_distribution", subset, settings, results_dir,
                verbose, ood_scores=clean_ood,
            ))  # fmt: skip
    return results
