"""The typed errors of the remote engines, and how a server's refusal becomes one.

- ``RemoteRequestError``: the server refused the request (a 4xx other than 408/409/429); a
  retry will not help; it carries the server's own message;
- ``RemoteContextOverflowError``: such a refusal whose message says the request exceeds the
  context window (also a ``ContextOverflowError``);
- ``RemoteUnavailableError``: no endpoint answered, or every try failed transiently (an
  ``RetriesExhaustedError``: the run-level wrapper does not retry it again);
- ``RemoteResponseError``: a 2xx answer without what the engine asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from atts.engines.base import ContextOverflowError, EngineError, RetriesExhaustedError

# How servers word "the request does not fit in the context window" (vLLM, SGLang, OpenAI,
# llama.cpp, TGI); matched case-insensitively against the server's error message.
_OVERFLOW_PHRASES = (
    "maximum context length",
    "context length",
    "context window",
    "max_model_len",
    "exceed_context_size",
    "longer than the model",
    "prompt is too long",
    "input is too long",
    "too many tokens",
)


class RemoteRequestError(EngineError):
    """The server refused the request (a 4xx other than 408/409/429): a retry will not help."""

    def __init__(self, message: str, *, status: int, endpoint: str) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class RemoteContextOverflowError(RemoteRequestError, ContextOverflowError):
    """The server says the request exceeds the model's context window."""


class RemoteUnavailableError(RetriesExhaustedError):
    """No endpoint answered, or every try failed transiently (after all retries)."""

    def __init__(self, message: str, *, endpoints: Sequence[str], attempts: int = 0) -> None:
        super().__init__(message)
        self.endpoints = tuple(endpoints)
        self.attempts = attempts


class RemoteResponseError(EngineError):
    """The server answered 2xx but without what the engine asked for (another server or
    version than the backend expects); the message names the missing field."""


def error_message(response: Any) -> str:
    """The server's own explanation of a failed request, from the usual error bodies:
    ``{"error": {"message": ...}}`` (OpenAI, new vLLM), ``{"message": ...}`` (old vLLM,
    SGLang), ``{"detail": ...}`` (FastAPI), or the text itself."""
    try:
        body = response.json()
    except ValueError:
        text = str(response.text).strip()
        return text[:1000] or str(response.reason_phrase)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        for key in ("message", "detail"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)[:1000]
    return json.dumps(body)[:1000]


def is_overflow_message(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in _OVERFLOW_PHRASES)


def refusal(status: int, message: str, endpoint: str, name: str) -> RemoteRequestError:
    """The typed error for a non-retryable 4xx."""
    text = f"{name}: {endpoint} refused the request (HTTP {status}): {message}"
    if is_overflow_message(message):
        return RemoteContextOverflowError(
            f"{text}; shorten the prompt, lower max_tokens or serve a longer context",
            status=status, endpoint=endpoint,
        )
    return RemoteRequestError(text, status=status, endpoint=endpoint)
