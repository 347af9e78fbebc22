"""What a request may say, checked in two passes, each failure a clean 4xx.

Two routes share these rules: ``POST /v1/chat/completions`` (``parse_chat_request``) and the
legacy ``POST /v1/completions`` (``parse_completion_request``), whose ``prompt`` is treated as
the one user message of a conversation.

1. Shape (pydantic, strict JSON): types, required fields, fixed ranges (``temperature`` in
   [0, 2], ``alpha`` in (0, 1)), known roles and text-only content.  Unknown fields are refused
   like the OpenAI API refuses them; a few OpenAI fields that do not change the answer are
   accepted and ignored (penalties, ``user``, ``metadata``, ...); fields asking for what ATTS
   cannot do are refused by name (chat: tools, logprobs, stop strings, JSON mode; legacy:
   logprobs, echo, suffix, best_of above 1).
2. The server's limits (``ServeSettings``, one place: ``_options``): ``n``, ``max_tokens``,
   rounds, step tokens, and the model name (404 when unknown).

The result is a ``ChatRequest``: the conversation as ``ChatMessage`` values, the service's
``SolveOptions`` and, for a legacy completion, its stop strings.  ATTS settings come in the
request's ``atts`` object (an extra body field: ``extra_body={"atts": {...}}`` with the openai
client).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from atts.engines.base import ChatMessage
from atts.serve.errors import ApiError, bad_request
from atts.serve.service import SolveOptions
from atts.serve.settings import ServeSettings
from atts.serve.stops import StopStrings

Role = Literal["system", "user", "assistant"]
ROLES: dict[str, Role] = {
    "system": "system", "developer": "system", "user": "user", "assistant": "assistant",
}
_WHY = "it writes reasoning steps separated by blank lines and ends at a \\boxed{} answer"
_REASONS = {
    "best_of": "ATTS already samples: ask for n samples, whose majority vote is choices[0]",
    "echo": "the reply is reasoning written after the prompt, not the prompt itself",
    "suffix": "it writes after the prompt only, never into a gap before a suffix",
}


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: str
    content: Any
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(
                f"unknown role {role!r}: this model takes system, developer, user and "
                "assistant messages (no tool messages)"
            )
        return role

    @field_validator("content")
    @classmethod
    def _text(cls, content: Any) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list) and content:
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):
                    raise ValueError(
                        "only text content is supported: a string, or a list of "
                        '{"type": "text", "text": "..."} parts'
                    )
                parts.append(part["text"])
            return "".join(parts)
        raise ValueError(
            'content must be a string or a non-empty list of {"type": "text", "text": ...} '
            "parts"
        )


class _AttsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    trace: bool = False
    alpha: float | None = Field(default=None, gt=0, lt=1)
    alpha_discard: float | None = Field(default=None, ge=0, lt=1)
    rounds: int | None = Field(default=None, ge=1)
    min_rounds: int | None = Field(default=None, ge=0)
    draft_tokens: int | None = Field(default=None, ge=1)
    target_tokens: int | None = Field(default=None, ge=1)
    force_answer: Literal["auto", "target", "draft", "none"] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class _Body(BaseModel):
    """The fields both routes share, with the same meaning."""

    model_config = ConfigDict(extra="forbid", strict=True)
    required: ClassVar[str]  # what an empty body lacks besides model, for the message
    unsupported: ClassVar[tuple[str, ...]]  # refused when set (see _refuse_unsupported)

    model: str = Field(min_length=1)
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    atts: _AttsOptions | None = None
    # Accepted and ignored: they do not change what ATTS writes.
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None

    def token_limit(self) -> tuple[int | None, str]:
        """The requested bound on each sample's text, and the field that set it."""
        return self.max_tokens, "max_tokens"


class _ChatBody(_Body):
    required = "messages"
    unsupported = (
        "tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
        "response_format", "stop", "audio", "prediction", "modalities",
    )

    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    stop: Any = None
    audio: Any = None
    prediction: Any = None
    modalities: Any = None

    def token_limit(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return super().token_limit()


class _CompletionBody(_Body):
    required = "prompt"
    unsupported = ("logprobs", "echo", "suffix", "best_of")

    prompt: str
    stop: tuple[str, ...] | None = None
    logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise PydanticCustomError(
                    "prompt_count", "prompt must be a string or a list holding exactly one "
                    "string (one prompt per request), got a list of {count}",
                    {"count": len(prompt)},
                )
            return prompt[0]
        if not isinstance(prompt, str):
            raise PydanticCustomError(
                "prompt_type", "prompt must be a string or a list holding exactly one string; "
                "token ids are not accepted (lm-evaluation-harness: tokenized_requests=False)",
            )
        return prompt

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, stop: Any) -> Any:
        if stop is None:
            return None
        stops = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
            raise PydanticCustomError("stop_type", "stop must be a string or a list of strings")
        if not all(stops):
            raise ValueError("stop strings must be non-empty")
        return tuple(stops)


@dataclass(frozen=True)
class ChatRequest:
    """One request of either route: a legacy completion is the conversation of one user
    message (its prompt), with the stop strings that cut the returned text."""

    model: str
    messages: tuple[ChatMessage, ...]
    options: SolveOptions
    stream: bool
    include_usage: bool
    stops: StopStrings = field(default_factory=StopStrings)


def parse_chat_request(
    raw: bytes, settings: ServeSettings, models: Collection[str]
) -> ChatRequest:
    """The request in ``raw`` (a JSON body), or an ``ApiError`` saying what to fix."""
    body = _validated(raw, _ChatBody, models)
    messages = tuple(ChatMessage(ROLES[m.role], m.content) for m in body.messages)
    if not any(m.role == "user" for m in messages):
        raise bad_request("messages hold no user message; add one", param="messages")
    return _request(body, messages, settings)


def parse_completion_request(
    raw: bytes, settings: ServeSettings, models: Collection[str]
) -> ChatRequest:
    """The legacy completion in ``raw``: its prompt as the one user message."""
    body = _validated(raw, _CompletionBody, models)
    return _request(body, (ChatMessage("user", body.prompt),), settings,
                    StopStrings(body.stop or ()))


B = TypeVar("B", bound=_Body)


def _validated(raw: bytes, kind: type[B], models: Collection[str]) -> B:
    if not raw.strip():
        raise bad_request(f"the request body is empty; send a JSON object with model and "
                          f"{kind.required}", code="invalid_json")
    try:
        body = kind.model_validate_json(raw, strict=True)
    except ValidationError as err:
        raise from_errors(err.errors(include_url=False)) from err
    _refuse_unsupported(body)
    if body.model not in models:
        raise ApiError(
            404, f"the model {body.model!r} does not exist; this server serves "
            f"{', '.join(repr(m) for m in models)} (GET /v1/models)",
            param="model", code="model_not_found",
        )
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed with stream: true",
                          param="stream_options")
    return body


def _request(body: _Body, messages: tuple[ChatMessage, ...], settings: ServeSettings,
             stops: StopStrings | None = None) -> ChatRequest:
    return ChatRequest(
        model=body.model,
        messages=messages,
        options=_options(body, settings),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        stops=stops or StopStrings(),
    )


def _options(body: _Body, settings: ServeSettings) -> SolveOptions:
    n = body.n if body.n is not None else 1
    if n > settings.max_n:
        raise bad_request(f"n must lie in [1, {settings.max_n}] on this server, got {n}",
                          param="n")
    max_tokens, param = body.token_limit()
    if max_tokens is not None and max_tokens > settings.max_completion_tokens:
        raise bad_request(
            f"{param} must lie in [1, {settings.max_completion_tokens}] on this server, "
            f"got {max_tokens}", param=param,
        )
    atts = body.atts or _AttsOptions()
    if atts.rounds is not None and atts.rounds > settings.max_rounds:
        raise bad_request(f"atts.rounds must lie in [1, {settings.max_rounds}], got "
                          f"{atts.rounds}", param="atts.rounds")
    for key in ("draft_tokens", "target_tokens"):
        value = getattr(atts, key)
        if value is not None and value > settings.max_step_tokens:
            raise bad_request(f"atts.{key} must lie in [1, {settings.max_step_tokens}], got "
                              f"{value}", param=f"atts.{key}")
    overrides: dict[str, Any] = {
        key: getattr(atts, key)
        for key in ("alpha", "alpha_discard", "rounds", "min_rounds", "draft_tokens",
                    "target_tokens", "force_answer")
        if getattr(atts, key) is not None
    }
    if body.temperature is not None:
        overrides["temperature"] = body.temperature
    if body.top_p is not None:
        overrides["top_p"] = body.top_p
    return SolveOptions(n=n, seed=body.seed, max_tokens=max_tokens, trace=atts.trace,
                        overrides=overrides)


def _refuse_unsupported(body: _Body) -> None:
    for key in body.unsupported:
        value = getattr(body, key)
        if value is None or value is False or value == [] or value == "":
            continue
        if key == "response_format" and isinstance(value, dict) and value.get("type") == "text":
            continue
        if key == "best_of" and value == 1:
            continue  # one candidate per choice: what n samples are anyway
        name = "best_of above 1" if key == "best_of" else key
        raise bad_request(
            f"{name} is not supported by ATTS: {_REASONS.get(key, _WHY)}; remove the field",
            param=key, code="unsupported_parameter",
        )


_TYPE_ERRORS = ("_type", "_parsing")


def from_errors(errors: Sequence[Any]) -> ApiError:
    """The OpenAI-shaped 400 for the first of pydantic's (or FastAPI's) validation errors."""
    if not errors:
        return bad_request("invalid request")
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] == "body":  # FastAPI prefixes where a field came from
        loc = loc[1:]
    param = _param(loc)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {message}", code="invalid_json")
    if kind in ("model_type", "model_attributes_type") and not loc:
        return bad_request("the request body must be a JSON object", code="invalid_type")
    if kind == "missing":
        return bad_request(f"missing required parameter {param!r}", param=param,
                           code="missing_required_parameter")
    if kind == "extra_forbidden":
        return bad_request(f"unrecognized request argument supplied: {param!r}", param=param,
                           code="unknown_parameter")
    code = "invalid_type" if kind.endswith(_TYPE_ERRORS) or kind == "model_type" \
        else "invalid_value"
    return bad_request(f"invalid {param!r}: {message}", param=param, code=code)


def _param(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"
