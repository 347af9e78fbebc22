"""Which bank judges which score: the banks of one run, keyed by group and stratum.

A decision is about a ``DecisionKey``: a question, a sample of it and a round (a question-level
decision uses the question alone).  ``StrataBanks`` answers the one question a decision asks of
a run's banks, "which snapshot judges this key", and takes the score back afterwards (the
online conformal order: decide, then add).

Banks (keys of ``sizes``):

- the group bank: one per question (``per_question``, conditional coverage) or ``""``, the
  pooled bank (a file, the warm-up, the pre-passes);
- ``strata="round"`` (Mondrian strata, docs/METHOD.md section 3): round r > 0 is judged against
  a bank of round-r scores (``"round r"``), the group bank standing in while that holds fewer
  than ``warmup_size`` scores;
- ``strata="question_round"``: the bank of the same question and round (``"q#r"``, fed by
  siblings' scores as they arrive, nothing waits) once it holds ``min_bank`` scores, else the
  round stratum;
- ``online``: every judged score joins its round stratum after its decision (the round
  strata and adaptive calibration); ``grow``: it joins its group bank instead (``grow_bank``,
  the server's shared bank, the question-level bank of escalation).

A score whose own value sits in the bank (a pre-pass step) is judged against its group bank,
leave-one-out, and never added again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from atts.conformal.bank import BankSnapshot, CalibrationBank

__all__ = ["POOLED", "ROUND_BUCKETS", "DecisionKey", "StrataBanks", "round_bucket"]

POOLED = ""
ROUND_BUCKETS = 3  # adaptive trackers and tables group rounds as 0, 1, 2 and 3+
STRATA = ("none", "round", "question_round")


def round_bucket(round_index: int) -> int:
    """0, 1, 2, or 3 for every round from the fourth on."""
    return min(round_index, ROUND_BUCKETS)


@dataclass(frozen=True)
class DecisionKey:
    """What a decision is about: a draft step (question, sample, round) or a whole question."""

    question_id: str
    sample_index: int = 0
    round: int = 0


class StrataBanks:
    """The banks of one run (or one replay, or one request stream); see the module docstring."""

    def __init__(
        self,
        *,
        per_question: bool = False,
        strata: str = "none",
        warmup_size: int = 1,
        min_bank: int = 1,
        online: bool = False,
        grow: bool = False,
        initial: Iterable[float] = (),
    ) -> None:
        if strata not in STRATA:
            raise ValueError(f"unknown strata {strata!r}; choose one of {', '.join(STRATA)}")
        self._per_question = per_question
        self._strata = strata
        self._warmup_size = warmup_size
        self._min_bank = min_bank
        self._online = online
        self._grow = grow
        self._banks: dict[str, CalibrationBank] = {}
        initial = list(initial)
        if initial:
            self._bank(POOLED).add(initial)

    # -- what decisions ask --------------------------------------------------------------
    def judging(self, key: DecisionKey, *, own_in_bank: bool = False) -> BankSnapshot:
        """The snapshot that judges ``key``'s score now."""
        group = self._bank(self._group(key.question_id)).snapshot()
        strata, round_index = self._strata, key.round
        if own_in_bank or strata == "none" or (round_index == 0 and strata == "round"):
            return group  # a pre-pass score is judged against the bank that holds it
        if strata == "question_round":
            own = self._banks.get(f"{key.question_id}#{round_index}")
            if own is not None and len(own) >= self._min_bank:
                return own.snapshot()
            if round_index == 0:
                return group
        stratum = self._banks.get(self._round_key(round_index))
        if stratum is not None and len(stratum) >= self._warmup_size:
            return stratum.snapshot()
        return group  # this round's stratum is still cold: the group bank stands in

    def after(self, key: DecisionKey, score: float) -> None:
        """A judged score (not a pre-pass one) joins its banks, after its decision."""
        if self._online:
            self._bank(self._round_key(key.round)).add(score)
            if self._strata == "question_round":
                self._bank(f"{key.question_id}#{key.round}").add(score)
        if self._grow:
            self._bank(self._group(key.question_id)).add(score)

    def where(self, key: DecisionKey) -> str:
        """The bank ``key`` is judged against, as an error message names it."""
        return f"the bank of {key.question_id!r}" if self._per_question else "the pooled bank"

    # -- what calibration adds -----------------------------------------------------------
    def add(self, question_id: str, scores: float | Iterable[float]) -> None:
        """Calibration scores (pre-pass, warm-up, recorded) into the question's group bank: its
        own bank per question, the pooled bank otherwise."""
        self._bank(self._group(question_id)).add(scores)

    def add_round(self, round_index: int, scores: Iterable[float]) -> None:
        """Judged scores of an earlier session into their round stratum (a resumed run)."""
        self._bank(self._round_key(round_index)).add(list(scores))

    def size(self, question_id: str = POOLED) -> int:
        """Scores in the group bank of ``question_id``."""
        found = self._banks.get(self._group(question_id))
        return 0 if found is None else len(found)

    def sizes(self) -> Mapping[str, int]:
        return {key: len(bank) for key, bank in self._banks.items()}

    # -- keys ----------------------------------------------------------------------------
    def _bank(self, key: str) -> CalibrationBank:
        found = self._banks.get(key)
        if found is None:  # not setdefault: that would build a bank on every call
            found = self._banks[key] = CalibrationBank()
        return found

    def _group(self, question_id: str) -> str:
        return question_id if self._per_question else POOLED

    def _round_key(self, round_index: int) -> str:
        if self._strata == "none" or round_index == 0:
            return POOLED
        return f"round {round_index}"
