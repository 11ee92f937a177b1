"""Entries of a reproduction suite (`bin/reproduce.py --suite=...`): each is a method, or an
ablation of one, as the command-line flags it adds to the suite's training and evaluation
flagfiles (and a suite's `<entry_flags_dir>/<run>.flags`, where it has one, after those).
Adding an entry is one `register_suite_entry` call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from atom_tf.registry import Registry


@dataclasses.dataclass(frozen=True)
class Strength:
    """An entry's place in a sweep of one method's strength setting (the trade-off between
    accuracy, natural detection and end-to-end robustness a user chooses from)."""

    method: str  # the swept method, e.g. "atom_trades"
    setting: str  # what is swept, as tables and plots name it, e.g. "beta"
    value: float


@dataclasses.dataclass(frozen=True)
class Choice:
    """An entry's place in a comparison of one method's categorical training setting (e.g.
    train_attack: FGSM-RS against PGD), its value read from the trained run's config."""

    method: str  # the compared method, e.g. "atom_adv"
    setting: str  # a run config field, e.g. "train_attack"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SuiteEntry:
    """`{runs_dir}` in a flag stands for the suite's runs folder (fine-tuning from another
    entry's run). Entries with the same `run` share one training (scorers of one network)."""

    name: str
    train_flags: tuple[str, ...]  # after the suite's training flagfile
    eval_flags: tuple[str, ...] = ()  # after the suite's evaluation flagfile
    # after the entry's flag file too: what defines the entry, which no suite's file may change
    # (a sweep's strength, a recipe as released)
    final_flags: tuple[str, ...] = ()
    run: str = ""  # the run folder under the suite's runs folder ('' = the entry's name)
    flags_name: str = ""  # the suite's `<entry_flags_dir>/<flags_name>.flags` ('' = the run's)
    strength: Strength | None = None  # set for the entries of a strength sweep
    choices: tuple[Choice, ...] = ()  # the comparisons of categorical settings it is in

    @property
    def run_name(self) -> str:
        return self.run or self.name

    @property
    def flags_file_name(self) -> str:
        return self.flags_name or self.run_name


SUITE_ENTRIES: Registry[SuiteEntry] = Registry("suite entry")
get_suite_entry = SUITE_ENTRIES.get
suite_entry_names = SUITE_ENTRIES.names


def register_suite_entry(entry: SuiteEntry) -> SuiteEntry:
    return SUITE_ENTRIES.register(entry.name)(entry)


def with_pretrained_bases(entry: SuiteEntry, bases: dict[str, str]) -> SuiteEntry:
    """`entry` fine-tuning the shipped detector `pretrained:NAME` where it would fine-tune the
    suite's run RUN (`bases`: RUN -> NAME), so that it needs no training of RUN first."""
    flags = tuple(
        next((f"--init_from=pretrained:{name}" for run, name in bases.items()
              if flag == f"--init_from={{runs_dir}}/{run}"), flag)
        for flag in entry.train_flags
    )  # fmt: skip
    return dataclasses.replace(entry, train_flags=flags)


# Table 1's baselines (paper Appendix B.3). MSP, ODIN and Mahalanobis score one standard run;
# SOFL's second phase and the energy regulariser fine-tune it. Their batch sizes, schedules and
# pool samples differ per dataset: a suite's entry flag files give them (`--entry_flags_dir`).
register_suite_entry(SuiteEntry(name="msp", train_flags=("--method=standard",), run="standard"))
register_suite_entry(
    SuiteEntry(name="odin", train_flags=("--method=standard",), eval_flags=("--scorer=odin",),
               run="standard")
)  # fmt: skip
register_suite_entry(
    SuiteEntry(
        name="mahalanobis",
        train_flags=("--method=standard",),
        eval_flags=("--scorer=mahalanobis",),
        run="standard",
    )
)
register_suite_entry(SuiteEntry(name="acet", train_flags=("--method=acet",)))
register_suite_entry(SuiteEntry(name="ccu", train_flags=("--method=ccu",)))
register_suite_entry(
    SuiteEntry(name="sofl", train_flags=("--method=sofl", "--init_from={runs_dir}/standard"))
)
register_suite_entry(SuiteEntry(name="rowl", train_flags=("--method=rowl",)))
register_suite_entry(
    SuiteEntry(name="energy", train_flags=("--method=energy", "--init_from={runs_dir}/standard"))
)
register_suite_entry(SuiteEntry(name="atom_energy", train_flags=("--method=atom_energy",)))
register_suite_entry(SuiteEntry(name="atom", train_flags=("--method=atom",)))
register_suite_entry(SuiteEntry(name="ntom", train_flags=("--method=ntom",)))
register_suite_entry(SuiteEntry(name="oe", train_flags=("--method=oe",)))
# The paper's "random sampling" ablation (Table 4): ATOM keeping n random candidates.
register_suite_entry(
    SuiteEntry(name="atom_random", train_flags=("--method=atom", "--mining=random"))
)
# The window-quantile sweep of docs/protocol.md §3 / Appendix B.7: q over {0, 0.125, 0.25, 0.5, 0.75}.
for _q in ("0", "0.125", "0.25", "0.5", "0.75"):
    register_suite_entry(
        SuiteEntry(name=f"atom_q{_q}", train_flags=("--method=atom", f"--quantile={_q}"))
    )


# Training against in-distribution attacks (docs/protocol.md §12). ALOE and AOE as released
# (eps 1/255, 2 PGD steps of 1/255) and at the suite's eps, fine-tuned from the suite's OE run;
# ATOM with in-distribution adversarial training (each --in_objective) and its TRADES variant,
# fine-tuned from the suite's ATOM run (a suite's aloe.flags / aoe.flags may train from scratch
# instead: --init_from=). The strength sweeps (eps for ALOE, AOE and atom_adv, beta for
# atom_trades) and atom_adv's variants read the flag file of the method they sweep (aloe, aoe,
# atom_adv); their strength and recipe come after it. The `_pgd` entries train with PGD-5 where
# the suite's flag file chooses FGSM-RS: the comparison of the two training attacks.
def _eps(value: float) -> tuple[str, ...]:
    """Training-attack flags at eps = value/255: at 1/255 ALOE's 2 PGD steps of 1/255 as
    released, otherwise the suite's attack (FGSM-RS, where a flag file chooses it, steps
    1.25 eps)."""
    released = ("--train_attack=pgd", "--attack_steps=2", f"--attack_step_size={1 / 255!r}")
    return (f"--epsilon={value / 255!r}", *(released if value == 1 else ()))


def _pgd_5(value: float = 8) -> tuple[str, ...]:
    """PGD-5 as the training attack, steps of eps/4 at eps = value/255 (2/255 at 8/255)."""
    return ("--train_attack=pgd", "--attack_steps=5", f"--attack_step_size={value / 4 / 255!r}")


PGD_5 = _pgd_5()
TRAIN_ATTACK = "train_attack"
EPOCHS = "epochs"
TRADES_ADVERSARY = "trades_adversary"
TRADES_BETA_6 = "--trades_beta=6"


def _fine_tune(name: str, method: str, base: str, final_flags: tuple[str, ...],
               flags_name: str, strength: Strength | None = None,
               choices: tuple[str, ...] = ()) -> None:  # fmt: skip
    """An entry fine-tuning the suite's `base` run with `method`, reading
    `<flags_name>.flags`; `choices` names the run settings it is compared by."""
    register_suite_entry(SuiteEntry(
        name=name, train_flags=(f"--method={method}", f"--init_from={{runs_dir}}/{base}"),
        final_flags=final_flags, flags_name=flags_name, strength=strength,
        choices=tuple(Choice(method, setting) for setting in choices)))  # fmt: skip


EPS = "eps (/255)"


def _sweep(sweep: str, method: str, base: str, flags_name: str, setting: str,
           values: tuple[float, ...], default: float,
           flags_of: Callable[[float], tuple[str, ...]], choices: tuple[str, ...] = (),
           compared_at: float | None = None) -> None:  # fmt: skip
    """A strength sweep: an entry per value, named `sweep` at `default` and `<sweep>_eps<v>` /
    `<sweep>_beta<v>` elsewhere, trained with `flags_of(value)`; the entry at `compared_at`
    (default: `default`) is in the comparisons of `choices`."""
    short = "eps" if setting == EPS else setting
    compared = default if compared_at is None else compared_at
    for value in values:
        _fine_tune(sweep if value == default else f"{sweep}_{short}{value}", method, base,
                   flags_of(value), flags_name, Strength(sweep, setting, value),
                   choices if value == compared else ())  # fmt: skip


for _name in ("aloe", "aoe"):
    _sweep(_name, _name, "oe", _name, EPS, (1, 2, 4, 8), 1, _eps, (TRAIN_ATTACK,), compared_at=8)
    _fine_tune(f"{_name}_eps8_pgd", _name, "oe", (*_eps(8), *PGD_5), _name,
               choices=(TRAIN_ATTACK,))  # fmt: skip
_sweep("atom_adv", "atom_adv", "atom", "atom_adv", EPS, (2, 4, 8), 8, _eps,
       (TRAIN_ATTACK, "in_objective"))  # fmt: skip
_fine_tune("atom_adv_pgd", "atom_adv", "atom", (*_eps(8), *PGD_5), "atom_adv",
           choices=(TRAIN_ATTACK,))  # fmt: skip
for _objective in ("label", "ood"):
    _fine_tune(f"atom_adv_{_objective}", "atom_adv", "atom", (f"--in_objective={_objective}",),
               "atom_adv", choices=("in_objective",))  # fmt: skip
# The eps sweep of atom_trades, with PGD-5 (steps of eps/4) for 2 epochs: FGSM-RS's single step
# of 1.25 eps invites catastrophic overfitting above the evaluation's 8/255.
_sweep("atom_trades_pgd", "atom_trades", "atom", "atom_adv", EPS, (4, 8, 12), 8,
       lambda value: (TRADES_BETA_6, *_eps(value), *_pgd_5(value)),
       (TRAIN_ATTACK, EPOCHS))  # fmt: skip
# x' of the KL term found by the attack of an in-distribution objective instead of the KL's
# maximiser (towards the K+1-th class: the threat linf_in's own direction).
for _objective in ("label", "ood", "both"):
    _fine_tune(f"atom_trades_{_objective}", "atom_trades", "atom",
               (TRADES_BETA_6, f"--trades_adversary={_objective}"), "atom_adv",
               choices=(TRADES_ADVERSARY,))  # fmt: skip
# The same fine-tune three times as long (6 epochs, x0.1 after the fourth): what more of the
# 60 training minutes that issue 21 allows buys in accuracy and In+Out AUROC.
SIX_EPOCHS = ("--epochs=6", "--lr_decay_epochs=4")
_fine_tune("atom_trades_6epochs", "atom_trades", "atom", (TRADES_BETA_6, *SIX_EPOCHS), "atom_adv",
           choices=(EPOCHS,))  # fmt: skip
# atom_trades_pgd_6epochs with its weights averaged (--ema_momentum=0.999: about the last 1,000
# of its 2,340 steps), its final network the average: what averaging buys in accuracy and
# In+Out AUROC at the same training cost.
EMA = "--ema_momentum=0.999"
_fine_tune("atom_trades_pgd_6epochs_ema", "atom_trades", "atom",
           (TRADES_BETA_6, *PGD_5, *SIX_EPOCHS, EMA), "atom_adv")  # fmt: skip
# ... and the average's batch-norm statistics re-estimated over 100 clean training batches
# (those kept are the trained weights': they cost the average 3.3 points of accuracy), with the
# average's horizon swept: m = 0.998, 0.999, 0.9995 (about 500, 1,000, 2,000 steps; 79, 54 and
# 32 % of the average's weight after the learning-rate decay at step 1,560 of 2,340, and 0.9,
# 9.6 and 31 % on the weights after the first step, which Keras' average starts from).
# results.md gives the sweep a trade-off table.
REESTIMATE_BN = "--reestimate_bn_batches=100"
INIT_SHARE = "init_share"
for _name, _momentum in (("atom_trades_pgd_6epochs_ema_bn", 0.999),
                         ("atom_trades_pgd_6epochs_ema998_bn", 0.998),
                         ("atom_trades_pgd_6epochs_ema9995_bn", 0.9995)):  # fmt: skip
    _fine_tune(_name, "atom_trades", "atom",
               (TRADES_BETA_6, *PGD_5, *SIX_EPOCHS, f"--ema_momentum={_momentum}", REESTIMATE_BN),
               "atom_adv", Strength("atom_trades_pgd_6epochs_ema_bn", "EMA horizon 1/(1-m), steps",
                                    round(1 / (1 - _momentum))),
               (INIT_SHARE,) if _momentum == 0.998 else ())  # fmt: skip
# ... and the 500-step average interpolated with the ATOM network it started from (WiSE-FT,
# --init_share: 10, 20, 30 and 50 % of the start's weights, before the re-estimation): whether
# the start's accuracy comes back for less In+Out than a longer average gives up for it, and
# how far towards the start the in-distribution robustness lasts. results.md compares them with
# the average itself (share 0).
for _share in (10, 20, 30, 50):
    _fine_tune(f"atom_trades_pgd_6epochs_ema998_bn_share{_share}", "atom_trades", "atom",
               (TRADES_BETA_6, *PGD_5, *SIX_EPOCHS, "--ema_momentum=0.998", REESTIMATE_BN,
                f"--init_share={_share / 100!r}"), "atom_adv", choices=(INIT_SHARE,))  # fmt: skip
# The beta sweeps: the suite's recipe (2 epochs), and PGD-5 for 6 epochs (whether the 6-epoch
# run's loss of in-distribution robustness comes from FGSM-RS). beta 6 is each sweep's own
# name and the one compared by the categorical settings.
for _name, _recipe, _values, _choices in (
    ("atom_trades", (), (1, 3, 6, 9, 12), (EPOCHS, TRADES_ADVERSARY, TRAIN_ATTACK)),
    ("atom_trades_pgd_6epochs", (*PGD_5, *SIX_EPOCHS), (6, 9), (EPOCHS,)),
):
    _sweep(_name, "atom_trades", "atom", "atom_adv", "beta", _values, 6,
           lambda value, recipe=_recipe: (f"--trades_beta={value}", *recipe), _choices)  # fmt: skip
