"""Online calibration of a run: when the bank a decision sees is ready.

Four modes (docs/METHOD.md section 3), chosen by ``RunConfig.calibration``:

- ``question`` (conditional coverage): for each question, m first steps are drafted and scored
  before its rounds start (a pre-pass of m concurrent drafts), and they *are* the first steps of
  samples 0..m-1, so calibration costs no extra drafting.  Only samples of that question wait
  for its pre-pass; nothing else does.
- ``marginal``: one bank pooled over questions.  A warm-up pre-pass drafts and scores the first
  steps of ``warmup`` unfinished samples drawn round-robin across questions (again reused as
  their first steps); the first decision waits for it.  Everything else runs meanwhile.
- ``adaptive``: the marginal warm-up, an online bank, and a working level per round bucket
  that tracks alpha (adaptive conformal inference, ``atts.conformal.aci``).
- ``file``: a bank made by ``atts calibrate`` on a disjoint pool, checked by fingerprint.

Which bank and level judge a step, the strata, and the p-values (deterministic or smoothed,
leave-one-out for a pre-pass step) live in ``atts.pipeline.judge``: this module only waits for
the pre-passes and then asks the ``Judge``, so ``atts replay`` can ask it the same questions
offline.  With ``grow_bank`` every judged draft step is added after its decision (decide first,
then add: the online conformal order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from atts.config import RunConfig
from atts.conformal import Decision
from atts.conformal.pvalue import CalibrationError
from atts.engines.base import Generation, StepScore
from atts.pipeline.judge import Judge, warmup_order

__all__ = ["CalibrationError", "Calibrator", "CalibratorLike", "ScoredDraft"]

POOLED_WARMUP = ("marginal", "adaptive")  # modes whose first decision waits for a warm-up


@dataclass(frozen=True)
class ScoredDraft:
    """A drafted step, the target's scoring pass over it, and the run's nonconformity score of
    it (``RunConfig.score``; atts.conformal.scores).  Both None for an empty step."""

    generation: Generation
    score: StepScore | None
    value: float | None = None


# (question_id, sample_index) -> that sample's drafted and scored first step.
DraftAndScore = Callable[[str, int], Awaitable[ScoredDraft]]


class CalibratorLike(Protocol):
    """What the strategies ask of calibration: a run's ``Calibrator`` or the server's shared
    online bank.  ``decide`` may answer ``p = None`` while no p-value is possible yet (a cold
    bank), with the decision the caller's warm-up policy chose."""

    async def first_step(self, question_id: str, sample_index: int) -> ScoredDraft | None: ...

    async def decide(
        self,
        question_id: str,
        round_index: int,
        score: float,
        *,
        own_in_bank: bool,
        sample_index: int = 0,
    ) -> tuple[float | None, Decision]: ...

    def add(self, question_id: str, score: float) -> None: ...


class Calibrator:
    def __init__(
        self,
        config: RunConfig,
        draft_and_score: DraftAndScore,
        *,
        initial_scores: Iterable[float] = (),
        recorded: dict[str, dict[int, float]] | None = None,
        strata_scores: dict[int, list[float]] | None = None,
        recorded_decisions: Iterable[tuple[str, int, bool]] = (),
    ) -> None:
        """``initial_scores``: a loaded bank (file mode).  ``recorded``: per question and
        sample index, the calibration scores of samples finished in an earlier session.
        ``strata_scores``: per round, the judged scores of those samples (online modes).
        ``recorded_decisions``: their (question, round, rejected) in decision order, which
        restore the adaptive levels."""
        self._config = config
        self._judge = Judge(config, initial_scores)
        self._draft_and_score = draft_and_score
        self._recorded = recorded or {}
        self._prepasses: dict[str, asyncio.Task[None]] = {}
        self._stash: dict[tuple[str, int], asyncio.Future[ScoredDraft]] = {}
        self._warmup: asyncio.Task[None] | None = None
        if config.calibration in POOLED_WARMUP:
            for by_sample in self._recorded.values():
                self._judge.add("", list(by_sample.values()))
        for round_index, judged in (strata_scores or {}).items():
            self._judge.add_round(round_index, judged)
        for question_id, round_index, rejected in recorded_decisions:
            self._judge.restore_level(question_id, round_index, rejected)
        if config.calibration == "file":
            self._judge.require_size(self._judge.size(""), "the calibration file")

    @property
    def judge(self) -> Judge:
        return self._judge

    def start_warmup(self, pending: list[tuple[str, int]]) -> None:
        """Marginal and adaptive modes: pre-draft first steps of unfinished samples, drawn
        round-robin across questions (``warmup_order``), until the pooled bank holds
        ``warmup`` scores.  Call once, before the samples start."""
        if self._config.calibration not in POOLED_WARMUP or self._warmup is not None:
            return
        have = self._judge.size("")
        # A run of fewer samples than the warm-up (a quick look at one question) drafts the
        # rest as calibration-only first steps, seeded like samples N, N+1, ... of its
        # questions (as question mode does for m > N), so its first decision has a bank.
        questions = list(dict.fromkeys(q for q, _ in pending))
        extra = [(q, self._config.samples + j) for j in range(self._config.warmup_size)
                 for q in questions]
        wanted = (warmup_order(pending) + extra)[: max(0, self._config.warmup_size - have)]
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
        self,
        question_id: str,
        round_index: int,
        score: float,
        *,
        own_in_bank: bool,
        sample_index: int = 0,
    ) -> tuple[float, Decision]:
        """The conformal p-value of a draft step's score and its ordinal decision."""
        await self._ready(question_id)
        return self._judge.decide(question_id, round_index, score, own_in_bank=own_in_bank,
                                  sample_index=sample_index)

    def add(self, question_id: str, score: float) -> None:
        self._judge.add(question_id, score)

    async def _ready(self, question_id: str) -> None:
        mode = self._config.calibration
        if mode == "question":
            self._ensure_prepass(question_id)
            await asyncio.shield(self._prepasses[question_id])
        elif mode in POOLED_WARMUP and self._warmup is not None:
            await asyncio.shield(self._warmup)

    async def aclose(self) -> None:
        """Stop the pre-drafting still in flight (an interrupted or failed run) and wait for
        it, so that nothing drafts on engines about to close and no failure goes unread."""
        tasks = [t for t in (self._warmup, *self._prepasses.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ensure_prepass(self, question_id: str) -> None:
        if question_id in self._prepasses:
            return
        recorded = self._recorded.get(question_id, {})
        if recorded:
            self._judge.add(question_id, list(recorded.values()))
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
            # A future may be settled already: its sample was cancelled (an interrupted run)
            # and took it down with it; a cancelled fill cancels its futures, not fails them.
            try:
                drafted = await self._draft_and_score(*key)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as err:
                if not future.done():
                    future.set_exception(err)
                raise
            if drafted.value is not None:
                self._judge.add(question_id, drafted.value)
            if not future.done():
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
