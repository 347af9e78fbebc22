"""The Decider: the one place a nonconformity score becomes a decision, for steps and questions.

A run's draft steps, a replay of them, the server's requests, the simulator's planned runs and
the question-level escalation of a cascade all decide here.  Three parts, each swappable:

- a bank store (``BankStore``): which snapshot judges a key, and where its score goes after
  the decision (a run's ``StrataBanks``, or the server's shared bank);
- a level policy (``DecisionPolicy``): the fixed levels ``alpha_discard <= alpha``, or the
  adaptive working level per stratum (``atts.conformal.aci``), and what a decision does while
  its bank is too small to reject anything (``cold``: raise, or a fixed decision);
- the one classification rule, ``atts.conformal.decision.classify``.

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

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from atts.conformal.aci import AdaptiveLevels
from atts.conformal.bank import BankSnapshot
from atts.conformal.decision import Decision, Thresholds, classify
from atts.conformal.pvalue import check_bank_size
from atts.conformal.strata import POOLED, DecisionKey, round_bucket
from atts.seeds import derive_seed

__all__ = ["BankStore", "Decider", "DecisionPolicy", "Verdict"]

LEVEL_STRATA = ("round", "question_round", "none")


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
