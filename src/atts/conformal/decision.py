"""Ordinal decisions from p-values (docs/METHOD.md section 4) and the budget-to-alpha rule.

Two levels `0 <= alpha_discard <= alpha < 1` split the p-value scale into three outcomes:

    p > alpha                      ACCEPT      keep the draft step
    alpha_discard < p <= alpha     CONTINUE    keep the draft step, the target writes after it
    p <= alpha_discard             REGENERATE  drop the draft step, the target rewrites it

`alpha_discard = 0` never regenerates (the authors' code); `alpha_discard = alpha` is pure
replacement. Either way the target is called with probability <= alpha per step (section 3).

``classify`` is the one place this rule is coded: fixed levels (``Thresholds``) and the moving
level of adaptive calibration (``atts.conformal.aci``) both call it, through the ``Decider``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from atts.conformal.pvalue import check_alpha, min_bank_size

__all__ = ["Decision", "Thresholds", "alpha_for_budget", "classify"]


class Decision(StrEnum):
    """What to do with a draft step (the run format's `decision` field holds the value)."""

    ACCEPT = "accept"
    CONTINUE = "continue"
    REGENERATE = "regenerate"


def classify(p: float, reject_level: float, discard_level: float) -> Decision:
    """The ordinal decision of one p-value (docs/METHOD.md section 4): reject iff
    ``p <= reject_level``; a rejected step is regenerated iff ``p <= discard_level``, and a
    ``discard_level`` of 0 never regenerates (the explicit ``> 0`` keeps that true for p == 0)."""
    value = float(p)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(
            f"a p-value must lie in [0, 1], got {p!r}; compute it with atts.conformal.p_value"
        )
    if value > reject_level:
        return Decision.ACCEPT
    if discard_level > 0.0 and value <= discard_level:
        return Decision.REGENERATE
    return Decision.CONTINUE


@dataclass(frozen=True)
class Thresholds:
    """The two rejection levels; `alpha` is the target miscoverage (rejection) rate."""

    alpha: float
    alpha_discard: float = 0.0
    _min_bank_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        ad = self.alpha_discard
        if isinstance(ad, bool) or not isinstance(ad, (int, float, np.integer, np.floating)):
            raise ValueError(f"alpha_discard must be a number in [0, alpha], got {ad!r}")
        ad = float(ad)
        if not (0.0 <= ad <= self.alpha):  # also rejects NaN
            raise ValueError(
                f"alpha_discard must satisfy 0 <= alpha_discard <= alpha={self.alpha}, got "
                f"{self.alpha_discard!r}; use 0 to never regenerate, or alpha for pure "
                "replacement"
            )
        object.__setattr__(self, "alpha_discard", ad)
        object.__setattr__(self, "_min_bank_size", min_bank_size(self.alpha))

    @property
    def min_bank_size(self) -> int:
        """Scores a bank needs before a step can be rejected at this alpha (warm-up size)."""
        return self._min_bank_size

    @property
    def discard_ratio(self) -> float:
        """``alpha_discard / alpha``: the share of a moving level below which a rejected step is
        regenerated, so the ratio keeps its meaning (0 never, 1 always) as the level moves."""
        return self.alpha_discard / self.alpha


def alpha_for_budget(budget: float, m: int) -> float:
    """alpha = B / m: send about B of every m steps to the target (paper: B=4, m=16)."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m (steps per budget window) must be a positive integer, got {m!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise ValueError(f"budget must be a number with 0 < budget < m, got {budget!r}")
    b = float(budget)
    if not (math.isfinite(b) and 0.0 < b < m):
        raise ValueError(
            f"budget B must satisfy 0 < B < m={m} (alpha = B/m must lie in (0, 1)), got "
            f"{budget!r}; to send every step to the target skip the draft model instead"
        )
    return b / int(m)
