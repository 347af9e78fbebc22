"""The runner: the only place that fans out sample tasks and hands finished samples to the
run folder.

Every (question, sample) is its own asyncio task from the start.  Under ``atts`` (and the
single-model baselines) the only waits are a sample slot (``max_active_samples``, which bounds
KV memory and the work a kill can lose) and engine capacity (one concurrency limit per engine,
in ``GuardedEngine``): no per-round and no per-question barrier.  Under ``sync`` the samples of
a question are admitted together and meet at a barrier every round, as the baseline demands.

An engine failure that survives the retries ends only its own sample, which is written as an
error row; the run goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.data import Problem
from atts.engines.base import Engine
from atts.engines.call_stats import CallStats
from atts.pipeline.calibration import Calibrator, ScoredDraft
from atts.pipeline.executor import (
    TokenizerMismatchError as TokenizerMismatchError,  # raised for the runner's callers
)
from atts.pipeline.executor import check_tokenizers, execute_sample, guarded_pair
from atts.pipeline.prompt import question_messages
from atts.pipeline.sample import (
    SampleEnv,
    SampleSpec,
    SampleState,
    derive_seed,
)
from atts.pipeline.strategies import STRATEGIES, draft_and_score
from atts.pipeline.trace import REJECTED, SampleTrace, steps_of
from atts.runner.progress import Progress
from atts.runner.run_folder import RunFolder


@dataclass(frozen=True)
class RunOutcome:
    total: int  # samples in the run
    skipped: int  # already in the run folder (resume)
    written: int  # finished in this session
    errors: int
    wall_seconds: float
    # CPU time of the whole process (every thread) over the session, and what it means in
    # cores kept busy: how the compute budget was spent, beside the budget in the manifest.
    cpu_seconds: float
    cores_used: float
    draft_peak_in_flight: int
    target_peak_in_flight: int
    retries: int
    # How each in-process engine spent its calls this session (atts.engines.call_stats):
    # role ("draft", "target", or "shared" when one engine plays both) -> CallStats.to_dict.
    engine_calls: dict[str, dict[str, Any]] = field(default_factory=dict)


def sample_specs(config: RunConfig, problems: Sequence[Problem]) -> list[SampleSpec]:
    return [
        SampleSpec(p.id, p.dataset, p.question, p.gold, s, derive_seed(config.seed, p.id, s))
        for p in problems
        for s in range(config.samples)
    ]


def recorded_calibration(rows: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Calibration scores of samples finished in an earlier session, to rebuild the banks."""
    recorded: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get("status") != "ok":
            continue
        for step in steps_of(row):
            if step.calibration and step.score is not None:
                recorded[str(row["question_id"])][int(row["sample_index"])] = float(step.score)
    return dict(recorded)


def recorded_strata(rows: Sequence[dict[str, Any]]) -> dict[int, list[float]]:
    """Judged draft-step scores of finished samples per round, to rebuild round strata."""
    strata: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("status") != "ok":
            continue
        for step in steps_of(row):
            if step.judged and step.score is not None and not step.calibration:
                strata[step.round].append(float(step.score))
    return dict(strata)


def recorded_decisions(rows: Sequence[dict[str, Any]], source: Path
                       ) -> list[tuple[str, int, bool]]:
    """(question, round, rejected) of every judged step of finished samples, in the order the
    earlier sessions decided them (``atts.replay.stream``), to restore the adaptive levels."""
    from atts.replay.stream import judged_in_order

    return [(s.question_id, s.round, s.decision in REJECTED)
            for s in judged_in_order(list(rows), source)]


async def execute(
    config: RunConfig,
    problems: Sequence[Problem],
    draft: Engine,
    target: Engine,
    folder: RunFolder,
    *,
    bank_scores: Sequence[float] = (),
    retry_failed: bool = False,
    show_progress: bool = True,
    on_sample: Callable[[SampleTrace], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    calibrator_factory: Callable[..., Calibrator] = Calibrator,
) -> RunOutcome:
    """Run every pending sample of ``problems`` into ``folder``.  ``clock``: the monotonic
    clock samples time their steps with (the simulator's virtual one, atts.perf.replay);
    ``calibrator_factory``: builds the run's calibrator from ``Calibrator``'s arguments."""
    started, cpu_clock = clock(), time.process_time()
    calls_before = engine_calls(draft, target)
    specs = sample_specs(config, problems)
    rows = folder.rows()
    done = {
        (str(r["question_id"]), int(r["sample_index"]))
        for r in rows
        if retry_failed is False or r.get("status") == "ok"
    }
    pending = [s for s in specs if (s.question_id, s.sample_index) not in done]
    guarded_draft, guarded_target = guarded_pair(config, draft, target)
    prompts: dict[str, list[int]] = {}

    def prompt_ids(question: str) -> list[int]:
        if question not in prompts:
            prompts[question] = target.render_chat(question_messages(question))
        return prompts[question]

    if problems:  # the run's own first prompt, rendered by both
        check_tokenizers(draft, target, problems[0].question)
    spec_by_key = {(s.question_id, s.sample_index): s for s in specs}
    problem_by_id = {p.id: p for p in problems}

    async def calibration_draft(question_id: str, sample_index: int) -> ScoredDraft:
        spec = spec_by_key.get((question_id, sample_index))
        if spec is None:  # m > N: a calibration-only first step, seeded like a sample
            p = problem_by_id[question_id]
            seed = derive_seed(config.seed, p.id, sample_index)
            spec = SampleSpec(p.id, p.dataset, p.question, p.gold, sample_index, seed)
        state = SampleState(spec, list(prompt_ids(spec.question)), started=clock(), now=clock)
        return await draft_and_score(state, env, 0)

    strategy = STRATEGIES[config.strategy]
    calibrator = (_calibrator(config, calibration_draft, rows, folder, bank_scores,
                              calibrator_factory)
                  if strategy.calibrated else None)
    coordinator = strategy.coordinator(config)
    env = SampleEnv(
        config=config,
        draft=guarded_draft,
        target=guarded_target,
        calibrator=calibrator,
        prompt_ids=prompt_ids,
        context_length=min(draft.info.context_length, target.info.context_length),
        coordinator=coordinator,
        clock=clock,
        wall_offset=time.time() - clock(),
    )
    body = strategy.round_body
    progress = Progress(total=len(specs), initial=len(specs) - len(pending), enabled=show_progress)
    errors = 0

    async def one(spec: SampleSpec) -> None:
        nonlocal errors
        try:
            trace = await execute_sample(spec, env, body)
        finally:
            if coordinator is not None:
                coordinator.leave(spec.question_id)
        errors += trace.status == "error"
        folder.append_trace(trace)
        progress.update(trace)
        if on_sample is not None:
            on_sample(trace)

    if calibrator is not None:
        calibrator.start_warmup([(s.question_id, s.sample_index) for s in pending])
    if coordinator is not None:
        for spec in pending:
            coordinator.join(spec.question_id)
    try:
        await admit_all(pending, one, max_active=config.max_active_samples,
                        by_question=strategy.barrier or config.admission == "question")
    finally:
        progress.close()
        if calibrator is not None:
            await calibrator.aclose()
    wall, cpu = clock() - started, time.process_time() - cpu_clock
    return RunOutcome(
        total=len(specs),
        skipped=len(specs) - len(pending),
        written=len(pending),
        errors=errors,
        wall_seconds=wall,
        cpu_seconds=cpu,
        cores_used=cpu / wall if wall > 0 else 0.0,
        draft_peak_in_flight=guarded_draft.peak_in_flight,
        target_peak_in_flight=guarded_target.peak_in_flight,
        retries=guarded_draft.retries + guarded_target.retries,
        engine_calls={role: stats.since(calls_before[role]).to_dict(wall)
                      for role, stats in engine_calls(draft, target).items()},
    )


def engine_calls(draft: Engine, target: Engine) -> dict[str, CallStats]:
    """Each engine's call totals so far, by role.  Only the llama.cpp engine keeps them (its
    ``call_stats``); the others (servers, transformers, the fakes) are left out.  ``execute``
    is handed the engines themselves, never a wrapper that would hide the attribute."""
    roles = {"shared": draft} if draft is target else {"draft": draft, "target": target}
    out = {}
    for role, engine in roles.items():
        stats = getattr(engine, "call_stats", None)  # an optional part of the Engine protocol
        if isinstance(stats, CallStats):
            out[role] = stats
    return out


def _calibrator(config: RunConfig, draft_and_score_first: Callable[[str, int], Any],
                rows: Sequence[dict[str, Any]], folder: RunFolder,
                bank_scores: Sequence[float],
                factory: Callable[..., Calibrator] = Calibrator) -> Calibrator:
    """The run's calibrator, resumed from the rows already written."""
    return factory(
        config,
        draft_and_score_first,
        initial_scores=bank_scores,
        recorded=recorded_calibration(rows) if config.calibration != "file" else None,
        strata_scores=(recorded_strata(rows) if config.bank_strata != "none"
                       or config.calibration == "adaptive" else None),
        recorded_decisions=(recorded_decisions(rows, folder.samples_path)
                            if config.calibration == "adaptive" else ()),
    )


async def admit_all(pending: Sequence[SampleSpec],
                    one: Callable[[SampleSpec], Awaitable[None]], *, max_active: int,
                    by_question: bool) -> None:
    """Run ``one`` for every pending sample, at most ``max_active`` at a time.

    ``by_question``: a question's samples take their slots together, under one lock (two
    groups each holding part of what they need would deadlock): a barrier strategy (sync)
    needs every live sample of a question in flight at once, and ``admission = question``
    asks for the authors' schedule."""
    slots = asyncio.Semaphore(max_active)
    if not by_question:
        async def admit_sample(spec: SampleSpec) -> None:
            async with slots:
                await one(spec)

        await asyncio.gather(*(admit_sample(spec) for spec in pending))
        return
    admission = asyncio.Lock()

    async def admit_question(group: list[SampleSpec]) -> None:
        taken = min(len(group), max_active)
        async with admission:
            for _ in range(taken):
                await slots.acquire()
        try:
            await asyncio.gather(*(one(spec) for spec in group))
        finally:
            for _ in range(taken):
                slots.release()

    groups: dict[str, list[SampleSpec]] = defaultdict(list)
    for spec in pending:
        groups[spec.question_id].append(spec)
    await asyncio.gather(*(admit_question(g) for g in groups.values()))
