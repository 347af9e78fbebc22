"""The simulator: the real runner replaying a workload's plans on modelled engines.

``simulate(workload, draft, target)`` runs ``atts.runner.runner.execute`` itself, with its
admission, slots, per-engine concurrency limits, calibration pre-passes and warm-ups, sync
barriers, budget forcing and forced answers, on a virtual clock (``VirtualClockLoop``) and
two ``CostModelEngine``\\ s.  Nothing of the runner's schedule is copied here; this module only
says what each model call writes, from the plans (``PlanBook``):

- a call is found by its seed (the runner seeds every step from the sample's seed, its round
  and its role, ``SampleState.step_params``), and writes the plan's token count for it;
- the last kept step of a sample's last round (or of the round it first answered, when the
  run appended "Wait" cues after it) ends the sample: with a boxed answer when the plan has no
  forced answer, else with end-of-message (the runner then forces the answer, as it did);
- decisions are the plan's: the conformal decision is taken by the run's real calibrator and
  Decider (so every wait for a bank is the real one), which is handed the plan's decisions
  (``execute(planned=...)``) and takes them in place of the ones its p-values give;
  under sync, a step the plan sent to the target scores higher than any kept one, so the
  barrier's ranking chooses exactly the plan's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.conformal import Decision, DecisionKey
from atts.data import Problem
from atts.engines.base import FinishReason
from atts.perf.cost_engine import CostModelEngine, Key
from atts.perf.devices import EngineSpec
from atts.perf.simulator import Simulation
from atts.perf.virtual_clock import VirtualClockLoop, run_virtual
from atts.perf.workload import SamplePlan, Workload
from atts.pipeline.prompt import ANSWER_CUE, WAIT_CUE
from atts.pipeline.trace import SampleTrace
from atts.runner.run_folder import RunFolder
from atts.seeds import derive_seed

FORCED_CUE_TOKENS = 8  # "\n\nFinal answer: \boxed{" in the Qwen tokenizer
WAIT_CUE_TOKENS = 11  # WAIT_CUE in the Qwen tokenizer
SHARED_PREFIX = 45  # chat template, system line and instruction: the same for every question
REJECTED_LOGPROB = -10.0  # a planned rejection's tokens: its score tops every kept step's


@dataclass(frozen=True)
class SimResult:
    strategy: str
    wall_seconds: float
    samples: int
    sample_seconds: dict[tuple[str, int], tuple[float, float]]  # key -> (start, finish)
    barrier_wait: float  # sample-seconds spent at sync barriers
    calibration_wait: float  # sample-seconds a decision waited for its bank (atts)
    engines: dict[str, Any]
    # Context tokens evaluated rather than read from a cache, over all calls (a step's
    # prefill_tokens in the traces): the prompt once, then about one per call unless a
    # sample lost its context.
    context_prefill: int = 0

    @property
    def question_latency(self) -> dict[str, float]:
        spans: dict[str, list[float]] = {}
        for (question, _), (start, finish) in self.sample_seconds.items():
            span = spans.setdefault(question, [start, finish])
            span[0], span[1] = min(span[0], start), max(span[1], finish)
        return {q: finish - start for q, (start, finish) in spans.items()}

    @property
    def busy_sample_seconds(self) -> float:
        return sum(finish - start for start, finish in self.sample_seconds.values())


@dataclass(frozen=True)
class Call:
    """What one model call writes: its sample, its token count, its text and how it ends."""

    key: Key
    round: int
    tokens: int
    text: str = ""
    finish: FinishReason = "stop"
    rejected: bool = False  # a draft step the plan sends to the target


class PlanBook:
    """The plans, indexed the way the engines see calls: by seed, by token id, by prompt."""

    def __init__(self, workload: Workload, config: RunConfig) -> None:
        self._plans = {p.key: p for p in workload.plans}
        self._calls: dict[tuple[str, int], Call] = {}  # (role, seed) -> call
        self._owners: dict[int, Call] = {}
        self._ids = count(1 << 40)
        questions = workload.questions
        self._prompts: dict[str, list[int]] = {}
        for index, question in enumerate(questions):
            prompt = next(p.prompt_tokens for p in workload.plans if p.question == question)
            base = (index + 1) << 32
            shared = min(prompt, SHARED_PREFIX)
            self._prompts[question] = list(range(shared)) + [base + i
                                                             for i in range(prompt - shared)]
        cues = [r.cue_tokens for p in workload.plans for r in p.rounds if r.cue_tokens]
        self._cues = {WAIT_CUE: list(range(100, 100 + (cues[0] if cues else WAIT_CUE_TOKENS))),
                      ANSWER_CUE: list(range(200, 200 + FORCED_CUE_TOKENS))}
        for plan in workload.plans:
            self._index(plan, derive_seed(config.seed, plan.question, plan.index), workload)
        self._calibration_extras(workload, config)

    def _index(self, plan: SamplePlan, seed: int, workload: Workload) -> None:
        end = next((i for i, r in enumerate(plan.rounds) if r.cue_tokens), len(plan.rounds) - 1)
        ending: dict[str, Any] = ({"text": "\\boxed{0}"} if not plan.forced_tokens
                                  else {"finish": "eos"})
        for index, step in enumerate(plan.rounds):
            writer = _final_writer(workload.strategy, step.decision)
            for role, tokens in (("draft", step.draft_tokens), ("target", step.target_tokens)):
                last = index == end and role == writer
                self._calls[(role, derive_seed(seed, index, role))] = Call(
                    plan.key, index, max(1, tokens),
                    rejected=step.decision in ("continue", "regenerate"),
                    **(ending if last else {}))
        if plan.forced_tokens:
            role = "target" if plan.forced_author == "target" else "draft"
            self._calls[(role, derive_seed(seed, "forced"))] = Call(
                plan.key, len(plan.rounds), plan.forced_tokens)

    def _calibration_extras(self, workload: Workload, config: RunConfig) -> None:
        """First steps the calibration drafts for samples the plans lack (m > N, a warm-up
        larger than the run, a sample missing from a recorded run), seeded like those
        samples: each as long as its question's average first step."""
        extra = max(workload.calibration_m, workload.warmup)
        for question in workload.questions:
            siblings = [p for p in workload.plans if p.question == question]
            firsts = [p.rounds[0].draft_tokens for p in siblings if p.rounds]
            mean = max(1, round(sum(firsts) / len(firsts))) if firsts else 1
            planned = {p.index for p in siblings}
            for index in range(max(planned) + 1 + extra):
                if index not in planned:
                    seed = derive_seed(derive_seed(config.seed, question, index), 0, "draft")
                    self._calls[("draft", seed)] = Call((question, index), 0, mean)

    # -- what the engines ask ----------------------------------------------------------------
    def prompt(self, question: str) -> list[int]:
        if question not in self._prompts:
            raise ValueError(f"the plans hold no question {question!r}")
        return list(self._prompts[question])

    def cue(self, text: str) -> list[int]:
        return list(self._cues.get(text, range(300, 300 + max(1, round(len(text) / 4)))))

    def call(self, role: str, seed: int | None) -> Call:
        call = self._calls.get((role, seed)) if seed is not None else None
        if call is None:
            raise ValueError(f"the plans hold no {role} call with seed {seed}: the runner "
                             "asked for a step the recorded run did not take")
        return call

    def new_ids(self, call: Call) -> list[int]:
        """Fresh ids for one call's tokens: one id object repeated (the cache model compares
        ids, and a sample's text may run to thousands of them)."""
        token_id = next(self._ids)
        self._owners[token_id] = call
        return [token_id] * call.tokens

    def shared(self, a: Key, b: Key) -> int:
        """Prompt tokens two samples have in common: a sibling's whole prompt, else the chat
        template, system line and instruction every question shares."""
        length = len(self._prompts[a[0]])
        return length if a[0] == b[0] else min(length, len(self._prompts[b[0]]), SHARED_PREFIX)

    def owner(self, token_id: int) -> Call | None:
        return self._owners.get(token_id)

    def decision(self, key: DecisionKey) -> Decision:
        """The decision the plan took for this draft step."""
        plan = self._plans[(key.question_id, key.sample_index)]
        if key.round >= len(plan.rounds):
            raise ValueError(f"the plan of {(key.question_id, key.sample_index)} has no round "
                             f"{key.round}")
        return Decision(plan.rounds[key.round].decision or "accept")

    @staticmethod
    def score_logprobs(call: Call) -> tuple[float, ...]:
        """The target's log-probabilities of a drafted step: a step the plan rejects scores
        above every kept one (the sync barrier ranks by score)."""
        return (REJECTED_LOGPROB if call.rejected else 0.0,) * call.tokens


def _final_writer(strategy: str, decision: str | None) -> str:
    """Who writes the step a round keeps last."""
    if strategy == "draft_only" or (strategy in ("atts", "sync") and decision in
                                    (None, "accept")):
        return "draft"
    return "target"


class _TraceSink(RunFolder):
    """A run folder that keeps nothing (the simulator reads the traces as they finish) and
    reports the samples the plans lack (a question with fewer samples than N) as finished
    already, so the runner skips them as it skips them on a resume."""

    def __init__(self, absent: list[Key]) -> None:
        super().__init__(Path("simulated"))
        self._absent = [{"question_id": q, "sample_index": s, "status": "error"}
                        for q, s in absent]

    def append_trace(self, trace: SampleTrace) -> None:
        return None

    def rows(self) -> list[dict[str, Any]]:
        return list(self._absent)


def run_config(workload: Workload) -> RunConfig:
    """The settings the runner needs to take the plans' schedule: the workload's knobs, T and
    N from the plans, who forces answers, and a level the bank sizes allow."""
    plans = workload.plans
    forced = next((p.forced_author for p in plans if p.forced_tokens), None)
    m = workload.calibration_m
    rejections: dict[tuple[str, int], int] = {}
    for plan in plans:
        for index, step in enumerate(plan.rounds):
            if step.decision in ("continue", "regenerate"):
                where = (plan.question, index)
                rejections[where] = rejections.get(where, 0) + 1
    samples = max((p.index + 1 for p in plans), default=1)  # a missing one is skipped
    return RunConfig(
        strategy=workload.strategy, samples=samples,
        rounds=max([len(p.rounds) for p in plans] + [1]), min_rounds=workload.min_rounds,
        force_answer=forced or "none",
        # The level only sets which banks are big enough; the plans decide.
        alpha=0.25 if m >= 4 or workload.calibration != "question" else min(0.5, 1 / m + 0.01),
        calibration=workload.calibration, calibration_m=m, warmup=workload.warmup,
        calibration_file="simulated" if workload.calibration == "file" else None,
        sync_budget=min(samples, max(rejections.values(), default=1)),
        max_active_samples=workload.max_active,
        admission="question" if workload.question_admission else "sample",
        draft_concurrency=workload.draft_concurrency,
        target_concurrency=workload.target_concurrency,
    )


def simulate(workload: Workload, draft: EngineSpec, target: EngineSpec, *,
             shared_device: bool = False) -> SimResult:
    """Run ``workload`` through the real runner on the two modelled engines; the wall time
    runs from 0 to the last sample's end.  ``shared_device``: both engines on the same devices
    (``atts.perf.simulator``)."""
    config = run_config(workload)
    problems = [Problem(q, "simulated", q, "0") for q in workload.questions]
    book = PlanBook(workload, config)
    traces: list[tuple[SampleTrace, float]] = []

    async def main(loop: VirtualClockLoop) -> dict[str, Any]:
        from atts.runner.runner import execute

        sim = Simulation(draft, target, loop=loop, shared_device=shared_device)
        engines = [CostModelEngine(role, spec, sim, book, contexts=workload.contexts)
                   for role, spec in (("draft", draft), ("target", target))]
        have = {p.key for p in workload.plans}
        absent = [(q, i) for q in workload.questions for i in range(config.samples)
                  if (q, i) not in have]
        await execute(config, problems, engines[0], engines[1], _TraceSink(absent),
                      bank_scores=[1.0] * 99, show_progress=False,
                      on_sample=lambda trace: traces.append((trace, loop.time())),
                      clock=loop.time,
                      planned=book.decision)
        return sim.engine_summary()

    engines = run_virtual(main)
    failed = [t for t, _ in traces if t.status != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} simulated sample(s) failed; the first: "
                           f"{failed[0].error}")
    times = {(t.question_id, t.sample_index): (finish - t.seconds.wall, finish)
             for t, finish in traces}
    waited = sum(_decision_wait(t) for t, _ in traces)
    return SimResult(workload.strategy, max((f for _, f in times.values()), default=0.0),
                     len(times), times, waited if workload.strategy == "sync" else 0.0,
                     waited if workload.strategy == "atts" else 0.0, engines,
                     sum(s.prefill_tokens for t, _ in traces for s in t.steps))


def _decision_wait(trace: SampleTrace) -> float:
    """Seconds a sample's draft steps waited for their decisions, from its steps: each round's
    draft step was decided at ``t``, its calls took ``seconds`` after the previous round
    ended, and the rest is the wait (at a sync barrier, or for a calibration bank; waits for
    an engine slot of ``GuardedEngine`` count in it too)."""
    ended, wait = 0.0, 0.0
    for index in range(trace.rounds):
        steps = [s for s in trace.steps if s.round == index]
        drafted = next((s for s in steps if s.author == "draft"), None)
        if drafted is not None and drafted.t is not None:
            wait += max(0.0, drafted.t - ended - drafted.seconds)
        ended = max((s.t for s in steps if s.t is not None), default=ended)
    return wait
