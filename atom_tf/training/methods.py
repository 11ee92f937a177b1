"""Training methods (docs/protocol.md §2, paper Appendix B.3): a registry of small descriptions read by
the trainer and the train step. Loss = mean CE(in, y) + λ · (mean ℓ_out(outliers)
[+ mean ℓ_in(in-distribution)]).

- standard: K outputs, no outliers (the network MSP, ODIN and Mahalanobis score).
- atom:   K+1 outputs, mined outliers, half of each outlier batch attacked with PGD (eq. 4).
- ntom:   the same objective and mining, no attack (eq. 7).
- oe:     K outputs, random outliers, CE(in) + 0.5 · CE(out, uniform) (Outlier Exposure).
- acet:   OE's loss with λ = 1 and half of each outlier batch attacked against it (Hein et al.,
          2019, with the auxiliary pool instead of noise).
- sofl:   K + R outputs (R reject classes), outliers labelled with their likeliest reject class,
          λ = 5, fine-tuned from a standard run (Mohseni et al., 2020).
- rowl:   K+1 outputs, one background class from a fixed random pool sample, every in- and
          out-distribution image attacked (Sehwag et al., 2019).
- energy: K outputs, the squared-hinge energy regulariser on both sides, λ = 0.1, fine-tuned
          from a standard run (Liu et al., 2020).
- atom_energy: ATOM with energy in place of the (K+1)-th class: the energy regulariser, the
          window mined by energy, half of each outlier batch attacked towards low energy.
- ccu:    a Gaussian-mixture density on inputs for in- and out-distribution combined with the
          classifier (Meinke & Hein, 2019; atom_tf.training.ccu).
- aloe:   OE's loss on attacked images only: every in-distribution image attacked against its
          label, every outlier against the uniform CE (Chen et al., 2020; docs/protocol.md §12:
          ε = 1/255, 2 steps of 1/255 as released: configs/aloe.flags).
- aoe:    ALOE's ablation: in-distribution images attacked, outliers clean.
- atom_adv: ATOM plus in-distribution adversarial training: half of each in-distribution batch
          attacked (`--in_objective`: towards the K+1-th class, away from the label, or half
          each) and trained to keep its label.
- atom_trades: ATOM plus TRADES on the in-distribution side: CE on clean images and
          β · KL(f(x) ‖ f(x')) on half of them, x' the PGD maximiser of the KL (Zhang et al.,
          2019) or (`--trades_adversary`) the attack of atom_adv's in-distribution objectives.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from atom_tf.attacks.objectives import (
    Objective,
    best_reject_ce,
    energy_hinge_in,
    energy_hinge_out,
    free_energy,
    kplus1_ce,
    label_ce,
    minus_free_energy,
    ood_probability,
    uniform_ce,
)
from atom_tf.registry import Registry
from atom_tf.settings import Setting, with_defaults
from atom_tf.training.ccu import MIXTURE_LEARNING_RATE, CCUNetwork, initialise_ccu, wrap_ccu
from atom_tf.training.mining import Selection


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    extra_outputs: int  # outputs after the K classes: 1 for K+1 methods, R for SOFL, 0 K-way
    attack: bool  # PGD on part of each outlier batch
    mining: Selection  # default selection of outliers
    outlier_loss: Objective | None  # per-sample loss on outlier logits
    outlier_weight: float  # λ
    scorer: str  # the detection score it is evaluated with by default
    attack_objective: Objective | None = None  # what PGD raises on outliers (default: outlier_loss)
    attacked_share: float = 0.5  # of each outlier batch
    attack_in: bool = False  # in-distribution images attacked too (adversarial training)
    in_attacked_share: float = 1.0  # of each in-distribution batch, when attack_in (the last part)
    # what the attack raises on in-distribution images: their label's CE ("label"), the method's
    # OOD direction, i.e. minus the outlier attack objective ("ood"), or half each ("both")
    in_objective: str = "label"
    trades_beta: float = 0.0  # > 0: attacked images enter as β·KL(f(x) ‖ f(x')), not as CE
    # what finds x' of the KL term: "kl" (TRADES: its maximiser) or one of IN_OBJECTIVES (the
    # attack of `in_objective`, which it sets)
    trades_adversary: str = "kl"
    in_regularizer: Objective | None = None  # per-sample term on in-distribution logits, × λ
    mining_score: Objective | None = ood_probability  # OOD score of the window (higher = OOD)
    # (method, run config) -> the method with its configurable constants (e.g. energy margins)
    configure: Callable[[Method, dict], Method] | None = None
    # (network, num_classes) -> the network trained and evaluated (CCU's density model)
    wrap_network: Callable | None = None
    # (network, uint8 training images, uint8 pool images, seed): set up before the first epoch
    prepare: Callable | None = None
    # (network, images, training) -> (logits, per-image generative loss of a density model)
    # from one forward pass (CCU's mixtures): the loss's mean over the in-distribution batch
    # + λ × its mean over the outliers joins the loss
    density_loss: Callable | None = None
    # the method's own settings (flags of bin/train.py, keys of config.json), which
    # `configure` reads; other methods ignore them
    settings: tuple[Setting, ...] = ()

    @property
    def kplus1(self) -> bool:
        """Has outputs beyond the K classes that stand for "out-of-distribution"."""
        return self.extra_outputs > 0

    @property
    def uses_outliers(self) -> bool:
        return self.mining != Selection.NONE

    def num_outputs(self, num_classes: int) -> int:
        return num_classes + self.extra_outputs

    def configured(self, config: dict) -> Method:
        """This method with the constants a run's configuration sets (its own settings at
        their defaults where the configuration lacks them)."""
        if self.configure is None:
            return self
        return self.configure(self, {**config, **with_defaults(self.settings, config)})

    def pgd_objective(self) -> Objective:
        return self.attack_objective or self.outlier_loss

    def in_distribution_objectives(self, labels) -> list[Objective]:
        """What the attack raises on the attacked in-distribution images, one objective per
        equal part of them: their label's CE, the OOD direction (minus the outlier attack
        objective: towards the K+1-th class for ATOM, towards uniform for OE-type methods),
        or both halves."""

        def away_from_label(logits):
            return label_ce(logits, labels)

        towards_ood = self.pgd_objective()
        return {
            "label": [away_from_label],
            "ood": [lambda logits: -towards_ood(logits)],
            "both": [lambda logits: -towards_ood(logits), away_from_label],
        }[self.in_objective]


METHODS: Registry[Method] = Registry("method")
get_method = METHODS.get
method_names = METHODS.names


def register_method(method: Method) -> Method:
    Selection(method.mining)  # a ValueError names a selection that does not exist
    return METHODS.register(method.name)(method)


def method_settings() -> list[Setting]:
    """Every registered method's own settings, once by name (methods may share one)."""
    found: dict[str, Setting] = {}
    for name in METHODS.names():
        for s in METHODS.get(name).settings:
            if found.setdefault(s.name, s) != s:
                raise ValueError(f"setting {s.name!r} is declared twice, differently")
    return list(found.values())


def _energy_margins(method: Method, config: dict) -> Method:
    """The energy regulariser with the run's margins m_in, m_out (Liu et al.: -23 / -5 for
    CIFAR-10, -27 / -5 for CIFAR-100)."""
    return dataclasses.replace(
        method,
        outlier_loss=energy_hinge_out(config["margin_out"]),
        in_regularizer=energy_hinge_in(config["margin_in"]),
    )


def _reject_classes(method: Method, config: dict) -> Method:
    """SOFL with the run's R reject classes (5 for SVHN and CIFAR-10, 10 for CIFAR-100)."""
    reject = config["reject_classes"]
    return dataclasses.replace(method, extra_outputs=reject, outlier_loss=best_reject_ce(reject))


def _mixture_learning_rate(method: Method, config: dict) -> Method:
    """CCU's mixtures at their own learning rate: their gradients are scaled by its ratio to
    the base learning rate, so they follow the same schedule."""
    ratio = config["mixture_learning_rate"] / config.get("learning_rate", 0.1)
    return dataclasses.replace(
        method, wrap_network=functools.partial(wrap_ccu, gradient_scale=ratio)
    )


def _in_distribution_attack(method: Method, config: dict) -> Method:
    """ATOM's in-distribution adversarial training with the run's objective."""
    return dataclasses.replace(method, in_objective=config["in_objective"])


def _trades(method: Method, config: dict) -> Method:
    """atom_trades with the run's β and adversary: TRADES' KL maximiser, or the attack of one
    of atom_adv's in-distribution objectives (which the overfitting guard's PGD-10 then uses;
    with "kl" it attacks the label)."""
    adversary = config["trades_adversary"]
    return dataclasses.replace(
        method, trades_beta=config["trades_beta"],
        trades_adversary=adversary,
        in_objective="label" if adversary == "kl" else adversary,
    )  # fmt: skip


IN_OBJECTIVES = ("label", "ood", "both")
TRADES_ADVERSARIES = ("kl", *IN_OBJECTIVES)


def method_for(config: dict) -> Method:
    """The method of a run configuration (config.json), with the constants it sets."""
    return get_method(config["method"]).configured(config)


REJECT_CLASSES = Setting(
    name="reject_classes", default=5, help="R, SOFL's reject classes (paper: 10 for CIFAR-100).",
    positive=True,
)  # fmt: skip
ENERGY_MARGINS = (
    Setting(name="margin_in", default=-23.0,
            help="Energy regulariser margin m_in (energy, atom_energy)."),
    Setting(name="margin_out", default=-5.0,
            help="Energy regulariser margin m_out (energy, atom_energy)."),
)  # fmt: skip
MIXTURE_RATE = Setting(
    name="mixture_learning_rate", default=MIXTURE_LEARNING_RATE, positive=True,
    help="CCU's mixtures' learning rate (decayed with the base schedule).",
)  # fmt: skip
IN_OBJECTIVE = Setting(
    name="in_objective", default="both", kind="enum", choices=IN_OBJECTIVES,
    help="What attacks raise on in-distribution images (atom_adv): {choices} "
    "(label: their label's CE; ood: towards the K+1-th class; both: half each).",
)  # fmt: skip
TRADES_ADVERSARY = Setting(
    name="trades_adversary", default="kl", kind="enum", choices=TRADES_ADVERSARIES,
    help="What finds x' of atom_trades' KL term: {choices} (kl: TRADES' maximiser of the KL; "
    "label, ood, both: the attack of atom_adv's --in_objective).",
)  # fmt: skip
TRADES_BETA = Setting(
    name="trades_beta", default=6.0, positive=True,
    help="β of atom_trades' KL(f(x) || f(x')) term (TRADES: 6 at eps 8/255).",
)  # fmt: skip
_energy = energy_hinge_out(ENERGY_MARGINS[1].default)
_energy_in = energy_hinge_in(ENERGY_MARGINS[0].default)
WINDOW, RANDOM, FIXED, NONE = Selection.WINDOW, Selection.RANDOM, Selection.FIXED, Selection.NONE

register_method(
    Method(name="standard", extra_outputs=0, attack=False, mining=NONE, outlier_loss=None,
           outlier_weight=0.0, scorer="msp", mining_score=None)
)  # fmt: skip
register_method(
    Method(name="atom", extra_outputs=1, attack=True, mining=WINDOW, outlier_loss=kplus1_ce,
           outlier_weight=1.0, scorer="kplus1")
)  # fmt: skip
register_method(
    Method(name="ntom", extra_outputs=1, attack=False, mining=WINDOW, outlier_loss=kplus1_ce,
           outlier_weight=1.0, scorer="kplus1")
)  # fmt: skip
register_method(
    Method(name="oe", extra_outputs=0, attack=False, mining=RANDOM, outlier_loss=uniform_ce,
           outlier_weight=0.5, scorer="msp", mining_score=None)
)  # fmt: skip
register_method(
    Method(name="acet", extra_outputs=0, attack=True, mining=RANDOM, outlier_loss=uniform_ce,
           outlier_weight=1.0, scorer="msp", mining_score=None)
)  # fmt: skip
register_method(
    Method(name="sofl", extra_outputs=REJECT_CLASSES.default, attack=False, mining=RANDOM,
           outlier_loss=best_reject_ce(REJECT_CLASSES.default), outlier_weight=5.0,
           scorer="sofl", mining_score=None, configure=_reject_classes,
           settings=(REJECT_CLASSES,))
)  # fmt: skip
register_method(
    Method(name="rowl", extra_outputs=1, attack=True, mining=FIXED, outlier_loss=kplus1_ce,
           outlier_weight=1.0, scorer="rowl", attacked_share=1.0, attack_in=True,
           mining_score=None)
)  # fmt: skip
register_method(
    Method(name="energy", extra_outputs=0, attack=False, mining=RANDOM, outlier_loss=_energy,
           outlier_weight=0.1, scorer="energy", mining_score=None, in_regularizer=_energy_in,
           configure=_energy_margins, settings=ENERGY_MARGINS)
)  # fmt: skip
register_method(
    Method(name="ccu", extra_outputs=0, attack=False, mining=RANDOM, outlier_loss=uniform_ce,
           outlier_weight=1.0, scorer="msp", mining_score=None, wrap_network=wrap_ccu,
           prepare=initialise_ccu, density_loss=CCUNetwork.logits_and_nll,
           configure=_mixture_learning_rate, settings=(MIXTURE_RATE,))
)  # fmt: skip
register_method(
    Method(name="atom_energy", extra_outputs=0, attack=True, mining=WINDOW, outlier_loss=_energy,
           outlier_weight=0.1, scorer="energy", attack_objective=minus_free_energy,
           in_regularizer=_energy_in, mining_score=free_energy, configure=_energy_margins,
           settings=ENERGY_MARGINS)
)  # fmt: skip
register_method(
    Method(name="aloe", extra_outputs=0, attack=True, mining=RANDOM, outlier_loss=uniform_ce,
           outlier_weight=0.5, scorer="msp", mining_score=None, attacked_share=1.0,
           attack_in=True)
)  # fmt: skip
register_method(
    Method(name="aoe", extra_outputs=0, attack=False, mining=RANDOM, outlier_loss=uniform_ce,
           outlier_weight=0.5, scorer="msp", mining_score=None, attack_in=True)
)  # fmt: skip
register_method(
    Method(name="atom_adv", extra_outputs=1, attack=True, mining=WINDOW, outlier_loss=kplus1_ce,
           outlier_weight=1.0, scorer="kplus1", attack_in=True, in_attacked_share=0.5,
           in_objective=IN_OBJECTIVE.default, configure=_in_distribution_attack,
           settings=(IN_OBJECTIVE,))
)  # fmt: skip
register_method(
    Method(name="atom_trades", extra_outputs=1, attack=True, mining=WINDOW,
           outlier_loss=kplus1_ce, outlier_weight=1.0, scorer="kplus1", attack_in=True,
           in_attacked_share=0.5, in_objective="label", trades_beta=TRADES_BETA.default,
           configure=_trades, settings=(TRADES_ADVERSARY, TRADES_BETA))
)  # fmt: skip
