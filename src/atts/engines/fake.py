"""A scripted fake engine for tests: preset steps and scores, controllable latency per call.

It tokenises by characters (one token per character, ``ord``), so token counts are exact and
readable.  Behaviour comes from three callables, each given a ``FakeCall`` (the prompt text, the
step text for scoring, the sampling parameters):

- ``step``: the text of the next step (``generate``); a text ending in ``<|im_end|>`` ends the
  message (finish "eos", the EOS id last in the step's ids);
- ``score``: the mean log-probability of a step (``score``); every step token gets that value,
  so the step's perplexity is ``exp(-value)``; asked with ``SamplingParams(logprobs=True)``, a
  generation's tokens get the value of the same callable (its call's kind is "generate");
- ``delay``: seconds to sleep before answering (``asyncio.sleep``: it yields, like a real engine
  waiting on its worker thread).  Times are the running loop's, so on a virtual-clock loop
  (``atts.perf.virtual_clock``) a test's delays take no real time and order events exactly.

It records every call and the peak number of calls in flight, so tests can check concurrency
limits and scheduling.  It can also be told to fail the next k calls (to test retries).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    EngineInfo,
    EngineUnavailableError,
    FinishReason,
    Generation,
    SamplingParams,
    StepScore,
    TokenSink,
)

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
EOS_ID = 0  # the end-of-generation token: kept in a step's ids, empty in its text


@dataclass(frozen=True)
class FakeCall:
    kind: str  # "generate" | "score"
    prompt: str
    step: str = ""
    params: SamplingParams | None = None
    prompt_ids: tuple[int, ...] = ()
    started: float = 0.0
    finished: float = 0.0


def _default_step(call: FakeCall) -> str:
    return "The answer is \\boxed{42}.\n\n"


def _default_score(call: FakeCall) -> float:
    return -1.0


def _now() -> float:
    """The running loop's clock (virtual on a virtual-clock loop)."""
    return asyncio.get_running_loop().time()


def _no_delay(call: FakeCall) -> float:
    return 0.0


class FakeEngine:
    def __init__(
        self,
        name: str = "fake",
        *,
        step: Callable[[FakeCall], str] = _default_step,
        score: Callable[[FakeCall], float] = _default_score,
        delay: Callable[[FakeCall], float] = _no_delay,
        context_length: int = 1_000_000,
    ) -> None:
        self._name = name
        self._step = step
        self._score = score
        self._delay = delay
        self._context_length = context_length
        self.calls: list[FakeCall] = []
        self.released: list[tuple[int, ...]] = []  # ids passed to release(), in order
        self.in_flight = 0
        self.peak_in_flight = 0
        self.failures_left = 0
        self.closed = False

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            backend="fake", model=self._name, context_length=self._context_length, vocab_size=0
        )

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids if t != EOS_ID)

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        text = "".join(f"{_IM_START}{m.role}\n{m.content}{_IM_END}\n" for m in messages)
        if add_generation_prompt:
            text += f"{_IM_START}assistant\n"
        return self.tokenize(text)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        prompt = self.detokenize(prompt_ids)
        call = FakeCall("generate", prompt, params=params, prompt_ids=tuple(prompt_ids))
        started = await self._enter(call, len(prompt_ids) + params.max_tokens)
        try:
            text = self._step(call)
            finish: FinishReason = "stop"
            if len(text) > params.max_tokens:
                text, finish = text[: params.max_tokens], "length"
            elif text.endswith(_IM_END):
                text, finish = text[: -len(_IM_END)], "eos"
        finally:
            self._leave(call, started)
        ids = tuple(self.tokenize(text)) + ((EOS_ID,) if finish == "eos" else ())
        logprobs = (float(self._score(call)),) * len(ids) if params.logprobs else None
        if on_tokens is not None:  # token by token, yielding between tokens as a real loop does
            for end in range(1, len(ids)):
                on_tokens(ids[:end])
                await asyncio.sleep(0)
        return Generation(
            ids, text, finish, prompt_tokens=len(prompt_ids), seconds=_now() - started,
            logprobs=logprobs,
        )

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        if not prefix_ids or not step_ids:
            raise ValueError("score needs a non-empty prefix and a non-empty step")
        call = FakeCall("score", self.detokenize(prefix_ids), step=self.detokenize(step_ids))
        started = await self._enter(call, len(prefix_ids) + len(step_ids))
        try:
            value = float(self._score(call))
        finally:
            self._leave(call, started)
        return StepScore(
            tuple([value] * len(step_ids)), cached_tokens=len(prefix_ids),
            seconds=_now() - started,
        )

    def release(self, token_ids: Sequence[int]) -> None:
        self.released.append(tuple(token_ids))

    async def close(self) -> None:
        self.closed = True

    async def _enter(self, call: FakeCall, tokens: int) -> float:
        if tokens > self._context_length:
            raise ContextOverflowError(
                f"{tokens} tokens exceed the context of {self._context_length}"
            )
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        started = _now()
        try:
            delay = self._delay(call)
            if delay > 0:
                await asyncio.sleep(delay)
            if self.failures_left > 0:
                self.failures_left -= 1
                raise EngineUnavailableError(f"{self._name}: scripted failure")
        except BaseException:
            self.in_flight -= 1
            raise
        return started

    def _leave(self, call: FakeCall, started: float) -> None:
        self.in_flight -= 1
        self.calls.append(
            dataclasses.replace(call, started=started, finished=_now())
        )
