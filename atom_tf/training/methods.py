"""Training methods (PROTOCOL §2): a registry of small descriptions read by the train step.

- atom: K+1 outputs, mined outliers, half of each outlier batch attacked with PGD (eq. 4).
- ntom: the same objective and mining, no attack (eq. 7).
- oe:   K outputs, random outliers, loss CE(in) + 0.5 · CE(out, uniform) (Outlier Exposure).
"""

from __future__ import annotations

import dataclasses

from atom_tf.registry import Registry
from atom_tf.training.objectives import Objective, kplus1_ce, uniform_ce


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    kplus1: bool  # a (K+1)-th "out-of-distribution" output
    attack: bool  # PGD on half of each outlier batch
    mining: str  # default selection: 'window' (informative mining) or 'random'
    outlier_loss: Objective  # per-sample loss on outlier logits
    outlier_weight: float  # λ

    def num_outputs(self, num_classes: int) -> int:
        return num_classes + 1 if self.kplus1 else num_classes


METHODS: Registry[Method] = Registry("method")
get_method = METHODS.get


def register_method(method: Method) -> Method:
    return METHODS.register(method.name)(method)


register_method(Method("atom", True, True, "window", kplus1_ce, 1.0))
register_method(Method("ntom", True, False, "window", kplus1_ce, 1.0))
register_method(Method("oe", False, False, "random", uniform_ce, 0.5))
