"""The engine protocol: what ATTS needs from a model, in both roles (draft and target).

Two verbs carry the method:
- ``generate``: write the next step after a prompt given as token ids;
- ``score``: the log-probability of every token of a given step after a given prefix,
  computed by one prefill over the step (the prefix served from a cache where possible).

Everything works in token ids end to end: the pipeline renders the chat prompt once with the
model's own template (``render_chat``), keeps every step's ids, and scores exactly those ids.
Implementations: ``llama_cpp`` (embedded default), ``transformers`` (reference), ``fake``
(scripted, for tests), and the remote engines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

# Raised where models are found (atts.models.store); re-exported here for the engines' callers.
from atts.models.store import ModelNotFoundError as ModelNotFoundError

FinishReason = Literal["stop", "length", "eos"]
# Told the ids one generation has decoded so far, each time they grow (``Engine.generate``).
TokenSink = Callable[[tuple[int, ...]], None]


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """How to write one step.  ``stop`` strings end the step and are kept in it."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Also return log p(token) of every generated token under the model's own distribution
    # (temperature 1, before top-p): the draft side of the llr score (atts.conformal.scores).
    logprobs: bool = False
    # Which sample the call continues (``Engine.score`` takes the same key): an engine with a
    # cache of its own keeps each key's history in one sequence, so a sample whose last step
    # was discarded goes back to its own cache, not to a sibling's that shares its prompt.
    cache_key: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    """One generated step: its exact token ids and their text.

    With ``finish_reason == "eos"`` the last of ``token_ids`` is the end-of-generation token
    (its text is empty): the target scores it too, since ending is part of the step.  A caller
    that continues after such a step (a "Wait" cue, a forced answer) drops that last id.
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    cached_tokens: int = 0  # prompt tokens served from a cache (not re-evaluated)
    seconds: float = 0.0
    logprobs: tuple[float, ...] | None = None  # one per token id, when params.logprobs asked


@dataclass(frozen=True)
class StepScore:
    """Per-token log-probabilities of a step under a model, the first step token included."""

    logprobs: tuple[float, ...]
    cached_tokens: int = 0
    seconds: float = 0.0

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs)

    @property
    def perplexity(self) -> float:
        # The ATTS nonconformity score: PPL = exp(-mean log p(step token | context)).
        return math.exp(-self.mean_logprob)


@dataclass(frozen=True)
class EngineInfo:
    """What a run records about an engine (manifest.json)."""

    backend: str
    model: str
    model_sha256: str | None = None
    context_length: int = 0
    vocab_size: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class EngineError(RuntimeError):
    """Base of every engine failure."""


class EngineUnavailableError(EngineError):
    """The engine cannot be reached or has died (a retry may help)."""


class RetriesExhaustedError(EngineUnavailableError):
    """The engine already retried under its own policy (a remote engine's HTTP layer, with
    Retry-After and endpoint failover) and gave up; the run-level wrapper must not retry it
    again, or the tries would multiply."""


class ContextOverflowError(EngineError, ValueError):
    """The request does not fit in the model's context window (a retry will not help)."""




@runtime_checkable
class Engine(Protocol):
    """One model behind one interface.  All model calls are async; blocking work runs off the
    event loop.  Implementations must be safe to call from many tasks at once."""

    @property
    def info(self) -> EngineInfo: ...

    def tokenize(self, text: str) -> list[int]:
        """Plain text to ids (no special tokens added)."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Render with the model's own chat template.  With ``add_generation_prompt`` the ids
        end where the assistant's reply begins, so steps (ids) can be appended to continue a
        partial assistant message."""
        ...

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        """Sample a continuation of ``prompt_ids``.  ``on_tokens``, when given, is called on
        the event loop with the ids decoded so far each time they grow (live streaming); an
        engine that cannot stream never calls it, and the caller has the whole step from the
        returned ``Generation`` either way."""
        ...

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        """Log-probability of each of ``step_ids`` given everything before it.
        ``prefix_ids`` must not be empty (the first step token needs a context).
        ``cache_key``: the sample the call continues (``SamplingParams.cache_key``)."""
        ...

    def release(self, token_ids: Sequence[int]) -> None:
        """A hint that the sequence ending in ``token_ids`` will not be extended again (its
        sample ended), so a cache holding it may be reused first.  Cheap and thread-safe: it
        only records the ids; engines without a cache of their own ignore it."""
        ...

    async def close(self) -> None: ...
