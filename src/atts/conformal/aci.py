"""Adaptive conformal inference: a working rejection level that tracks alpha under any drift.

Gibbs and Candes (2021), "Adaptive Conformal Inference Under Distribution Shift", eq. (2):

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t),    err_t = 1{p_t <= alpha_t}

and a step is rejected iff its p-value p_t <= alpha_t.  Whatever the p-values (drift, shift, an
adversary), alpha_t stays in [-gamma, 1 + gamma] (a level above 1 rejects everything, so it
only falls; one below 0 rejects nothing, p > 0, so it only rises), and summing the update over
t = 1..T gives their Proposition 4.1, the finite-sample bound

    | (1/T) sum_t err_t - alpha | <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T).

What it guarantees: the long-run *frequency* of rejections in each tracked stratum, for any
sequence of scores.  What it does not: a step's rejection is not an exchangeable event with
probability <= alpha (the split-conformal guarantee), and over a short stream the rate may sit
up to the bound away from alpha.  ``AdaptiveLevels`` keeps one tracker per stratum (a round
bucket, optionally per question), so every round, not only their average, meets alpha.  The
decision at a working level is ``atts.conformal.decider.classify`` (reject iff p <= alpha_t),
taken by the ``Decider``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from atts.conformal.pvalue import check_alpha

__all__ = ["AdaptiveLevel", "AdaptiveLevels", "aci_bound"]


def aci_bound(alpha_1: float, gamma: float, steps: int) -> float:
    """The bound on |mean err - alpha| after ``steps`` updates (Gibbs and Candes, Prop. 4.1)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return (max(alpha_1, 1.0 - alpha_1) + gamma) / (gamma * steps)


@dataclass(frozen=True)
class AdaptiveLevel:
    """One tracker's state: the working level, and the decisions and errors seen so far."""

    alpha: float
    gamma: float
    level: float
    steps: int = 0
    errors: int = 0

    @classmethod
    def start(cls, alpha: float, gamma: float) -> AdaptiveLevel:
        """alpha_1 = alpha: the tracker starts at the nominal level."""
        a = check_alpha(alpha)
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"adaptive_gamma must lie in (0, 1), got {gamma!r}")
        return cls(alpha=a, gamma=float(gamma), level=a)

    def update(self, err: bool) -> AdaptiveLevel:
        """alpha_{t+1} = alpha_t + gamma (alpha - err_t)  (Gibbs and Candes 2021, eq. 2)."""
        step = self.gamma * (self.alpha - (1.0 if err else 0.0))
        return AdaptiveLevel(self.alpha, self.gamma, self.level + step, self.steps + 1,
                             self.errors + int(err))


class AdaptiveLevels:
    """One ``AdaptiveLevel`` per stratum key, each started at alpha on first use."""

    def __init__(self, alpha: float, gamma: float) -> None:
        self._start = AdaptiveLevel.start(alpha, gamma)
        self._levels: dict[Hashable, AdaptiveLevel] = {}

    def level(self, key: Hashable) -> float:
        """The working level alpha_t of this stratum now."""
        return self._levels.get(key, self._start).level

    def record(self, key: Hashable, err: bool) -> float:
        """Record one decision's error (1 = rejected) and return the stratum's next level."""
        updated = self._levels.get(key, self._start).update(err)
        self._levels[key] = updated
        return updated.level

    def states(self) -> dict[Hashable, AdaptiveLevel]:
        return dict(self._levels)
