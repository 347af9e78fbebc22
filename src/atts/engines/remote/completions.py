"""Reading OpenAI-style ``/v1/completions`` answers (vLLM and OpenAI-compatible servers).

The shapes read here, as vLLM returns them (``choices[0]``):

- ``token_ids``: the generated ids (vLLM >= 0.10.2 with ``return_token_ids: true``);
- ``logprobs.tokens``: ``"token_id:1234"`` strings with ``return_tokens_as_token_ids: true``
  (older vLLM): the same ids, one per generated token;
- ``finish_reason`` "stop" | "length" | "abort", and ``stop_reason``: the stop string that
  ended the step, the stop token id, or null for the model's EOS token;
- ``prompt_logprobs`` (``prompt_logprobs: 0``): one entry per prompt token, entry 0 null, each
  other a map from token id (a string key in JSON) to ``{logprob, rank, decoded_token}`` that
  always holds the prompt's own token;
- ``logprobs.token_logprobs`` with ``echo: true``: the prompt's tokens first (the first null),
  then the generated ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atts.engines.remote.errors import RemoteResponseError

_TOKEN_ID_PREFIX = "token_id:"


def first_choice(body: Any, backend: str) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RemoteResponseError(f"{backend}: the answer holds no choices: {str(body)[:300]}")
    return choices[0]


def returned_ids(choice: dict[str, Any]) -> list[int] | None:
    """The generated ids the server reports, or None when it reports none."""
    ids = choice.get("token_ids")
    if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
        return [int(t) for t in ids]
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if isinstance(tokens, list) and tokens and all(
        isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX) for t in tokens
    ):
        return [int(t[len(_TOKEN_ID_PREFIX):]) for t in tokens]
    return None


def cached_prompt_tokens(body: Any) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` (vLLM with --enable-prompt-tokens-details,
    OpenAI); 0 when absent."""
    usage = body.get("usage") if isinstance(body, dict) else None
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(value) if isinstance(value, int) else 0


def reported_cached_tokens(body: Any) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``, or None when the server did not say."""
    usage = body.get("usage") if isinstance(body, dict) else None
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(value) if isinstance(value, int) and value >= 0 else None


def generate_logprob_values(body: Any, full: Sequence[int], start: int, backend: str
                            ) -> list[float]:
    """log p(full[i] | full[:i]) for i >= start, from the top-level ``prompt_logprobs`` of
    vLLM's tokens-in endpoint; entries before ``start`` (served from the cache) are not read."""
    entries = body.get("prompt_logprobs") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) != len(full):
        have = len(entries) if isinstance(entries, list) else "no"
        raise RemoteResponseError(
            f"{backend}: the tokens-in answer has {have} prompt log-probabilities for a "
            f"prompt of {len(full)} tokens")
    return [_logprob_of(entries[i], full[i], i, backend) for i in range(start, len(full))]


def prompt_logprob_values(body: Any, full: Sequence[int], start: int, backend: str
                          ) -> list[float]:
    """log p(full[i] | full[:i]) for i >= start, from vLLM's ``prompt_logprobs``."""
    choice = first_choice(body, backend)
    entries = choice.get("prompt_logprobs")
    if entries is None and isinstance(body, dict):
        entries = body.get("prompt_logprobs")  # chat responses carry it at the top level
    if not isinstance(entries, list):
        raise RemoteResponseError(
            f"{backend}: the answer has no prompt_logprobs; this server cannot score steps "
            "(use a vLLM server, or the sglang backend)"
        )
    if len(entries) != len(full):
        raise RemoteResponseError(
            f"{backend}: prompt_logprobs has {len(entries)} entries for a prompt of "
            f"{len(full)} tokens"
        )
    return [_logprob_of(entries[i], full[i], i, backend) for i in range(start, len(full))]


def _logprob_of(entry: Any, token: int, position: int, backend: str) -> float:
    if not isinstance(entry, dict):
        raise RemoteResponseError(f"{backend}: no prompt log-probability at position {position}")
    value = entry.get(str(token), entry.get(token))
    if isinstance(value, dict):
        value = value.get("logprob")
    if not isinstance(value, int | float):
        raise RemoteResponseError(
            f"{backend}: prompt_logprobs at position {position} lack the prompt's token {token} "
            f"(has {sorted(entry)[:5]}); is the client tokenizer the one the server loaded?"
        )
    return float(value)


def echo_logprob_values(body: Any, full: Sequence[int], start: int, backend: str
                        ) -> list[float]:
    """The same from ``echo: true`` + ``logprobs``: ``token_logprobs[start:len(full)]``."""
    choice = first_choice(body, backend)
    logprobs = choice.get("logprobs")
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list) or len(values) < len(full):
        raise RemoteResponseError(
            f"{backend}: the answer has no echoed prompt log-probabilities for all "
            f"{len(full)} prompt tokens; this server cannot score steps with echo (use the "
            "vllm or sglang backend for the target)"
        )
    echoed = returned_ids({"logprobs": logprobs})
    if echoed is not None and echoed[: len(full)] != list(full):
        raise RemoteResponseError(f"{backend}: the echoed tokens are not the prompt's tokens")
    out = values[start : len(full)]
    if not all(isinstance(v, int | float) for v in out):
        raise RemoteResponseError(f"{backend}: null log-probabilities inside the echoed step")
    return [float(v) for v in out]

