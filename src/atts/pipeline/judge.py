"""The decision layer of a run, synchronous: which bank and level judge a draft step's score.

``Judge`` owns the banks (docs/METHOD.md section 3), the adaptive levels and the p-value of every
calibration mode, and nothing that waits: a run's ``Calibrator`` awaits its pre-passes and then
calls ``Judge.decide``; ``atts replay`` calls the same method over recorded steps in the order
the run met them, so a replay under a run's own settings takes the run's decisions.

Banks (keys of ``sizes``): ``question`` mode, one per question; otherwise ``""``, the pooled
bank (file or warm-up scores).  Strata (marginal or adaptive): ``strata=round`` judges round
r > 0 against a bank of round-r steps (``"round r"``), round 0's (``""``) standing in while it
holds fewer than ``warmup`` scores; ``strata=question_round`` judges against the bank of the
same question and round (``"q#r"``, fed by siblings' scores as they arrive, nothing waits)
once it holds ``min_bank_size(alpha)`` scores, else falls back to the round stratum.

p-values, with ``ge = #{s_i >= s}`` and ``gt = #{s_i > s}`` over the n bank scores:

    deterministic  p = (1 + ge) / (n + 1)
    smoothed       p = (gt + U (1 + ge - gt)) / (n + 1),   U ~ Uniform(0, 1]

U is drawn from a generator seeded by (run seed, question, sample, round), so runs and replays
are reproducible.  A step whose own score sits in the bank (a pre-pass step) is judged
leave-one-out: its own score is one of the ``ge`` and none of the ``gt``, so ``ge -> ge - 1``,
``n -> n - 1`` (deterministically ``p = ge / n``).

``calibration=adaptive``: the marginal warm-up and an online bank (every judged score is added
after its decision: decide, then add), and a working level per stratum that moves by
``gamma (alpha - err_t)`` after each decision (``atts.conformal.aci``); reject iff p <= level.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from atts.config import RunConfig
from atts.conformal import BankSnapshot, CalibrationBank, Decision, Thresholds, min_bank_size
from atts.conformal.aci import AdaptiveLevels, classify_at
from atts.conformal.pvalue import check_bank_size
from atts.pipeline.seeds import derive_seed

ROUND_BUCKETS = 3  # trackers and tables group rounds as 0, 1, 2 and 3+
POOLED = ""


def round_bucket(round_index: int) -> int:
    """0, 1, 2, or 3 for every round from the fourth on."""
    return min(round_index, ROUND_BUCKETS)


def warmup_order(pending: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (question, sample) keys round-robin over questions, in order of first appearance:
    q0 s0, q1 s0, ..., q0 s1, ...  A warm-up drawn this way spans the questions instead of
    filling from the first one or two admitted (samples are admitted question by question)."""
    queues: dict[str, list[tuple[str, int]]] = {}
    for key in pending:
        queues.setdefault(key[0], []).append(key)
    depth = max((len(q) for q in queues.values()), default=0)
    return [q[i] for i in range(depth) for q in queues.values() if i < len(q)]


class Judge:
    """Banks, levels and decisions of one run (or one replay); see the module docstring."""

    def __init__(self, config: RunConfig, initial_scores: Iterable[float] = ()) -> None:
        self._config = config
        self._thresholds = Thresholds(config.alpha, config.discard_level)
        self._banks: dict[str, CalibrationBank] = {}
        self._adaptive = config.calibration == "adaptive"
        self._levels = AdaptiveLevels(config.alpha, config.adaptive_gamma)
        self._discard_ratio = config.discard_level / config.alpha
        self._online = self._adaptive or config.bank_strata != "none"
        initial = list(initial_scores)
        if initial:
            self._bank(POOLED).add(initial)

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    def sizes(self) -> dict[str, int]:
        return {key: len(bank) for key, bank in self._banks.items()}

    def size(self, question_id: str) -> int:
        """Scores in the bank a question's round-0 steps are judged against."""
        return len(self._bank(self._group(question_id)))

    def add(self, question_id: str, scores: float | Iterable[float]) -> None:
        """Calibration scores (pre-pass, warm-up, recorded, ``grow_bank``) into the bank of
        the question's group: its own bank in question mode, the pooled bank otherwise."""
        self._bank(self._group(question_id)).add(scores)

    def add_round(self, round_index: int, scores: Iterable[float]) -> None:
        """Judged scores of an earlier session into their round stratum (resume)."""
        self._bank(self._round_key(round_index)).add(list(scores))

    def decide(
        self,
        question_id: str,
        round_index: int,
        score: float,
        *,
        own_in_bank: bool,
        sample_index: int = 0,
    ) -> tuple[float, Decision]:
        """The p-value of a draft step's score and its ordinal decision; in the online modes
        the score then joins its strata (decide, then add)."""
        snapshot = self._snapshot(question_id, round_index, own_in_bank=own_in_bank)
        n = snapshot.n - (1 if own_in_bank else 0)
        where = f"the bank of {question_id!r}" + (" (one left out)" if own_in_bank else "")
        self.require_size(n, where)
        rng = None
        if self._config.pvalue == "smoothed":
            seed = derive_seed(self._config.seed, question_id, sample_index, round_index,
                               "pvalue")
            rng = np.random.default_rng(seed)
        p = snapshot.p_value_of(score, leave_one_out=own_in_bank, rng=rng)
        if self._adaptive:
            key = self._level_key(question_id, round_index)
            level = self._levels.level(key)
            decision = classify_at(p, level, self._discard_ratio)
            self._levels.record(key, p <= level)
        else:
            decision = self._thresholds.classify(p)
        if self._online and not own_in_bank:
            self._bank(self._round_key(round_index)).add(score)
            if self._config.bank_strata == "question_round":
                self._bank(f"{question_id}#{round_index}").add(score)
        return p, decision

    def restore_level(self, question_id: str, round_index: int, rejected: bool) -> None:
        """Replay one recorded decision into its adaptive tracker (a resumed run): the levels
        continue where the earlier session left them instead of restarting at alpha."""
        if self._adaptive:
            self._levels.record(self._level_key(question_id, round_index), rejected)

    def levels(self) -> dict[Hashable, float]:
        """The working level of each adaptive stratum now (empty unless adaptive)."""
        return {key: state.level for key, state in self._levels.states().items()}

    def require_size(self, n: int, where: str) -> None:
        if n < self._thresholds.min_bank_size:  # per decision: the cached size, then the guard
            check_bank_size(n, self._config.alpha, where=where,
                            fix="raise calibration_m / warmup, use a larger calibration file, "
                            "or raise alpha")

    def _bank(self, key: str) -> CalibrationBank:
        return self._banks.setdefault(key, CalibrationBank())

    def _group(self, question_id: str) -> str:
        return question_id if self._config.calibration == "question" else POOLED

    def _round_key(self, round_index: int) -> str:
        if self._config.bank_strata == "none" or round_index == 0:
            return POOLED
        return f"round {round_index}"

    def _level_key(self, question_id: str, round_index: int) -> Hashable:
        by = self._config.adaptive_strata
        if by == "none":
            return POOLED
        if by == "question_round":
            return (question_id, round_bucket(round_index))
        return round_bucket(round_index)

    def _snapshot(self, question_id: str, round_index: int, *, own_in_bank: bool) -> BankSnapshot:
        group = self._bank(self._group(question_id)).snapshot()
        strata = self._config.bank_strata
        if own_in_bank or strata == "none" or (round_index == 0 and strata == "round"):
            return group  # a pre-pass score is judged against the bank that holds it
        if strata == "question_round":
            own = self._banks.get(f"{question_id}#{round_index}")
            if own is not None and len(own) >= min_bank_size(self._config.alpha):
                return own.snapshot()
            if round_index == 0:
                return group
        stratum = self._banks.get(self._round_key(round_index))
        if stratum is not None and len(stratum) >= self._config.warmup_size:
            return stratum.snapshot()
        return group  # this round's stratum is still cold: round 0's bank stands in
