"""What the simulator replays: one plan per sample, round by round, and how to draw plans.

A ``SamplePlan`` says, for each round, how many tokens the draft wrote, what was decided, and
how many tokens the target wrote; plus the cue tokens appended without a model call ("Wait")
and the forced answer at the end.  Plans come from real runs (``atts.perf.stats``) or are drawn
here from parameters (``ParametricSpec``): step lengths from a lognormal with the given mean and
coefficient of variation (capped at the step budget), the round a sample answers from a
per-round stopping probability (capped at T), rejections as independent coin flips at rate r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The strategies of the runner's registry (atts.pipeline.strategies) whose plans a step trace
# holds whole: the judge's rating calls are not in its steps, so it is not replayed.
SIMULATED_STRATEGIES = ("atts", "sync", "target_only", "draft_only")
DECISIONS = ("accept", "continue", "regenerate")


@dataclass(frozen=True)
class RoundPlan:
    draft_tokens: int = 0  # the draft's step (atts, sync, draft_only); 0: no draft call
    decision: str | None = None  # atts / sync: accept | continue | regenerate
    target_tokens: int = 0  # what the target wrote this round (target_only: its step)
    cue_tokens: int = 0  # a "Wait" cue appended after the round, no model call

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)} or None")
        if min(self.draft_tokens, self.target_tokens, self.cue_tokens) < 0:
            raise ValueError("token counts must be >= 0")


@dataclass(frozen=True)
class SamplePlan:
    question: str
    index: int
    prompt_tokens: int
    rounds: tuple[RoundPlan, ...]
    forced_tokens: int = 0  # forced final answer completion (0: none)
    forced_author: str = "target"
    calibration_first: bool = False  # atts/question: round 0 comes from the calibration pre-pass

    @property
    def key(self) -> tuple[str, int]:
        return self.question, self.index


@dataclass(frozen=True)
class Workload:
    """Everything the runner would be given: the strategy, the plans in admission order (by
    question, then sample), and the runner's knobs that shape the schedule."""

    strategy: str
    plans: tuple[SamplePlan, ...]
    max_active: int = 8  # samples in flight (RunConfig.max_active_samples)
    calibration: str = "file"  # atts: question | marginal | file (file: nothing to wait for)
    calibration_m: int = 4
    warmup: int = 8
    question_admission: bool = False  # admit a question whole, next one when it is done
    min_rounds: int = 0  # an answer before this round gets "Wait" appended (RunConfig)
    contexts: int | None = None  # per engine: cached sequences (llama_cpp pool); None: all
    draft_concurrency: int = 1 << 30  # requests in flight per engine (GuardedEngine)
    target_concurrency: int = 1 << 30

    def __post_init__(self) -> None:
        if self.strategy not in SIMULATED_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(SIMULATED_STRATEGIES)}")
        if self.max_active < 1:
            raise ValueError("max_active must be >= 1")

    @property
    def questions(self) -> list[str]:
        return list(dict.fromkeys(p.question for p in self.plans))


@dataclass(frozen=True)
class ParametricSpec:
    questions: int = 8
    samples: int = 16  # N
    rounds: int = 15  # T: the most rounds a sample runs
    draft_step: float = 500.0  # mean draft step tokens (capped at step_cap)
    target_step: float = 500.0  # mean target step tokens
    step_cap: int = 500  # K_d = K_t
    step_cv: float = 0.5  # coefficient of variation of step lengths
    stop: float = 0.25  # probability a sample answers after each round (0: runs all T rounds)
    target_only_stop: float | None = None  # the target alone (default: the same as ``stop``)
    target_only_step: float | None = None  # the target's step alone (default: target_step)
    rejection: float = 0.25  # r
    mode: str = "continue"
    prompt_tokens: int = 150
    forced_tokens: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if self.questions < 1 or self.samples < 1 or self.rounds < 1 or self.step_cap < 1:
            raise ValueError("questions, samples, rounds and step_cap must be >= 1")
        if not 0 <= self.rejection <= 1 or not 0 <= self.stop <= 1:
            raise ValueError("rejection and stop are probabilities in [0, 1]")
        if self.mode not in ("continue", "regenerate"):
            raise ValueError("mode must be continue or regenerate")
        if self.step_cv < 0 or self.draft_step <= 0 or self.target_step <= 0:
            raise ValueError("step lengths must be > 0 and step_cv >= 0")


def _lengths(rng: np.random.Generator, mean: float, cv: float, cap: int, size: int) -> list[int]:
    if cv == 0:
        return [max(1, min(cap, round(mean)))] * size
    sigma = math.sqrt(math.log1p(cv * cv))
    draws = rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma, size)
    return [int(max(1, min(cap, round(x)))) for x in draws]


def _rounds_used(rng: np.random.Generator, stop: float, cap: int) -> int:
    if stop <= 0:
        return cap
    return int(min(cap, rng.geometric(stop)))


def sync_budget(spec: ParametricSpec) -> int:
    """B, the steps per round the synchronous baseline sends to the target: r x N (>= 1)."""
    return max(1, round(spec.rejection * spec.samples))


def parametric(spec: ParametricSpec, strategy: str, **knobs: object) -> Workload:
    """Plans drawn from ``spec`` for ``strategy``.  The same seed gives every strategy the same
    draws (rounds used, step lengths, rejections), so strategies differ only in who writes.
    Under ``sync`` the B = r x N highest-scored live steps of each round go to the target,
    as the barrier would decide."""
    alone = strategy == "target_only"
    stop = spec.target_only_stop if alone and spec.target_only_stop is not None else spec.stop
    mean_t = spec.target_only_step if alone and spec.target_only_step else spec.target_step
    plans = []
    for q in range(spec.questions):
        draws = []
        for s in range(spec.samples):
            rng = np.random.default_rng([spec.seed, q, s])
            used = _rounds_used(rng, stop, spec.rounds)
            drafts = _lengths(rng, spec.draft_step, spec.step_cv, spec.step_cap, spec.rounds)
            targets = _lengths(rng, mean_t, spec.step_cv, spec.step_cap, spec.rounds)
            draws.append((used, drafts, targets, rng.random(spec.rounds)))
        chosen: set[tuple[int, int]] = set()  # (sample, round) sent to the target under sync
        for r in range(spec.rounds):
            live = [s for s, d in enumerate(draws) if d[0] > r]
            live.sort(key=lambda s: -draws[s][3][r])
            chosen.update((s, r) for s in live[: sync_budget(spec)])
        for s, (used, drafts, targets, flips) in enumerate(draws):
            rounds = []
            for r in range(used):
                if strategy == "target_only":
                    rounds.append(RoundPlan(target_tokens=targets[r]))
                elif strategy == "draft_only":
                    rounds.append(RoundPlan(draft_tokens=drafts[r]))
                else:
                    rejected = (s, r) in chosen if strategy == "sync" \
                        else bool(flips[r] < spec.rejection)
                    decision = ("continue" if strategy == "sync" else spec.mode) \
                        if rejected else "accept"
                    rounds.append(RoundPlan(drafts[r], decision, targets[r] if rejected else 0))
            forced = spec.forced_tokens if used == spec.rounds and stop > 0 else 0
            # The runner's default author (RunConfig.force_answer = auto): a draft-only
            # baseline must not borrow the target.
            author = "draft" if strategy == "draft_only" else "target"
            plans.append(SamplePlan(f"q{q}", s, spec.prompt_tokens, tuple(rounds), forced,
                                    author))
    return Workload(strategy, tuple(plans), **knobs)  # type: ignore[arg-type]
