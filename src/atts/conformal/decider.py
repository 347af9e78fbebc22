"""The Decider: the one place a nonconformity score becomes a decision, for steps and questions.

The ordinal scale (docs/METHOD.md section 4): two levels ``0 <= alpha_discard <= alpha < 1``
split the p-value scale into three outcomes,

    p > alpha                      ACCEPT      keep the draft step (or the question's answers)
    alpha_discard < p <= alpha     CONTINUE    keep the draft step, the target writes after it
    p <= alpha_discard             REGENERATE  drop the draft step (escalate the question): the
                                               target rewrites it

``alpha_discard = 0`` never regenerates (the authors' code); ``alpha_discard = alpha`` is pure
replacement (and question escalation).  Either way the target is called with probability
<= alpha (section 3).  ``classify`` is the one place this rule is coded.

A run's draft steps, a replay of them, the server's requests, the simulator's planned runs and
the question-level escalation of a cascade all decide here.  Three parts, each swappable:

- a bank store (``BankStore``): which snapshot judges a key, and where its score goes after
  the decision (a run's ``StrataBanks``, or the server's shared bank);
- a level policy (``DecisionPolicy``): the fixed levels ``alpha_discard <= alpha``, or the
  adaptive working level per stratum (``atts.conformal.aci``), and what a decision does while
  its bank is too small to reject anything (``cold``: raise, or a fixed decision);
- the one classification rule, ``classify``.

The order (docs/METHOD.md section 3): take the bank's snapshot, compute the p-value

    deterministic  p = (1 + #{s_i >= s}) / (n + 1)
    smoothed       p = (#{s_i > s} + U (1 + #{s_i == s})) / (n + 1),   U ~ Uniform(0, 1]

(leave-one-out when the score is already in the bank: a pre-pass step), classify it at the
level, record the error in the adaptive tracker, and only then add the score to the bank.
U is drawn from a generator seeded by (seed, question, sample, round, tag), so runs and replays
take the same decisions.  A caller that knows the decision already (the simulator replays a
recorded plan) passes ``planned``: the banks, levels and p-values still move as in the run, and
the planned decision replaces the computed one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from atts.conformal.aci import AdaptiveLevels
from atts.conformal.bank import BankSnapshot
from atts.conformal.pvalue import check_alpha, check_bank_size, min_bank_size
from atts.conformal.strata import POOLED, DecisionKey, round_bucket
from atts.seeds import derive_seed

__all__ = ["BankStore", "Decider", "Decision", "DecisionPolicy", "Thresholds", "Verdict",
           "alpha_for_budget", "classify"]

LEVEL_STRATA = ("round", "question_round", "none")


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


class BankStore(Protocol):
    """What a decision asks of the banks (``atts.conformal.strata.StrataBanks``)."""

    def judging(self, key: DecisionKey, *, own_in_bank: bool = False) -> BankSnapshot: ...

    def after(self, key: DecisionKey, score: float) -> None: ...

    def where(self, key: DecisionKey) -> str: ...


@dataclass(frozen=True)
class DecisionPolicy:
    """How p-values become decisions: the levels, the p-value, and the cold-bank rule."""

    thresholds: Thresholds
    adaptive: bool = False  # a working level per stratum, moved by gamma (alpha - err)
    gamma: float = 0.05
    level_strata: str = "round"  # adaptive trackers: per round bucket, per question too, or one
    smoothed: bool = False  # the randomised p-value
    seed: int = 0
    tag: str = "pvalue"  # the last part of the smoothed p-value's seed (steps: "pvalue")
    # While the bank holds fewer than min_bank_size(alpha) scores no p-value can reach alpha:
    # None raises CalibrationError (a run); a Decision is taken instead, with p None (the
    # server continues, escalation escalates: both hand the work to the target).
    cold: Decision | None = None
    fix: str = ""  # what the cold-bank error tells the user to change

    def __post_init__(self) -> None:
        if self.level_strata not in LEVEL_STRATA:
            raise ValueError(f"unknown level strata {self.level_strata!r}; choose one of "
                             f"{', '.join(LEVEL_STRATA)}")

    @property
    def alpha(self) -> float:
        return self.thresholds.alpha


@dataclass(frozen=True)
class Verdict:
    """One decision: its p-value (None: taken by the cold-bank rule), what to do, and its
    place in the Decider's sequence (0, 1, ...: the order a replay must take them in, where
    two decisions share a timestamp)."""

    p_value: float | None
    decision: Decision
    index: int = 0

    @property
    def rejected(self) -> bool:
        """Handed to the target: the draft step is continued or regenerated, the question
        escalated."""
        return self.decision is not Decision.ACCEPT


class Decider:
    """Banks, levels and the rule of one run, replay, request or escalation; see the module."""

    def __init__(self, policy: DecisionPolicy, banks: BankStore, *,
                 planned: Callable[[DecisionKey], Decision] | None = None) -> None:
        self.policy = policy
        self.banks = banks
        self._planned = planned
        self._levels = AdaptiveLevels(policy.alpha, policy.gamma)
        self.cold_decisions = 0  # decisions the cold-bank rule took (the server's warm-up)
        self.decisions = 0

    @property
    def thresholds(self) -> Thresholds:
        return self.policy.thresholds

    def decide(self, key: DecisionKey, score: float, *, own_in_bank: bool = False) -> Verdict:
        """The p-value of ``score`` against the bank that judges ``key`` and its decision;
        then the score joins the banks (unless it is in them already: ``own_in_bank``)."""
        snapshot = self.banks.judging(key, own_in_bank=own_in_bank)
        n = snapshot.n - (1 if own_in_bank else 0)
        index = self.decisions
        if n < self.thresholds.min_bank_size and self.policy.cold is not None:
            self.cold_decisions += 1
            verdict = Verdict(None, self.policy.cold, index)
        else:
            where = self.banks.where(key) + (" (one left out)" if own_in_bank else "")
            self.require(n, where)
            rng = None
            if self.policy.smoothed:
                rng = np.random.default_rng(derive_seed(
                    self.policy.seed, key.question_id, key.sample_index, key.round,
                    self.policy.tag))
            p = snapshot.p_value_of(score, leave_one_out=own_in_bank, rng=rng)
            verdict = Verdict(p, self._classify(key, p), index)
        if self._planned is not None:
            verdict = Verdict(verdict.p_value, self._planned(key), index)
        if not own_in_bank:
            self.banks.after(key, score)
        self.decisions += 1
        return verdict

    def require(self, n: int, where: str) -> None:
        """Raise ``CalibrationError`` unless a bank of ``n`` scores can reject at alpha."""
        if n < self.thresholds.min_bank_size:  # per decision: the cheap test, then the guard
            check_bank_size(n, self.policy.alpha, where=where, fix=self.policy.fix)

    def restore(self, key: DecisionKey, rejected: bool) -> None:
        """Replay one recorded decision into its adaptive tracker (a resumed run): the levels
        continue where the earlier session left them instead of restarting at alpha."""
        if self.policy.adaptive:
            self._levels.record(self._level_key(key), rejected)

    def levels(self) -> dict[Hashable, float]:
        """The working level of each adaptive stratum now (empty unless adaptive)."""
        return {key: state.level for key, state in self._levels.states().items()}

    def _classify(self, key: DecisionKey, p: float) -> Decision:
        thresholds = self.thresholds
        if not self.policy.adaptive:
            return classify(p, thresholds.alpha, thresholds.alpha_discard)
        level_key = self._level_key(key)
        level = self._levels.level(level_key)
        decision = classify(p, level, thresholds.discard_ratio * level)
        self._levels.record(level_key, p <= level)
        return decision

    def _level_key(self, key: DecisionKey) -> Hashable:
        by = self.policy.level_strata
        if by == "none":
            return POOLED
        if by == "question_round":
            return (key.question_id, round_bucket(key.round))
        return round_bucket(key.round)
