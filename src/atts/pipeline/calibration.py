"""Online calibration of a run: when the bank a decision sees is ready, and the run's Decider.

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

The decisions themselves are the ``Decider``'s (``atts.conformal.decider``), built here from
the run's settings by ``step_decider``: this module only waits for the pre-passes (``ready``),
so ``atts replay`` asks the same Decider the same questions offline, with the same pre-pass
keys (``prepass_keys``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from atts.config import RunConfig
from atts.conformal import (
    Decider,
    Decision,
    DecisionKey,
    DecisionPolicy,
    StrataBanks,
    Thresholds,
    min_bank_size,
)
from atts.conformal.pvalue import CalibrationError
from atts.engines.base import Generation, StepScore

__all__ = ["CalibrationError", "Calibrator", "CalibratorLike", "ScoredDraft", "prepass_keys",
           "step_banks", "step_decider", "warmup_order"]

POOLED_WARMUP = ("marginal", "adaptive")  # modes whose first decision waits for a warm-up
SampleKey = tuple[str, int]  # (question_id, sample_index)


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
    """What the atts strategy asks of calibration: a run's ``Calibrator`` or the server's
    shared online bank.  ``ready`` returns once the bank that judges the question may be read;
    then ``decider.decide`` judges the step."""

    decider: Decider

    async def first_step(self, question_id: str, sample_index: int) -> ScoredDraft | None: ...

    async def ready(self, question_id: str) -> None: ...


def step_banks(config: RunConfig, initial_scores: Iterable[float] = ()) -> StrataBanks:
    """The banks of a run's (or a replay's) draft steps under ``config``; ``initial_scores``:
    a loaded calibration file."""
    adaptive = config.calibration == "adaptive"
    return StrataBanks(
        per_question=config.calibration == "question", strata=config.bank_strata,
        warmup_size=config.warmup_size, min_bank=min_bank_size(config.alpha),
        online=adaptive or config.bank_strata != "none", grow=config.grow_bank,
        initial=initial_scores)


def step_decider(config: RunConfig, banks: StrataBanks, *,
                 planned: Callable[[DecisionKey], Decision] | None = None) -> Decider:
    """The Decider of a run's (or a replay's) draft steps under ``config``, on ``banks``."""
    adaptive = config.calibration == "adaptive"
    policy = DecisionPolicy(
        Thresholds(config.alpha, config.discard_level), adaptive=adaptive,
        gamma=config.adaptive_gamma, level_strata=config.adaptive_strata,
        smoothed=config.pvalue == "smoothed", seed=config.seed,
        fix="raise calibration_m / warmup, use a larger calibration file, or raise alpha")
    return Decider(policy, banks, planned=planned)


def warmup_order(pending: Sequence[SampleKey]) -> list[SampleKey]:
    """The (question, sample) keys round-robin over questions, in order of first appearance:
    q0 s0, q1 s0, ..., q0 s1, ...  A warm-up drawn this way spans the questions instead of
    filling from the first one or two admitted (samples are admitted question by question)."""
    queues: dict[str, list[SampleKey]] = {}
    for key in pending:
        queues.setdefault(key[0], []).append(key)
    depth = max((len(q) for q in queues.values()), default=0)
    return [q[i] for i in range(depth) for q in queues.values() if i < len(q)]


def prepass_keys(config: RunConfig, samples: Sequence[SampleKey], have: int = 0
                 ) -> list[SampleKey]:
    """The keys whose first step is drafted and scored before the first decision, and judged
    leave-one-out against the bank it joined:

    - question mode: samples 0..m-1 of every question in ``samples``;
    - marginal and adaptive: the first ``warmup_size - have`` keys of ``warmup_order``, then,
      for a run of fewer samples than the warm-up (a quick look at one question), calibration-
      only first steps seeded like samples N, N+1, ... of its questions (as question mode does
      for m > N), so its first decision has a bank.
    """
    questions = list(dict.fromkeys(q for q, _ in samples))
    if config.calibration == "question":
        return [(q, s) for q in questions for s in range(config.calibration_m)]
    if config.calibration not in POOLED_WARMUP:
        return []
    extra = [(q, config.samples + j) for j in range(config.warmup_size) for q in questions]
    return (warmup_order(samples) + extra)[: max(0, config.warmup_size - have)]


class Calibrator:
    def __init__(
        self,
        config: RunConfig,
        draft_and_score: DraftAndScore,
        *,
        initial_scores: Iterable[float] = (),
        recorded: dict[str, dict[int, float]] | None = None,
        strata_scores: dict[int, list[float]] | None = None,
        recorded_decisions: Iterable[tuple[DecisionKey, bool]] = (),
        planned: Callable[[DecisionKey], Decision] | None = None,
    ) -> None:
        """``initial_scores``: a loaded bank (file mode).  ``recorded``: per question and
        sample index, the calibration scores of samples finished in an earlier session.
        ``strata_scores``: per round, the judged scores of those samples (online modes).
        ``recorded_decisions``: their (key, rejected) in decision order, which restore the
        adaptive levels.  ``planned``: the simulator's decisions (``Decider``)."""
        self._config = config
        self._banks = step_banks(config, initial_scores)
        self.decider = step_decider(config, self._banks, planned=planned)
        self._draft_and_score = draft_and_score
        self._recorded = recorded or {}
        self._prepasses: dict[str, asyncio.Task[None]] = {}
        self._stash: dict[SampleKey, asyncio.Future[ScoredDraft]] = {}
        self._warmup: asyncio.Task[None] | None = None
        if config.calibration in POOLED_WARMUP:
            for by_sample in self._recorded.values():
                self._banks.add("", list(by_sample.values()))
        for round_index, judged in (strata_scores or {}).items():
            self._banks.add_round(round_index, judged)
        for key, rejected in recorded_decisions:
            self.decider.restore(key, rejected)
        if config.calibration == "file":
            self.decider.require(self._banks.size(), "the calibration file")

    def start_warmup(self, pending: list[SampleKey]) -> None:
        """Marginal and adaptive modes: pre-draft first steps of unfinished samples
        (``prepass_keys``) until the pooled bank holds ``warmup`` scores.  Call once, before
        the samples start."""
        if self._config.calibration not in POOLED_WARMUP or self._warmup is not None:
            return
        wanted = prepass_keys(self._config, pending, have=self._banks.size())
        futures = [self._future(key) for key in wanted]
        self._warmup = asyncio.ensure_future(self._fill(wanted, futures, question_id=""))

    async def first_step(self, question_id: str, sample_index: int) -> ScoredDraft | None:
        """The pre-drafted first step of this sample, or None when it drafts its own."""
        if self._config.calibration == "question":
            self._ensure_prepass(question_id)
        future = self._stash.get((question_id, sample_index))
        return None if future is None else await future

    async def ready(self, question_id: str) -> None:
        """Wait until the bank that judges ``question_id``'s steps holds its pre-pass."""
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
            self._banks.add(question_id, list(recorded.values()))
        # Samples whose first step is already in the bank (finished earlier) are not redrafted;
        # the rest of 0..m-1 are, by their own seeds, and reused as their first steps.
        wanted = [key for key in prepass_keys(self._config, [(question_id, 0)])
                  if key[1] not in recorded]
        futures = [self._future(key) for key in wanted]
        self._prepasses[question_id] = asyncio.ensure_future(
            self._fill(wanted, futures, question_id=question_id)
        )

    def _future(self, key: SampleKey) -> asyncio.Future[ScoredDraft]:
        future: asyncio.Future[ScoredDraft] = asyncio.get_running_loop().create_future()
        self._stash[key] = future
        return future

    async def _fill(
        self,
        keys: list[SampleKey],
        futures: list[asyncio.Future[ScoredDraft]],
        *,
        question_id: str,
    ) -> None:
        async def one(key: SampleKey, future: asyncio.Future[ScoredDraft]) -> None:
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
                self._banks.add(question_id, drafted.value)
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
