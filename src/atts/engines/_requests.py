"""What the llama.cpp decode loop is asked (``Request``), what it holds while a generation
decodes (``Decoding``), and how a request's future is settled across threads (``settle``)."""

from __future__ import annotations

from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atts.engines._context_pool import Slot
from atts.engines.base import SamplingParams, TokenSink

__all__ = ["Decoding", "Request", "settle"]


@dataclass
class Request:
    """A generation (``params`` set) or a scoring (``step`` set) waiting for a sequence."""

    ids: list[int]  # the prompt, or the prefix followed by the step
    future: Future[Any]
    params: SamplingParams | None = None
    prefix_len: int = 0  # scoring: where the step starts
    on_tokens: TokenSink | None = None  # generation: told the ids so far as they grow
    owner: str | None = None  # the sample it continues (cache_key): its own sequence first


@dataclass
class Decoding:
    """A generation in the decoding set."""

    request: Request
    slot: Slot
    cached: int
    started: float
    rng: np.random.Generator
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logprobs: list[float] = field(default_factory=list)  # params.logprobs: one per out token

def settle(future: Future[Any], result: Any = None, *, error: BaseException | None = None
            ) -> None:
    """Resolve a request's future unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
