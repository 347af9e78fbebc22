"""The runner's schedule, replayed in the simulator: admission, rounds, barriers, calibration.

It mirrors ``atts.runner.runner`` and ``atts.pipeline``:
- ``atts`` (and the single-model baselines): every sample is admitted on its own, in order, as
  soon as one of ``max_active`` slots is free; nothing waits for a sibling, except (atts with
  ``question`` calibration) a question's round-0 decisions, which wait for its pre-pass of m
  first steps, drafted and scored for samples 0..m-1 outside the slots when the question's
  first sample starts; (``marginal``) every decision waits for the warm-up of the first
  ``warmup`` samples' first steps, started at time 0.
- ``sync``: a question is admitted whole; each round its live samples draft and score, meet at
  a barrier, and the chosen ones go to the target (the plan's decision says which).
- ``question_admission`` (the authors' code, any strategy): a question is admitted whole and the
  next one waits until all its samples are done; no per-round barrier unless ``sync``.
Each engine keeps a sample's prefix cached (its own tokens and the steps it scored), so a call
evaluates only the tokens the engine has not seen: the prompt once, the other model's steps, a
cue.  With ``Workload.contexts`` (the embedded engine's pool of contexts, one per sequence) a
sample can lose its cache to another and must read its history again; an ended sample's
contexts are the first taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atts.perf.devices import EngineSpec
from atts.perf.simulator import Process, Signal, Simulation
from atts.perf.workload import RoundPlan, SamplePlan, Workload

FORCED_CUE_TOKENS = 8  # "\n\nFinal answer: \boxed{" in the Qwen tokenizer
SHARED_PREFIX = 45  # chat template, system line and instruction: the same for every question


@dataclass
class _Sequence:
    """One sample's text as the engines see it: its length and what each engine has cached."""

    length: int
    cached: dict[str, int] = field(default_factory=lambda: {"draft": 0, "target": 0})

    def missing(self, engine: str) -> int:
        return self.length - min(self.cached[engine], self.length)

    def diverge(self) -> None:
        """A discarded step: caches past the current length hold tokens no longer in the text."""
        for name in self.cached:
            self.cached[name] = min(self.cached[name], self.length)


@dataclass(frozen=True)
class SimResult:
    strategy: str
    wall_seconds: float
    samples: int
    sample_seconds: dict[tuple[str, int], tuple[float, float]]  # key -> (start, finish)
    barrier_wait: float  # sample-seconds spent at sync barriers
    calibration_wait: float  # sample-seconds waiting for a calibration pre-pass
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


class _Run:
    def __init__(self, workload: Workload, draft: EngineSpec, target: EngineSpec) -> None:
        self.w = workload
        self.sim = Simulation(draft, target, draft_concurrency=workload.draft_concurrency,
                              target_concurrency=workload.target_concurrency)
        self.free_slots = workload.max_active
        self.slot_queue: list[tuple[int, Signal]] = []
        self.times: dict[tuple[str, int], tuple[float, float]] = {}
        self.barrier_wait = 0.0
        self.context_prefill = 0
        self.calibration_wait = 0.0
        self.seqs = {p.key: _Sequence(p.prompt_tokens) for p in workload.plans}
        self._prompt = {p.key: p.prompt_tokens for p in workload.plans}
        self.stash: dict[tuple[str, int], Signal] = {}  # pre-drafted first steps
        # Per engine: the samples holding a context, with the call count at their last use.
        self.pools: dict[str, dict[tuple[str, int], int]] = {"draft": {}, "target": {}}
        self.calls = {"draft": 0, "target": 0}
        self.ended: set[tuple[str, int]] = set()  # samples that released their contexts
        self.ready: dict[str, Signal] = {}  # question (or "" for marginal) -> bank ready
        self.parties = {q: 0 for q in workload.questions}
        self.arrived: dict[str, list[Signal]] = {q: [] for q in workload.questions}

    # -- slots ---------------------------------------------------------------------------------
    def acquire(self, count: int) -> Signal:
        granted = self.sim.signal()
        self.slot_queue.append((count, granted))
        self._grant()
        return granted

    def release(self, count: int) -> None:
        self.free_slots += count
        self._grant()

    def _grant(self) -> None:
        while self.slot_queue and self.slot_queue[0][0] <= self.free_slots:
            count, granted = self.slot_queue.pop(0)
            self.free_slots -= count
            granted.fire()

    # -- the context pool of the embedded engine -------------------------------------------
    def touch(self, engine: str, key: tuple[str, int]) -> None:
        """A call of ``key`` on ``engine`` with a pool of ``contexts`` (``LlamaCppEngine``'s
        ``_acquire``): a sample without a context opens one while the pool has room, else
        takes an ended sample's (released, or idle for 4 x contexts calls), a sibling's
        first (its prompt is reused), else the live one whose loss costs least (tokens reused
        minus tokens evicted); the evicted sample re-reads its history on its next call."""
        capacity = self.w.contexts
        if capacity is None:
            return
        pool = self.pools[engine]
        self.calls[engine] += 1
        if key in pool:
            pool[key] = self.calls[engine]
            return
        seq = self.seqs[key]
        if len(pool) >= capacity:
            def shared(k: tuple[str, int]) -> int:
                return self._prompt[key] if k[0] == key[0] else SHARED_PREFIX

            free = [k for k, used in pool.items()
                    if k in self.ended or self.calls[engine] - used > 4 * capacity]
            if free:
                victim = max(free, key=lambda k: (shared(k), -pool[k]))
            else:
                victim = max(pool, key=lambda k: (2 * shared(k) - self.seqs[k].cached[engine],
                                                  -pool[k]))
            del pool[victim]
            self.seqs[victim].cached[engine] = 0
            seq.cached[engine] = min(seq.length, shared(victim))
        pool[key] = self.calls[engine]

    # -- model calls -----------------------------------------------------------------------------
    def generate(self, key: tuple[str, int], engine: str, tokens: int, *, keep: bool = True,
                 extra: int = 0) -> Signal:
        """``engine`` writes ``tokens`` after the sample's text (plus ``extra`` cue tokens put
        there first); ``keep=False`` leaves the text as it is (a draft step awaiting its
        decision)."""
        seq = self.seqs[key]
        seq.length += extra
        self.touch(engine, key)
        prefill = max(1, seq.missing(engine))
        self.context_prefill += prefill
        done = self.sim.call(engine, prefill=prefill, decode=tokens,
                             context=seq.length - prefill)
        seq.cached[engine] = seq.length + tokens - 1
        if keep:
            seq.length += tokens
        return done

    def score(self, key: tuple[str, int], tokens: int) -> Signal:
        """The target scores the ``tokens`` drafted after the sample's text."""
        seq = self.seqs[key]
        self.touch("target", key)
        # The prefix's last token is evaluated again: its logits row scores the first step
        # token; the step's last token is not evaluated (nothing follows it yet).
        context = max(1, seq.missing("target"))
        self.context_prefill += context
        prefill = context - 1 + tokens
        done = self.sim.call("target", prefill=prefill, rows=tokens, kind="score",
                             context=seq.length + tokens - 1 - prefill)
        seq.cached["target"] = seq.length + tokens - 1
        return done

    def draft_and_score(self, key: tuple[str, int], tokens: int) -> Process:
        tokens = max(1, tokens)
        yield self.generate(key, "draft", tokens, keep=False)
        yield self.score(key, tokens)

    # -- calibration ------------------------------------------------------------------------------
    def _prefill_jobs(self, group: str, plans: list[SamplePlan]) -> None:
        jobs = []
        for plan in plans:
            done = self.sim.signal()
            self.stash[plan.key] = done
            jobs.append(done)

            def job(plan: SamplePlan = plan, done: Signal = done) -> Process:
                yield from self.draft_and_score(plan.key, plan.rounds[0].draft_tokens
                                                if plan.rounds else 1)
                done.fire()
            self.sim.spawn(job())
        ready = self.ready[group] = self.sim.signal()

        def gather() -> Process:
            yield from jobs
            ready.fire()
        self.sim.spawn(gather())

    def ensure_prepass(self, question: str) -> None:
        if self.w.calibration != "question" or question in self.ready:
            return
        own = [p for p in self.w.plans if p.question == question and p.calibration_first]
        siblings = [p for p in self.w.plans if p.question == question and p.rounds]
        if own and len(own) < self.w.calibration_m and siblings:
            # m > N: calibration-only first steps, as long as the question's average one.
            mean = round(sum(p.rounds[0].draft_tokens for p in siblings) / len(siblings))
            for index in range(len(siblings), self.w.calibration_m):
                extra = SamplePlan(question, index, own[0].prompt_tokens,
                                   (RoundPlan(mean, "accept"),), calibration_first=True)
                self.seqs[extra.key] = _Sequence(extra.prompt_tokens)
                self._prompt[extra.key] = extra.prompt_tokens
                own.append(extra)
        self._prefill_jobs(question, own)

    def bank_ready(self, question: str) -> Signal | None:
        if self.w.calibration == "question":
            self.ensure_prepass(question)
            return self.ready[question]
        return self.ready.get("")

    # -- samples ----------------------------------------------------------------------------------
    def sample(self, plan: SamplePlan) -> Process:
        key, w = plan.key, self.w
        start = self.sim.now
        for index, step in enumerate(plan.rounds):
            if w.strategy == "target_only":
                yield self.generate(key, "target", max(1, step.target_tokens))
            elif w.strategy == "draft_only":
                yield self.generate(key, "draft", max(1, step.draft_tokens))
            else:
                stashed = None
                if index == 0 and w.strategy == "atts":
                    self.ensure_prepass(plan.question)
                    stashed = self.stash.get(key)
                if stashed is not None:
                    yield stashed
                else:
                    yield from self.draft_and_score(key, step.draft_tokens)
                if w.strategy == "sync":
                    yield from self.barrier(plan.question)
                else:
                    ready = self.bank_ready(plan.question)
                    if ready is not None and not ready.fired:
                        waited = self.sim.now
                        yield ready
                        self.calibration_wait += self.sim.now - waited
                if step.decision == "regenerate":
                    self.seqs[key].diverge()  # the engines cached a step the text drops
                else:
                    self.seqs[key].length += max(1, step.draft_tokens)
                if step.decision in ("continue", "regenerate"):
                    yield self.generate(key, "target", max(1, step.target_tokens))
            self.seqs[key].length += step.cue_tokens
        if plan.forced_tokens:
            yield self.generate(key, plan.forced_author, plan.forced_tokens,
                                extra=FORCED_CUE_TOKENS)
        self.times[key] = (start, self.sim.now)
        self.ended.add(key)

    def barrier(self, question: str) -> Process:
        arrived = self.sim.now
        gate = self.sim.signal()
        self.arrived[question].append(gate)
        self._release_if_full(question)
        yield gate
        self.barrier_wait += self.sim.now - arrived

    def _release_if_full(self, question: str) -> None:
        if self.arrived[question] and len(self.arrived[question]) >= self.parties[question]:
            gates, self.arrived[question] = self.arrived[question], []
            for gate in gates:
                gate.fire()

    def leave(self, question: str) -> None:
        self.parties[question] -= 1
        self._release_if_full(question)

    def admitted(self, plan: SamplePlan) -> Process:
        yield self.acquire(1)
        yield from self.sample(plan)
        self.release(1)

    def question(self, plans: list[SamplePlan]) -> Process:
        taken = min(len(plans), self.w.max_active)
        yield self.acquire(taken)
        finished = []
        for plan in plans:
            done = self.sim.signal()
            finished.append(done)

            def one(plan: SamplePlan = plan, done: Signal = done) -> Process:
                yield from self.sample(plan)
                self.leave(plan.question)
                done.fire()
            self.sim.spawn(one())
        for done in finished:
            yield done
        self.release(taken)

    def start(self) -> None:
        w = self.w
        if w.strategy == "atts" and w.calibration == "marginal":
            self._prefill_jobs("", [p for p in w.plans if p.calibration_first][: w.warmup])
        if w.strategy == "sync" or w.question_admission:
            for question in w.questions:
                group = [p for p in w.plans if p.question == question]
                self.parties[question] = len(group)
                self.sim.spawn(self.question(group))
        else:
            for plan in w.plans:
                self.sim.spawn(self.admitted(plan))


def simulate(workload: Workload, draft: EngineSpec, target: EngineSpec) -> SimResult:
    """Run ``workload`` on the two engines; the wall time runs from 0 to the last sample."""
    run = _Run(workload, draft, target)
    run.start()
    run.sim.run()
    if len(run.times) != len(workload.plans):
        raise RuntimeError(f"simulation stalled: {len(run.times)} of {len(workload.plans)} "
                           "samples finished (a barrier or a pre-pass never released)")
    wall = max((finish for _, finish in run.times.values()), default=0.0)
    return SimResult(workload.strategy, wall, len(run.times), dict(run.times), run.barrier_wait,
                     run.calibration_wait, run.sim.engine_summary(), run.context_prefill)
