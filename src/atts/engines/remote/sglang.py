"""The SGLang engine: an SGLang server's native ``/generate`` API over HTTP.

- ``generate``: ``POST /generate`` with ``input_ids`` and ``sampling_params``
  (``max_new_tokens``, temperature, top_p, stop strings kept with ``no_stop_trim``, and
  ``sampling_seed`` when the step has a seed).  The generated ids are read from
  ``meta_info.output_token_logprobs`` (``[logprob, id, text]`` per token, asked for with
  ``return_logprob``; the default ``logprob_start_len`` costs one prompt position), falling back
  to ``output_ids`` cut to ``meta_info.completion_tokens`` (some SGLang versions prepend prompt
  tokens to ``output_ids``).  ``meta_info.finish_reason``: ``{"type": "stop", "matched": id}`` is
  the end-of-generation token (kept last), ``"matched": "text"`` a stop string, ``{"type":
  "length"}`` the token limit, ``{"type": "abort", ...}`` a failure.
- ``score``: ``POST /generate`` on prefix + step with ``max_new_tokens: 0``,
  ``return_logprob: true`` and ``logprob_start_len = len(prefix) - 1``.  SGLang then returns
  ``meta_info.input_token_logprobs`` for positions ``len(prefix) - 1 ..``: the first entry is
  null (the logits before it are not computed), the others are the step's tokens, checked
  against the step's ids.  The prefix up to ``logprob_start_len`` is served from the radix cache,
  and ``meta_info.cached_tokens`` (how much was) is reported as ``cached_tokens``.  A server
  started without its radix cache (``--disable-radix-cache``) re-reads every trajectory: after
  ``CACHE_CHECK_STEPS`` scored steps with long prefixes whose cached share stays under
  ``CACHE_WARN_SHARE``, the engine warns once (logger ``atts.engines``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from atts.engines.base import FinishReason, SamplingParams
from atts.engines.remote.engine import RemoteEngine
from atts.engines.remote.errors import (
    RemoteResponseError,
    RemoteUnavailableError,
    is_overflow_message,
    refusal,
)
from atts.engines.remote.http import retryable_status

log = logging.getLogger("atts.engines")
CACHE_MIN_PREFIX = 128  # prefixes this long should be mostly cached on a second read
CACHE_CHECK_STEPS = 8  # scored steps before judging
CACHE_WARN_SHARE = 0.25  # cached share of the prefix below which the cache looks off


class SglangEngine(RemoteEngine):
    """A model served by SGLang (see ``RemoteEngine`` for the constructor).  ``send_seed``:
    pass ``SamplingParams.seed`` as ``sampling_seed`` (turn off for servers that refuse it)."""

    backend: ClassVar[str] = "sglang"
    health_paths: ClassVar[tuple[str, ...]] = ("/health",)
    # The cache watch (_watch_cache): long-prefix steps seen, their summed cached shares.
    _cache_seen = 0
    _cache_share = 0.0
    _cache_warned = False
    generate_path: ClassVar[str] = "/generate"
    score_path: ClassVar[str] = "/generate"

    def __init__(self, model: Any = None, *, send_seed: bool = True, **options: Any) -> None:
        self._send_seed = send_seed
        super().__init__(model, **options)

    def _generate_request(self, prompt: list[int], params: SamplingParams) -> dict[str, Any]:
        sampling: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "no_stop_trim": True,
        }
        if params.stop:
            sampling["stop"] = list(params.stop)
        if params.seed is not None and self._send_seed:
            sampling["sampling_seed"] = params.seed
        return {"input_ids": prompt, "sampling_params": sampling, "return_logprob": True,
                "stream": False}

    def _read_generation(self, body: Any, prompt: list[int], params: SamplingParams
                         ) -> tuple[list[int], FinishReason, int]:
        body, meta = self._meta(body)
        ids = _output_ids(body, meta)
        finish = meta.get("finish_reason")
        kind = finish.get("type") if isinstance(finish, dict) else finish
        matched = finish.get("matched") if isinstance(finish, dict) else None
        finished = self._finished(kind, matched, ids)
        if finished is not None:
            return (*finished, _int(meta.get("cached_tokens")))
        if kind == "abort":
            raise self._abort_error(finish)
        raise RemoteResponseError(f"sglang: unexpected finish_reason {finish!r}")

    def _score_request(self, prefix: list[int], step: list[int]) -> dict[str, Any]:
        return {
            "input_ids": prefix + step,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": len(prefix) - 1,
            "stream": False,
        }

    def _read_score(self, body: Any, prefix: list[int], step: list[int]
                    ) -> tuple[list[float], int]:
        body, meta = self._meta(body)
        finish = meta.get("finish_reason")
        if isinstance(finish, dict) and finish.get("type") == "abort":
            raise self._abort_error(finish)
        entries = meta.get("input_token_logprobs")
        if not isinstance(entries, list) or len(entries) != len(step) + 1:
            raise RemoteResponseError(
                f"sglang: expected {len(step) + 1} input_token_logprobs (from logprob_start_len "
                f"{len(prefix) - 1}), got "
                f"{len(entries) if isinstance(entries, list) else entries!r}"
            )
        values: list[float] = []
        for j, (entry, token) in enumerate(zip(entries[1:], step, strict=True)):
            if not (isinstance(entry, list | tuple) and len(entry) >= 2):
                raise RemoteResponseError(f"sglang: malformed input_token_logprobs entry {entry!r}")
            logprob, token_id = entry[0], entry[1]
            if token_id != token:
                raise RemoteResponseError(
                    f"sglang: input_token_logprobs name token {token_id} at step position {j}, "
                    f"expected {token}"
                )
            if not isinstance(logprob, int | float):
                raise RemoteResponseError(f"sglang: null log-probability at step position {j}")
            values.append(float(logprob))
        cached = _int(meta.get("cached_tokens"))
        self._watch_cache(len(prefix), cached)
        return values, cached

    def _watch_cache(self, prefix: int, cached: int) -> None:
        """Warn once when long prefixes keep coming back mostly uncached."""
        if self._cache_warned or prefix < CACHE_MIN_PREFIX:
            return
        self._cache_seen += 1
        self._cache_share += cached / prefix
        if (self._cache_seen >= CACHE_CHECK_STEPS
                and self._cache_share / self._cache_seen < CACHE_WARN_SHARE):
            self._cache_warned = True
            log.warning(
                "sglang: the server served %.0f%% of the last %d scored prefixes from its "
                "cache; every step re-reads its whole trajectory. Start it with its radix "
                "cache on (without --disable-radix-cache)",
                100 * self._cache_share / self._cache_seen, self._cache_seen)

    def _meta(self, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(body, list) and len(body) == 1:
            body = body[0]  # a batch of one
        meta = body.get("meta_info") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise RemoteResponseError(
                f"sglang: the answer has no meta_info (is this SGLang's /generate?): "
                f"{str(body)[:300]}"
            )
        return body, meta

    def _abort_error(self, finish: Any) -> Exception:
        finish = finish if isinstance(finish, dict) else {}
        message = str(finish.get("message") or "the server aborted the request")
        status = finish.get("status_code")
        if isinstance(status, int) and 400 <= status < 500 and not retryable_status(status):
            return refusal(status, message, self._http.urls[0], self.backend)
        if is_overflow_message(message):
            return refusal(400, message, self._http.urls[0], self.backend)
        return RemoteUnavailableError(f"sglang: aborted: {message}", endpoints=self._http.urls)


def _output_ids(body: dict[str, Any], meta: dict[str, Any]) -> list[int]:
    entries = meta.get("output_token_logprobs")
    if isinstance(entries, list) and entries and all(
        isinstance(e, list | tuple) and len(e) >= 2 and isinstance(e[1], int) for e in entries
    ):
        return [int(e[1]) for e in entries]
    ids = body.get("output_ids")
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise RemoteResponseError("sglang: the answer carries no output ids (output_ids or "
                                  "meta_info.output_token_logprobs)")
    count = meta.get("completion_tokens")
    if isinstance(count, int) and 0 < count < len(ids):
        ids = ids[-count:]  # drop prompt tokens that some versions prepend
    return [int(t) for t in ids]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) else 0
