"""One engine behind one concurrency limit and one retry policy: the only place for both.

Every model call of a run goes through a ``GuardedEngine``.  The semaphore is the only wait the
asynchronous runner imposes (docs/METHOD.md section 5: "the only waits are for engine capacity").
Transient failures (``EngineUnavailableError``, timeouts, connection errors) are retried with
exponential backoff and jitter; anything else (a context overflow, bad input) fails at once.
An engine with a retry policy of its own (the remote engines: Retry-After, endpoint failover)
raises ``RetriesExhaustedError`` when it gives up, and that is not retried again here.
The counters let the runner report retries and peak concurrency.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    Engine,
    EngineInfo,
    EngineUnavailableError,
    Generation,
    RetriesExhaustedError,
    SamplingParams,
    StepScore,
    TokenSink,
)

T = TypeVar("T")
TRANSIENT = (EngineUnavailableError, TimeoutError, ConnectionError)


class GuardedEngine:
    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.engine = engine
        self._slots = asyncio.Semaphore(concurrency)
        self._max_retries = max_retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._rng = rng or random.Random(0)
        self.retries = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.engine.detokenize(token_ids)

    def render_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.engine.render_chat(messages)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        return await self._call(lambda: self.engine.generate(prompt_ids, params, on_tokens))

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        return await self._call(lambda: self.engine.score(prefix_ids, step_ids,
                                                          cache_key=cache_key))

    def release(self, token_ids: Sequence[int]) -> None:
        """Pass the hint on at once: no capacity is taken and nothing can fail."""
        self.engine.release(token_ids)

    async def _call(self, make_call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            async with self._slots:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    return await make_call()
                except (ContextOverflowError, RetriesExhaustedError):
                    raise
                except TRANSIENT as err:
                    if attempt >= self._max_retries:
                        raise EngineUnavailableError(
                            f"{self.engine.info.model}: gave up after {attempt + 1} attempts: "
                            f"{err}"
                        ) from err
                finally:
                    self.in_flight -= 1
            # Back off outside the semaphore so a failing call does not hold capacity.
            delay = min(self._max_backoff, self._backoff * 2**attempt)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
