"""The strategies, each one round body of one shared signature, chosen by name.

- ``atts``: draft a step, score it with the target (one prefill over every step token; the
  nonconformity score is ``RunConfig.score``, by default the step perplexity), decide
  by its conformal p-value alone (accept / target continues / target regenerates), and let the
  target write when told to.  No sibling is consulted, so no sample ever waits for another.
- ``sync``: the synchronous baseline ATTS removes: every round, the live samples of a question
  all draft and score, wait at a barrier, and the ``sync_budget`` worst-scored steps (highest
  score) go to the target.  The slowest sample sets every round's pace.
- ``judge``: the SpecReason baseline, the target rates each draft step 0-9 and regenerates
  the low-rated ones (``atts.pipeline.rating``).
- ``target_only`` / ``draft_only``: the same loop with one model writing every step.
- ``cascade`` / ``atts_cascade``: the draft (or ATTS) writes a question's N samples; if their
  answers disagree, the question escalates and the target writes N samples of its own
  (``atts.pipeline.escalation``; the runner schedules them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TypedDict

from atts.config import RunConfig
from atts.conformal import Decision, DecisionKey
from atts.conformal.scores import step_score
from atts.pipeline.barrier import SyncCoordinator
from atts.pipeline.calibration import CalibratorLike, ScoredDraft
from atts.pipeline.rating import judge_round
from atts.pipeline.sample import (
    RoundBody,
    SampleEnv,
    SampleState,
    prefill_tokens,
    target_turn,
    write_step,
)
from atts.pipeline.trace import Step


async def draft_and_score(state: SampleState, env: SampleEnv, round_index: int) -> ScoredDraft:
    """The draft writes a step; the target scores every one of its tokens (one prefill); the
    run's nonconformity score is computed from that pass (and the draft's own log-probabilities
    for ``llr``)."""
    config = env.config
    params = state.step_params(config, "draft", round_index)
    if config.draft_logprobs:
        params = dataclasses.replace(params, logprobs=True)
    generation = await env.draft.generate(state.ids, params)
    if not generation.token_ids:
        return ScoredDraft(generation, None)
    score = await env.target.score(state.ids, generation.token_ids,
                                   cache_key=state.spec.cache_key)
    value = step_score(config.score, score.logprobs, generation.logprobs, k=config.score_k)
    return ScoredDraft(generation, score, value)


async def _first_or_drafted(
    state: SampleState, env: SampleEnv, round_index: int
) -> tuple[ScoredDraft, bool]:
    """This round's scored draft step, and whether it is a pre-pass step: a first step drafted
    by calibration, whose score is in the bank already (judged leave-one-out)."""
    if round_index == 0:
        stashed = await _calibrator(env).first_step(
            state.spec.question_id, state.spec.sample_index
        )
        if stashed is not None:
            return stashed, True
    return await draft_and_score(state, env, round_index), False


def _calibrator(env: SampleEnv) -> CalibratorLike:
    if env.calibrator is None:
        raise ValueError("the atts strategy needs a calibrator in its SampleEnv")
    return env.calibrator


class _ScoringCounters(TypedDict):
    """The ``Step`` fields a drafted step's two calls fill (checked against Step by mypy)."""

    seconds: float
    score_tokens: int
    score_seconds: float


def _scoring(drafted: ScoredDraft) -> _ScoringCounters:
    """A drafted step's calls as its ``Step`` records them: both calls' seconds, and the
    scoring pass's tokens and seconds apart."""
    score = drafted.score
    return {"seconds": drafted.generation.seconds + (score.seconds if score else 0.0),
            "score_tokens": len(score.logprobs) if score else 0,
            "score_seconds": score.seconds if score else 0.0}


async def atts_round(state: SampleState, env: SampleEnv, round_index: int) -> None:
    drafted, prepass = await _first_or_drafted(state, env, round_index)
    generation = drafted.generation
    if drafted.score is None:  # an empty step (the draft ended its message at once)
        state.append(Step(round_index, "draft", "", 0, t=state.elapsed(), **_scoring(drafted)),
                     generation)
        return
    value = drafted.value
    assert value is not None  # a scored step has a score value
    calibrator = _calibrator(env)
    await calibrator.ready(state.spec.question_id)
    key = DecisionKey(state.spec.question_id, state.spec.sample_index, round_index)
    verdict = calibrator.decider.decide(key, value, own_in_bank=prepass)
    decision = verdict.decision
    decided_at = state.elapsed()
    step = Step(
        round_index, "draft", generation.text, len(generation.token_ids),
        kept=decision is not Decision.REGENERATE, score=value, p_value=verdict.p_value,
        decision=decision.value, calibration=prepass, order=verdict.index, **_scoring(drafted),
        prefill_tokens=prefill_tokens(generation.prompt_tokens, generation, drafted.score),
        t=decided_at,
    )
    if decision is Decision.REGENERATE:
        state.steps.append(step)  # recorded in the trace, not in the text
    else:
        state.append(step, generation)
    if decision is not Decision.ACCEPT:
        state.reopen()  # a rejected step that ended the message: the target continues it
        await target_turn(state, env, round_index)


async def sync_round(state: SampleState, env: SampleEnv, round_index: int) -> None:
    coordinator = env.coordinator
    if coordinator is None:
        raise ValueError("the sync strategy needs a SyncCoordinator in its SampleEnv")
    drafted = await draft_and_score(state, env, round_index)
    generation = drafted.generation
    value = drafted.value if drafted.value is not None else -math.inf  # empty: never the worst
    rejected = await coordinator.rank(state.spec.question_id, value)
    decision = Decision.CONTINUE if rejected else Decision.ACCEPT
    state.append(
        Step(
            round_index, "draft", generation.text, len(generation.token_ids),
            score=drafted.value, decision=decision.value, **_scoring(drafted),
            prefill_tokens=prefill_tokens(generation.prompt_tokens, generation, drafted.score),
            t=state.elapsed(),
        ),
        generation,
    )
    if rejected:
        state.reopen()
        await target_turn(state, env, round_index)


async def target_only_round(state: SampleState, env: SampleEnv, round_index: int) -> None:
    await target_turn(state, env, round_index)


async def draft_only_round(state: SampleState, env: SampleEnv, round_index: int) -> None:
    step, generation = await write_step(state, env, "draft", round_index)
    state.append(step, generation)


@dataclass(frozen=True)
class Strategy:
    """A strategy as the runner reads it: how a round is written and what the run around it
    must provide, so no runner code tests for a strategy by name."""

    name: str
    round_body: RoundBody
    # Decides by the conformal test: the run builds a calibrator (and its warm-up pre-pass).
    calibrated: bool = False
    # A per-question round barrier (sync): every live sample of a question is admitted at
    # once, and the coordinator ranks each round's steps.
    barrier: bool = False
    # Question-level escalation (cascade, atts_cascade): a question whose first samples
    # disagree gets N target-only samples (atts.pipeline.escalation, atts.runner.escalating).
    escalates: bool = False

    def coordinator(self, config: RunConfig) -> SyncCoordinator | None:
        return SyncCoordinator(config.sync_budget) if self.barrier else None


STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        Strategy("atts", atts_round, calibrated=True),
        Strategy("sync", sync_round, barrier=True),
        Strategy("judge", judge_round),
        Strategy("target_only", target_only_round),
        Strategy("draft_only", draft_only_round),
        Strategy("cascade", draft_only_round, escalates=True),
        Strategy("atts_cascade", atts_round, calibrated=True, escalates=True),
    )
}
