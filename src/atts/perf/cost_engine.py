"""Engines whose calls cost modelled time: the ``Engine`` protocol over ``atts.perf.simulator``.

The simulator hands two of these to the real runner.  A call's length comes from the plan the
simulator replays (``PlanBook``: which sample, round and role a call is, found by its seed,
and how many tokens it writes); its duration comes from the modelled engine, which batches it
with the other calls in flight; and what it costs to read its context comes from a cache
model of the engine:

- each sample keeps the ids the engine has evaluated for it (``_Cached``: a draft step's KV
  stays cached while its decision is out; a regenerated step is a dropped suffix, so the
  next call's common prefix ends before it);
- with ``contexts`` (the embedded engine's pool of contexts, one per sequence,
  ``atts.engines._context_pool``) a sample without a context opens one while the pool has
  room, else takes an ended sample's (released, or idle for 4 x contexts calls), a sibling's
  first (its prompt is reused), else the live one whose loss costs least (tokens reused minus
  tokens evicted); the evicted sample reads its history again on its next call.

A call evaluates the tokens its context lacks (at least one: the last prompt token gives the
first logits row); scoring also evaluates the step, whose last token nothing follows yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from atts.engines.base import (
    ChatMessage,
    EngineInfo,
    FinishReason,
    Generation,
    SamplingParams,
    StepScore,
    TokenSink,
)
from atts.perf.devices import EngineSpec
from atts.perf.simulator import Simulation

Key = tuple[str, int]  # (question id, sample index)


class PlannedCall(Protocol):
    @property
    def key(self) -> Key: ...

    @property
    def tokens(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def finish(self) -> FinishReason: ...


class CallBook(Protocol):
    """What the engines read from the plans (``atts.perf.plan_run.PlanBook``)."""

    def prompt(self, question: str) -> list[int]: ...

    def cue(self, text: str) -> list[int]: ...

    def call(self, role: str, seed: int | None) -> PlannedCall: ...

    def new_ids(self, call: Any) -> list[int]: ...

    def owner(self, token_id: int) -> Any: ...

    def score_logprobs(self, call: Any) -> tuple[float, ...]: ...

    def shared(self, a: Key, b: Key) -> int:
        """Prompt tokens samples ``a`` and ``b`` have in common."""
        ...


@dataclass
class _Cached:
    """What an engine holds of one sample's sequence: the sample's first ``base`` ids, then
    ``run`` copies of one call's id (the step it wrote or scored, bar its last token).

    A sample's ids only grow (a step that ended the message loses its end id, which the
    cache never holds), so ids the sample had at a call are a prefix of its ids at every
    later call, and only the cached step can have been dropped (a regenerated draft)."""

    base: int = 0
    tag: int | None = None
    run: int = 0

    @property
    def length(self) -> int:
        return self.base + self.run

    def common(self, ids: Sequence[int]) -> int:
        """Tokens of ``ids`` this cache holds (their common prefix)."""
        if len(ids) <= self.base or self.run == 0 or ids[self.base] != self.tag:
            return min(self.base, len(ids))
        return self.base + min(self.run, len(ids) - self.base)


class CostModelEngine:
    def __init__(self, role: str, spec: EngineSpec, sim: Simulation, book: CallBook, *,
                 contexts: int | None = None) -> None:
        self._role, self._sim, self._book = role, sim, book
        self._info = EngineInfo("simulated", spec.model.name, context_length=1 << 30)
        self._contexts = contexts
        self._cache: dict[Key, _Cached] = {}
        self._pool: dict[Key, int] = {}  # sample holding a context -> call count at last use
        self._calls = 0
        self._ended: set[Key] = set()

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str) -> list[int]:
        return self._book.cue(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return ""

    def render_chat(self, messages: Sequence[ChatMessage], *,
                    add_generation_prompt: bool = True) -> list[int]:
        question = messages[-1].content.rsplit("\n\n", 1)[-1]
        return self._book.prompt(question)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        planned = self._book.call(self._role, params.seed)
        key = planned.key
        reused = self._touch(key, prompt_ids)
        prefill = max(1, len(prompt_ids) - reused)
        ids = self._book.new_ids(planned)
        self._cache[key] = _Cached(len(prompt_ids), ids[0], len(ids) - 1)
        started = self._sim.now
        await self._sim.call(self._role, prefill=prefill, decode=planned.tokens,
                             context=len(prompt_ids) - prefill)
        return Generation(tuple(ids), planned.text, planned.finish, len(prompt_ids),
                          cached_tokens=len(prompt_ids) - prefill,
                          seconds=self._sim.now - started)

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        call = self._book.owner(step_ids[0])
        if call is None:
            raise ValueError("a simulated engine scores only steps a simulated engine wrote")
        key = call.key
        reused = self._touch(key, prefix_ids)
        context = max(1, len(prefix_ids) - reused)
        prefill = context - 1 + len(step_ids)
        self._cache[key] = _Cached(len(prefix_ids), step_ids[0], len(step_ids) - 1)
        started = self._sim.now
        await self._sim.call(self._role, prefill=prefill, rows=len(step_ids), kind="score",
                             context=len(prefix_ids) + len(step_ids) - 1 - prefill)
        return StepScore(self._book.score_logprobs(call),
                         cached_tokens=len(prefix_ids) - context,
                         seconds=self._sim.now - started)

    def release(self, token_ids: Sequence[int]) -> None:
        for token_id in reversed(token_ids):
            call = self._book.owner(token_id)
            if call is not None:
                self._ended.add(call.key)
                if self._contexts is None:  # no pool: nothing will read its cache again
                    self._cache.pop(call.key, None)
                return

    async def close(self) -> None:
        return None

    def _touch(self, key: Key, ids: Sequence[int]) -> int:
        """A call of ``key`` on ``ids``: the pool's bookkeeping, then the tokens of ``ids``
        the sample's context already holds."""
        if self._contexts is not None:
            self._acquire(key, ids)
        cached = self._cache.get(key)
        return cached.common(ids) if cached is not None else 0

    def _acquire(self, key: Key, ids: Sequence[int]) -> None:
        pool, capacity = self._pool, self._contexts
        assert capacity is not None
        self._calls += 1
        if key in pool:
            pool[key] = self._calls
            return
        if len(pool) >= capacity:
            shared = {k: min(self._book.shared(k, key), self._length(k), len(ids))
                      for k in pool}
            free = [k for k, used in pool.items()
                    if k in self._ended or self._calls - used > 4 * capacity]
            if free:
                victim = max(free, key=lambda k: (shared[k], -pool[k]))
            else:
                victim = max(pool, key=lambda k: (2 * shared[k] - self._length(k), -pool[k]))
            del pool[victim]
            self._cache.pop(victim, None)
            self._cache[key] = _Cached(shared[victim])  # the prompt ids the two share
        pool[key] = self._calls

    def _length(self, key: Key) -> int:
        cached = self._cache.get(key)
        return cached.length if cached is not None else 0
