"""Online calibration of a run: which bank a decision sees, and when it is ready.

Three modes (ATTS.md section 3), chosen by ``RunConfig.calibration``:

- ``question`` (conditional coverage): for each question, m first steps are drafted and scored
  before its rounds start (a pre-pass of m concurrent drafts), and they *are* the first steps of
  samples 0..m-1, so calibration costs no extra drafting.  Only samples of that question wait
  for its pre-pass; nothing else does.
- ``marginal``: one bank pooled over questions.  A warm-up pre-pass drafts and scores the first
  steps of the first ``warmup`` samples of the run (again reused as their first steps); the
  first decision waits for it.  Everything else runs meanwhile.
- ``file``: a bank made by ``atts calibrate`` on a disjoint pool, checked by fingerprint.

Mondrian strata (``strata=round``, marginal mode): step perplexities drift with depth, so a bank
of first steps misjudges later rounds (too many rejections early, none late).  With strata,
round r's steps are judged against a bank of round-r steps (pooled over questions), each added
after its decision; until that bank holds ``warmup`` scores, round 0's bank stands in.

A step whose own score sits in the bank (a pre-pass step) is judged leave-one-out, so it stays
exchangeable with the bank it is compared to: with p the p-value against the whole bank of n
scores (its own included, which always counts as ``s_i >= s``), the p-value against the other
n - 1 is ``p_loo = ((n + 1) p - 1) / n``.  With ``grow_bank`` every judged draft step is added
after its decision (decide first, then add: the online conformal order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from atts.config import RunConfig
from atts.conformal import BankSet, Decision, Thresholds, min_bank_size
from atts.engines.base import Generation, StepScore


@dataclass(frozen=True)
class ScoredDraft:
    """A drafted step and its target score (None for an empty step, which has no score)."""

    generation: Generation
    score: StepScore | None


# (question_id, sample_index) -> that sample's drafted and scored first step.
DraftAndScore = Callable[[str, int], Awaitable[ScoredDraft]]


class CalibratorLike(Protocol):
    """What the strategies ask of calibration: a run's ``Calibrator`` or the server's shared
    online bank.  ``decide`` may answer ``p = None`` while no p-value is possible yet (a cold
    bank), with the decision the caller's warm-up policy chose."""

    async def first_step(self, question_id: str, sample_index: int) -> ScoredDraft | None: ...

    async def decide(
        self, question_id: str, round_index: int, score: float, *, own_in_bank: bool
    ) -> tuple[float | None, Decision]: ...

    def add(self, question_id: str, score: float) -> None: ...


class CalibrationError(ValueError):
    """The bank cannot support a decision at this alpha; the message says what to change."""


class Calibrator:
    def __init__(
        self,
        config: RunConfig,
        draft_and_score: DraftAndScore,
        *,
        initial_scores: Iterable[float] = (),
        recorded: dict[str, dict[int, float]] | None = None,
        strata_scores: dict[int, list[float]] | None = None,
    ) -> None:
        """``initial_scores``: a loaded bank (file mode).  ``recorded``: per question and
        sample index, the calibration scores of samples finished in an earlier session.
        ``strata_scores``: per round, the judged scores of those samples (round strata)."""
        self._config = config
        self._thresholds = Thresholds(config.alpha, config.alpha_discard)
        self._draft_and_score = draft_and_score
        mode = "question" if config.calibration == "question" else "marginal"
        self._banks = BankSet("round" if config.strata == "round" else mode)
        self._recorded = recorded or {}
        self._prepasses: dict[str, asyncio.Task[None]] = {}
        self._stash: dict[tuple[str, int], asyncio.Future[ScoredDraft]] = {}
        self._warmup: asyncio.Task[None] | None = None
        initial = list(initial_scores)
        if initial:
            self._banks.add(initial, question_id="", round_index=0)
        if config.calibration == "marginal":
            for by_sample in self._recorded.values():
                self._banks.add(list(by_sample.values()), question_id="", round_index=0)
        for round_index, judged in (strata_scores or {}).items():
            self._banks.add(judged, question_id="", round_index=round_index)
        if config.calibration == "file":
            self._require_size(len(initial), "the calibration file")

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    def bank_sizes(self) -> dict[str, int]:
        return {str(key): size for key, size in self._banks.sizes().items()}

    def start_warmup(self, pending: list[tuple[str, int]]) -> None:
        """Marginal mode: pre-draft the first steps of the first unfinished samples until the
        pooled bank holds ``warmup`` scores.  Call once, before the samples start."""
        if self._config.calibration != "marginal" or self._warmup is not None:
            return
        have = len(self._banks.bank("", 0))
        wanted = pending[: max(0, self._config.warmup - have)]
        futures = [self._future(key) for key in wanted]
        self._warmup = asyncio.ensure_future(self._fill(wanted, futures, question_id=""))

    async def first_step(self, question_id: str, sample_index: int) -> ScoredDraft | None:
        """The pre-drafted first step of this sample, or None when it drafts its own."""
        mode = self._config.calibration
        if mode == "question":
            self._ensure_prepass(question_id)
        key = (question_id, sample_index)
        future = self._stash.get(key)
        return None if future is None else await future

    async def decide(
        self, question_id: str, round_index: int, score: float, *, own_in_bank: bool
    ) -> tuple[float, Decision]:
        """The conformal p-value of a draft step's score and its ordinal decision."""
        await self._ready(question_id)
        group = question_id if self._config.calibration == "question" else ""
        snapshot = self._banks.snapshot(group, round_index)
        stratified = self._config.strata == "round" and round_index > 0
        if stratified and snapshot.n < self._config.warmup:
            snapshot = self._banks.snapshot(group, 0)  # this round's stratum is still cold
        n = snapshot.n
        if own_in_bank:
            self._require_size(n - 1, f"the bank of {question_id!r} (one left out)")
            # (n + 1) p is the integer count 1 + #{s_i >= s}, own score included.
            count = round((n + 1) * float(snapshot.p_value(score)))
            p = (count - 1) / n  # = (1 + #{others >= s}) / ((n - 1) + 1)
        else:
            self._require_size(n, f"the bank of {question_id!r}")
            p = float(snapshot.p_value(score))
        if self._config.strata == "round" and not own_in_bank:
            self._banks.add(score, question_id=group, round_index=round_index)
        return p, self._thresholds.classify(p)

    def add(self, question_id: str, score: float) -> None:
        group = question_id if self._config.calibration == "question" else ""
        self._banks.add(score, question_id=group, round_index=0)

    def _require_size(self, n: int, where: str) -> None:
        needed = min_bank_size(self._config.alpha)
        if n < needed:
            raise CalibrationError(
                f"{where} holds {n} scores, but alpha={self._config.alpha} needs at least "
                f"{needed} (n + 1 >= 1/alpha), or no step could ever be rejected; "
                "raise calibration_m / warmup, use a larger calibration file, or raise alpha"
            )

    async def _ready(self, question_id: str) -> None:
        mode = self._config.calibration
        if mode == "question":
            self._ensure_prepass(question_id)
            await asyncio.shield(self._prepasses[question_id])
        elif mode == "marginal" and self._warmup is not None:
            await asyncio.shield(self._warmup)

    def _ensure_prepass(self, question_id: str) -> None:
        if question_id in self._prepasses:
            return
        recorded = self._recorded.get(question_id, {})
        if recorded:
            self._banks.add(list(recorded.values()), question_id=question_id, round_index=0)
        # Samples whose first step is already in the bank (finished earlier) are not redrafted;
        # the rest of 0..m-1 are, by their own seeds, and reused as their first steps.
        wanted = [
            (question_id, s) for s in range(self._config.calibration_m) if s not in recorded
        ]
        futures = [self._future(key) for key in wanted]
        self._prepasses[question_id] = asyncio.ensure_future(
            self._fill(wanted, futures, question_id=question_id)
        )

    def _future(self, key: tuple[str, int]) -> asyncio.Future[ScoredDraft]:
        future: asyncio.Future[ScoredDraft] = asyncio.get_running_loop().create_future()
        self._stash[key] = future
        return future

    async def _fill(
        self,
        keys: list[tuple[str, int]],
        futures: list[asyncio.Future[ScoredDraft]],
        *,
        question_id: str,
    ) -> None:
        async def one(key: tuple[str, int], future: asyncio.Future[ScoredDraft]) -> None:
            try:
                drafted = await self._draft_and_score(*key)
            except BaseException as err:
                future.set_exception(err)
                raise
            if drafted.score is not None:
                self._banks.add(drafted.score.perplexity, question_id=question_id, round_index=0)
            future.set_result(drafted)

        results = await asyncio.gather(
            *(one(k, f) for k, f in zip(keys, futures, strict=True)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for future in futures:  # mark retrieved: the samples that own them re-raise
            if future.done() and not future.cancelled():
                future.exception()
        if failures and len(failures) == len(results):
            raise failures[0]


def scores_array(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)
