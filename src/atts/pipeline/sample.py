"""One sample's life: the round loop every strategy shares, and the state it carries.

A strategy only says how one round's step gets written (``RoundBody``); this loop owns the
rest (docs/METHOD.md sections 1-2): render the prompt once, keep the text as token ids end to end,
stop at the first final answer or after T rounds, budget forcing (an answer before
``min_rounds`` gets "Wait" appended; a sample that ends without one gets the answer cue and a
forced completion), and a clean stop before the context window overflows.  ``execute_sample``
runs one sample to its end and turns a failure for good into its error row (recorded, not
swallowed; a cancellation is not a failure and propagates).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from atts.config import RunConfig
from atts.data import Problem
from atts.engines.base import Generation, SamplingParams, StepScore, TokenSink
from atts.grading import extract_boxed
from atts.pipeline.barrier import SyncCoordinator
from atts.pipeline.calibration import CalibratorLike
from atts.pipeline.guarded import GuardedEngine
from atts.pipeline.prompt import (
    ANSWER_CUE,
    FORCED_ANSWER_TOKENS,
    WAIT_CUE,
    close_forced_answer,
    question_messages,
)
from atts.pipeline.trace import Author, SampleTrace, Step, StopReason, step_counters
from atts.seeds import derive_seed

TextSink = Callable[[str], None]  # told a sample's whole text so far


@dataclass(frozen=True)
class SampleSpec:
    question_id: str
    dataset: str
    question: str
    gold: str
    sample_index: int
    seed: int

    @property
    def cache_key(self) -> str:
        """The engines' key for this sample's cached history (``SamplingParams.cache_key``)."""
        return f"{self.question_id}#{self.sample_index}"

    @classmethod
    def of(cls, problem: Problem, index: int, seed: int) -> SampleSpec:
        """Sample ``index`` of ``problem``, drawn with ``seed``."""
        return cls(problem.id, problem.dataset, problem.question, problem.gold, index, seed)


@dataclass
class SampleEnv:
    """What a strategy may use: the run's config, engines, calibration and coordination."""

    config: RunConfig
    draft: GuardedEngine
    target: GuardedEngine
    calibrator: CalibratorLike | None  # None: a job that drafts and scores without deciding
    prompt_ids: Callable[[str], list[int]]
    context_length: int
    coordinator: SyncCoordinator | None = None  # sync strategy: the per-question round barrier
    # The monotonic clock steps are timed with: the simulator runs the runner on a virtual one.
    clock: Callable[[], float] = time.monotonic
    # Wall time minus monotonic time, taken once per run: every sample's ``started_at`` is its
    # monotonic start plus this, so ``started_at + t`` orders a run's decisions exactly as the
    # monotonic clock saw them (reading both clocks per sample let a preemption between the
    # two reads shift one sample by milliseconds and swap close decisions in a replay).
    wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    @classmethod
    def build(cls, config: RunConfig, draft: GuardedEngine, target: GuardedEngine, *,
              calibrator: CalibratorLike | None = None,
              coordinator: SyncCoordinator | None = None,
              clock: Callable[[], float] = time.monotonic,
              prompt_ids: Callable[[str], list[int]] | None = None,
              context_length: int | None = None) -> SampleEnv:
        """The environment of a run, a calibration or a request: by default a question's
        prompt is the target's chat template over ``question_messages`` (rendered once per
        question), and the context is the smaller of the two engines'."""
        if prompt_ids is None:
            rendered: dict[str, list[int]] = {}

            def prompt_ids(question: str) -> list[int]:
                if question not in rendered:
                    rendered[question] = target.render_chat(question_messages(question))
                return rendered[question]

        return cls(config, draft, target, calibrator, prompt_ids,
                   context_length if context_length is not None else
                   min(draft.info.context_length, target.info.context_length),
                   coordinator, clock, time.time() - clock())


@dataclass
class SampleState:
    """Mutable while the sample runs; frozen into a ``SampleTrace`` when it ends."""

    spec: SampleSpec
    ids: list[int]
    steps: list[Step] = field(default_factory=list)
    text: str = ""
    ended: bool = False  # the model ended its message (EOS)
    rounds: int = 0
    stop: StopReason = "rounds"
    started: float = field(default_factory=time.monotonic)  # when it started, on `now`'s clock
    now: Callable[[], float] = time.monotonic  # the run's clock (SampleEnv.clock)
    # Live streaming (the server's n = 1): told the text so far, final text only (a kept step
    # once appended, the target's own step token by token as it decodes; a draft step waits
    # for its decision, which may reject it).
    on_text: TextSink | None = None

    def elapsed(self) -> float:
        """Seconds since the sample started (``Step.t``)."""
        return self.now() - self.started

    def append(self, step: Step, generation: Generation) -> None:
        """Add a kept step: its ids continue the assistant message."""
        self.steps.append(step)
        self.ids.extend(generation.token_ids)
        if generation.finish_reason == "eos":
            self.ended = True
        self.add_text(generation.text)

    def add_text(self, text: str) -> None:
        """The one place the text grows (a kept step, a cue, a forced answer)."""
        self.text += text
        if self.on_text is not None:
            self.on_text(self.text)

    def reopen(self) -> None:
        """Drop the end-of-generation id of a step that ended the message, to write after it."""
        if self.ended:
            self.ids.pop()
            self.ended = False

    def step_params(self, config: RunConfig, role: Author, round_index: int) -> SamplingParams:
        tokens = config.draft_tokens if role == "draft" else config.target_tokens
        return SamplingParams(
            max_tokens=tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            stop=(config.step_stop,),
            seed=derive_seed(self.spec.seed, round_index, role),
            cache_key=self.spec.cache_key,
        )


RoundBody = Callable[[SampleState, SampleEnv, int], Awaitable[None]]


def prefill_tokens(prompt_tokens: int, *results: Generation | StepScore | None) -> int:
    """Context tokens the calls on a ``prompt_tokens``-long context evaluated again rather
    than reading them from a cache (``Step.prefill_tokens``)."""
    return sum(prompt_tokens - r.cached_tokens for r in results if r is not None)


async def write_step(
    state: SampleState, env: SampleEnv, role: Author, round_index: int
) -> tuple[Step, Generation]:
    """One step written by ``role`` alone (the target-only and draft-only loops, and the
    target's turn after a rejected draft step)."""
    engine = env.draft if role == "draft" else env.target
    live = state.on_text if role == "target" else None  # a target step is kept as written
    generation = await engine.generate(
        state.ids, state.step_params(env.config, role, round_index),
        None if live is None else _live_tokens(state.text, engine, live),
    )
    step = Step(
        round_index, role, generation.text, len(generation.token_ids), seconds=generation.seconds,
        prefill_tokens=prefill_tokens(len(state.ids), generation), t=state.elapsed(),
    )
    return step, generation


def _live_tokens(before: str, engine: GuardedEngine, on_text: TextSink) -> TokenSink:
    """A token sink telling ``on_text`` the sample's text with the step decoded so far.  A
    character cut in two by the last token waits for the next one (its replacement mark would
    be sent and then change, and what is sent cannot change)."""

    def sink(ids: tuple[int, ...]) -> None:
        on_text(before + engine.detokenize(ids).rstrip("\ufffd"))

    return sink


async def target_turn(state: SampleState, env: SampleEnv, round_index: int) -> None:
    """The target writes this round's step and it joins the text (after a rejected draft
    step, and every round of target-only)."""
    step, generation = await write_step(state, env, "target", round_index)
    state.append(step, generation)


async def run_sample(spec: SampleSpec, env: SampleEnv, body: RoundBody,
                     on_text: TextSink | None = None) -> SampleTrace:
    """Run one sample to its end.  ``on_text``: told its text so far as it grows (see
    ``SampleState.on_text``)."""
    config = env.config
    clock = env.clock()
    started_at = clock + env.wall_offset
    state = SampleState(spec, list(env.prompt_ids(spec.question)), started=clock,
                        now=env.clock, on_text=on_text)
    try:
        await _rounds(state, env, body)
    finally:
        # Whether it ended or failed, the sample will not extend its text again: its caches
        # in the engines are the first to reuse (Engine.release).
        env.draft.release(state.ids)
        env.target.release(state.ids)
    return _freeze(state, config, started_at, env.clock() - clock)


async def _rounds(state: SampleState, env: SampleEnv, body: RoundBody) -> None:
    config = env.config
    room_per_round = config.draft_tokens + config.target_tokens  # a draft step, then a target one
    reserve = len(env.target.tokenize(ANSWER_CUE)) + FORCED_ANSWER_TOKENS
    for round_index in range(config.rounds):
        if len(state.ids) + room_per_round + reserve > env.context_length:
            state.stop = "context"  # the next round might not fit: stop, force the answer
            break
        await body(state, env, round_index)
        state.rounds = round_index + 1
        answered = extract_boxed(state.text) is not None
        if not (answered or state.ended):
            continue
        if state.rounds < config.min_rounds:
            _append_cue(state, env, WAIT_CUE, round_index)
            continue
        state.stop = "answer" if answered else "eos"
        break
    author = config.forced_answer_author
    if extract_boxed(state.text) is None and author is not None:
        await _force_answer(state, env, author)


def _joined(state: SampleState, cue: str) -> str:
    """The cue without its leading blank line when the text already ends a step with one."""
    return cue.lstrip("\n") if state.text.endswith("\n\n") else cue


def _append_cue(state: SampleState, env: SampleEnv, cue: str, round_index: int) -> None:
    state.reopen()
    cue = _joined(state, cue)
    ids = env.target.tokenize(cue)
    state.steps.append(Step(round_index, "target", cue, len(ids), kind="wait", t=state.elapsed()))
    state.ids.extend(ids)
    state.add_text(cue)


async def _force_answer(state: SampleState, env: SampleEnv, author: str) -> None:
    role: Author = "target" if author == "target" else "draft"
    engine = env.target if role == "target" else env.draft
    state.reopen()
    cue = _joined(state, ANSWER_CUE)
    cue_ids = engine.tokenize(cue)
    params = SamplingParams(
        max_tokens=FORCED_ANSWER_TOKENS, temperature=0.0, stop=("\n",),
        seed=derive_seed(state.spec.seed, "forced"), cache_key=state.spec.cache_key,
    )
    context = state.ids + cue_ids
    generation = await engine.generate(context, params)
    completion = close_forced_answer(generation.text)
    text = cue + completion
    tokens = len(generation.token_ids)
    state.steps.append(
        Step(state.rounds, role, text, tokens, kind="forced_answer", seconds=generation.seconds,
             prefill_tokens=prefill_tokens(len(context), generation), t=state.elapsed())
    )
    state.add_text(text)


def _freeze(state: SampleState, config: RunConfig, started_at: float, wall: float) -> SampleTrace:
    spec = state.spec
    tokens, seconds = step_counters(state.steps, wall)
    return SampleTrace(
        question_id=spec.question_id,
        dataset=spec.dataset,
        sample_index=spec.sample_index,
        seed=spec.seed,
        strategy=config.strategy,
        question=spec.question,
        gold=spec.gold,
        status="ok",
        answer=extract_boxed(state.text),
        text=state.text,
        rounds=state.rounds,
        steps=tuple(state.steps),
        tokens=tokens,
        seconds=seconds,
        started_at=started_at,
        finished_at=started_at + wall,
        stop=state.stop,
    )


def failed_trace(spec: SampleSpec, config: RunConfig, error: BaseException,
                 started_at: float) -> SampleTrace:
    """The row of a sample whose engine calls failed for good: recorded, not swallowed."""
    return SampleTrace(
        question_id=spec.question_id, dataset=spec.dataset, sample_index=spec.sample_index,
        seed=spec.seed, strategy=config.strategy, question=spec.question, gold=spec.gold,
        status="error", answer=None,
        text="", rounds=0, steps=(), started_at=started_at, finished_at=time.time(),
        error=f"{type(error).__name__}: {error}",
    )


async def execute_sample(spec: SampleSpec, env: SampleEnv, body: RoundBody,
                         on_text: TextSink | None = None) -> SampleTrace:
    """The sample's trace, or its error row when its engine calls failed for good."""
    started = time.time()
    try:
        return await run_sample(spec, env, body, on_text)
    except Exception as err:  # not CancelledError: a cancelled sample writes nothing
        return failed_trace(spec, env.config, err, started)
