"""The run-level retry policy: transient failures are retried with backoff, final ones are
not, and an engine that already retried under its own policy is not retried again."""

from __future__ import annotations

import asyncio

import pytest

from atts.engines.base import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    RetriesExhaustedError,
    SamplingParams,
)
from atts.engines.fake import FakeEngine
from atts.pipeline.guarded import GuardedEngine


def failing(error: Exception, times: int) -> tuple[FakeEngine, list[int]]:
    calls: list[int] = []

    def step(call):
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok\n\n"

    return FakeEngine(step=step), calls


def generate(engine: GuardedEngine):
    return asyncio.run(engine.generate([1, 2], SamplingParams(max_tokens=8)))


def test_transient_failures_are_retried_then_succeed():
    fake, calls = failing(EngineUnavailableError("down"), times=2)
    guarded = GuardedEngine(fake, concurrency=1, max_retries=3, backoff=0.001)
    assert generate(guarded).text == "ok\n\n"
    assert len(calls) == 3 and guarded.retries == 2


def test_retries_are_bounded_and_the_last_error_is_named():
    fake, calls = failing(ConnectionError("refused"), times=10)
    guarded = GuardedEngine(fake, concurrency=1, max_retries=2, backoff=0.001)
    with pytest.raises(EngineUnavailableError, match="gave up after 3 attempts: refused"):
        generate(guarded)
    assert len(calls) == 3


@pytest.mark.parametrize(
    "error",
    [ContextOverflowError("too long"), EngineError("bad request"),
     RetriesExhaustedError("the engine already retried")],
)
def test_final_failures_are_not_retried(error):
    fake, calls = failing(error, times=10)
    guarded = GuardedEngine(fake, concurrency=1, max_retries=5, backoff=0.001)
    with pytest.raises(type(error)):
        generate(guarded)
    assert len(calls) == 1 and guarded.retries == 0
