"""The runner: the only place that fans out sample tasks and hands finished samples to the
run folder.

Every (question, sample) runs as its own asyncio task once it takes a sample slot
(``runner.admission``).  Under ``atts`` (and the single-model baselines) the only waits are a
sample slot (``max_active_samples``, which bounds KV memory and the work a kill can lose) and
engine capacity (one concurrency limit per engine, in ``GuardedEngine``): no per-round and no
per-question barrier.  Under ``sync`` the samples of a question are admitted together and meet
at a barrier every round, as the baseline demands.  Under the cascade strategies a question's
decision waits for its own first samples only, and its escalated target samples go ahead of
all waiting work (``runner.escalating``).

An engine failure that survives the retries ends only its own sample, which is written as an
error row; the run goes on.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from atts.config import RunConfig
from atts.conformal import Decision, DecisionKey
from atts.data import Problem
from atts.engines.base import Engine
from atts.engines.call_stats import CallStats
from atts.pipeline.calibration import Calibrator, ScoredDraft
from atts.pipeline.engine_pair import (
    TokenizerMismatchError as TokenizerMismatchError,  # raised for the runner's callers
)
from atts.pipeline.engine_pair import check_tokenizers, guarded_pair
from atts.pipeline.escalation import QuestionDecision
from atts.pipeline.sample import SampleEnv, SampleSpec, SampleState, execute_sample
from atts.pipeline.strategies import STRATEGIES, draft_and_score, target_only_round
from atts.pipeline.trace import SampleTrace
from atts.runner.admission import Admission
from atts.runner.escalating import EscalatingRun
from atts.runner.progress import Progress
from atts.runner.recorded import recorded_calibration, recorded_decisions, recorded_strata
from atts.runner.run_folder import RunFolder
from atts.seeds import derive_seed


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


def sample_specs(config: RunConfig, problems: Sequence[Problem],
                 skip: Callable[[tuple[str, int]], bool] = lambda key: False
                 ) -> Iterator[SampleSpec]:
    """Samples 0..N-1 of every problem, question by question, each seeded by (run seed,
    question, index), made one at a time (a run of a million samples holds none of them until
    its admission reads them); ``skip``: the (question, index) keys left out."""
    return (SampleSpec.of(p, s, derive_seed(config.seed, p.id, s))
            for p in problems for s in range(config.samples) if not skip((p.id, s)))


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
    planned: Callable[[DecisionKey], Decision] | None = None,
) -> RunOutcome:
    """Run every pending sample of ``problems`` into ``folder``.  ``clock``: the monotonic
    clock samples time their steps with (the simulator's virtual one, atts.perf.plan_run);
    ``planned``: decisions known in advance (the simulator's plans; ``Decider``)."""
    started, cpu_clock = clock(), time.process_time()
    calls_before = engine_calls(draft, target)
    rows = folder.rows()
    done = {
        (str(r["question_id"]), int(r["sample_index"]))
        for r in rows
        if retry_failed is False or r.get("status") == "ok"
    }
    problem_by_id = {p.id: p for p in problems}
    planned_samples = len(problems) * config.samples
    skipped = sum(1 for q, s in done if q in problem_by_id and 0 <= s < config.samples)
    n_pending = planned_samples - skipped
    strategy = STRATEGIES[config.strategy]
    tiers = (EscalatingRun(config, problems, rows, folder.question_rows())
             if strategy.escalates else None)
    escalated = tiers.pending(done) if tiers is not None else []
    guarded_draft, guarded_target = guarded_pair(config, draft, target)
    if problems:  # the run's own first prompt, rendered by both
        check_tokenizers(draft, target, problems[0].question)

    async def calibration_draft(question_id: str, sample_index: int) -> ScoredDraft:
        # A sample's first step, or (m > N) a calibration-only one seeded like a sample.
        spec = SampleSpec.of(problem_by_id[question_id], sample_index,
                             derive_seed(config.seed, question_id, sample_index))
        state = SampleState(spec, list(env.prompt_ids(spec.question)), started=clock(),
                            now=clock)
        return await draft_and_score(state, env, 0)

    calibrator = (_calibrator(config, calibration_draft, rows, folder, bank_scores, planned)
                  if strategy.calibrated else None)
    coordinator = strategy.coordinator(config)
    env = SampleEnv.build(config, guarded_draft, guarded_target, calibrator=calibrator,
                          coordinator=coordinator, clock=clock)
    # An escalated question's samples are target-only samples: target_only's settings
    # (the target forces their answers), the same engines and clock.
    target_env = dataclasses.replace(env, config=config.replace(strategy="target_only"),
                                     calibrator=None, coordinator=None)
    body = strategy.round_body
    total = planned_samples + config.samples * sum(d.escalated for d in
                                              (tiers.decided if tiers is not None else ()))
    progress = Progress(total=total, initial=total - n_pending - len(escalated),
                        enabled=show_progress)
    written = errors = 0

    def decided(decision: QuestionDecision) -> None:
        """Write a question's decision; an escalated one's target samples go first."""
        assert tiers is not None
        folder.append_question(decision.to_row())
        if decision.escalated:
            progress.grow(config.samples)
            admission.push(tiers.target_specs(decision.question_id), first=True)

    async def one(spec: SampleSpec) -> None:
        nonlocal errors, written
        escalated = tiers is not None and tiers.is_escalated(spec)
        try:
            if escalated:
                trace = dataclasses.replace(
                    await execute_sample(spec, target_env, target_only_round), escalated=True)
            else:
                trace = await execute_sample(spec, env, body)
        finally:
            if coordinator is not None:
                coordinator.leave(spec.question_id)
        errors += trace.status == "error"
        written += 1
        folder.append_trace(trace)
        progress.update(trace)
        if on_sample is not None:
            on_sample(trace)
        if tiers is not None and not escalated:
            for decision in tiers.on_first_sample(trace):
                decided(decision)

    admission: Admission[SampleSpec] = Admission(
        one, max_active=config.max_active_samples,
        by_question=strategy.barrier or config.admission == "question",
        question=lambda spec: spec.question_id)

    def pending() -> Iterator[SampleSpec]:
        return sample_specs(config, problems, skip=done.__contains__)

    if calibrator is not None:
        # The warm-up takes keys round-robin over questions (warmup_order), so it never needs
        # more than its own size from one question.
        calibrator.start_warmup([
            (p.id, s) for p in problems
            for s in itertools.islice((i for i in range(config.samples) if (p.id, i) not in done),
                                      config.warmup_size)])
    if coordinator is not None:
        for spec in pending():
            coordinator.join(spec.question_id)
    admission.push(escalated, first=True)
    admission.push(pending())
    if tiers is not None:
        for decision in tiers.undecided():
            decided(decision)
    try:
        await admission.run()
    finally:
        progress.close()
        if calibrator is not None:
            await calibrator.aclose()
    wall, cpu = clock() - started, time.process_time() - cpu_clock
    return RunOutcome(
        total=progress.total,
        skipped=skipped,
        written=written,
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
                planned: Callable[[DecisionKey], Decision] | None) -> Calibrator:
    """The run's calibrator, resumed from the rows already written."""
    return Calibrator(
        config,
        draft_and_score_first,
        initial_scores=bank_scores,
        recorded=recorded_calibration(rows) if config.calibration != "file" else None,
        strata_scores=(recorded_strata(rows) if config.bank_strata != "none"
                       or config.calibration == "adaptive" else None),
        recorded_decisions=(recorded_decisions(rows, folder.samples_path)
                            if config.calibration == "adaptive" else ()),
        planned=planned,
    )
