"""The vLLM engine: a vLLM OpenAI-compatible server (``vllm serve``) over HTTP.

- ``generate``: ``POST /v1/completions`` with the prompt as token ids, the step's sampling
  parameters, its stop strings kept in the output (``include_stop_str_in_output``), and the
  generated ids asked for twice: ``return_token_ids`` (vLLM >= 0.10.2) and, for older servers,
  ``logprobs: 0`` with ``return_tokens_as_token_ids`` (ids as "token_id:N" strings).  Both are
  exact; re-tokenising the text is never needed.  The text is the client's detokenisation of
  those ids, as in the in-process engines.  ``finish_reason`` "stop" with a string
  ``stop_reason`` is a stop string; with a null or integer ``stop_reason`` it is the model's
  end-of-generation token, which vLLM returns as the last id (``Generation``'s convention).
- ``score``, from the prefix cache where the server can: vLLM skips its prefix cache for any
  request that asks for prompt log-probabilities, unless the request says otherwise
  (``SamplingParams.skip_reading_prefix_cache``), which only the tokens-in endpoint
  ``POST /inference/v1/generate`` takes whole.  So a step is scored there on prefix + step with
  ``prompt_logprobs: 0``, ``skip_reading_prefix_cache: false``, ``detokenize: false``,
  ``max_tokens: 1`` (0 is refused) and ``temperature: 0``.  The prompt log-probabilities of
  positions served from the cache are missing or wrong (vLLM issue #42019), so only the step's
  positions are read, and only when the server reports (``usage.prompt_tokens_details.
  cached_tokens``) that its cache stopped short of the step: the first step token's value
  comes from the prefix's last position, which must have been computed.  Otherwise (the cache
  reached into the step, the server reported nothing, or it could not encode its answer
  because a cached position's value was inf or NaN) the step is scored again the old way:
  ``POST /v1/completions`` with ``prompt_logprobs: 0``, which re-runs the whole trajectory.
  Entry i of ``prompt_logprobs`` is log p(token i | tokens before it) (entry 0 is null), so
  the step's values are entries ``len(prefix)..``, each checked to be the step's own token.
  Which path a server offers is found at start-up (a probe of the endpoint) and recorded in
  the engine's info (``score_path``) and so in the run's manifest; the cached path needs the
  server started with ``--enable-scale-out`` (vLLM >= 0.32 answers 403 on the endpoint
  without it) and ``--enable-prompt-tokens-details`` (the cache report), and the engine warns
  once, naming the missing flag, when it falls back.

At start-up the engine checks every endpoint's ``/health``, reads the served model's name and
``max_model_len`` from ``/v1/models``, and compares the server's tokenisation of a probe text
(``POST /tokenize``) with the client's: a different tokenizer would make every id wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from atts.engines.base import EngineError, FinishReason, SamplingParams, StepScore
from atts.engines.remote.completions import (
    cached_prompt_tokens,
    first_choice,
    generate_logprob_values,
    prompt_logprob_values,
    reported_cached_tokens,
    returned_ids,
)
from atts.engines.remote.engine import RemoteEngine
from atts.engines.remote.errors import (
    RemoteRequestError,
    RemoteResponseError,
    RemoteUnavailableError,
)

# Digits, a multi-byte character, a superscript and a blank line: tokenizers differ on these.
PROBE_TEXT = "Step 1: 12 × 7 = 84, so x² − 3x = \\boxed{42}.\n\nWait"


CACHED_SCORE_PATH = "/inference/v1/generate"
log = logging.getLogger("atts.engines")


def is_unencodable_answer(err: RemoteRequestError) -> bool:
    """vLLM's HTTP 400 for an answer holding inf or NaN (Starlette's JSON encoder refuses
    them: "Out of range float values are not JSON compliant")."""
    return err.status == 400 and "Out of range float values" in str(err)


class VllmEngine(RemoteEngine):
    """A model served by vLLM (see ``RemoteEngine`` for the constructor)."""

    backend: ClassVar[str] = "vllm"
    health_paths: ClassVar[tuple[str, ...]] = ("/health",)
    # Set at start-up: the server takes tokens in and reads its prefix cache for scoring.
    _cached_scoring = False
    # Steps scored through the cached path, and those sent back to the uncached one.
    cached_scores = 0
    uncached_scores = 0
    # Of the uncached ones: the server could not encode the cached answer (see score()).
    refused_scores = 0

    def _check_server(self) -> None:
        self._check_tokenizer()
        probe = self.tokenize(PROBE_TEXT)[:8]
        body = self._http.post_sync(self._http.urls[0], CACHED_SCORE_PATH,
                                    self._cached_score_request(probe))
        if not (isinstance(body, dict) and isinstance(body.get("prompt_logprobs"), list)):
            missing = "--enable-scale-out (vLLM >= 0.32 refuses its tokens-in endpoint without it)"
        elif reported_cached_tokens(body) is None:
            # Without the report every score would be sent twice (see score()).
            missing = "--enable-prompt-tokens-details (the cache's reach is not reported)"
        else:
            self._cached_scoring = True
            return
        log.warning("vllm: %s scores each step by re-reading its whole trajectory (no prefix "
                    "cache); restart vllm serve with %s for cached scoring",
                    self._http.urls[0], missing)

    def _extra_info(self) -> dict[str, str]:
        return {"score_path": (f"{CACHED_SCORE_PATH} (prefix cache)" if self._cached_scoring
                               else "/v1/completions (no prefix cache)")}

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        if not self._cached_scoring:
            self.uncached_scores += 1
            return await super().score(prefix_ids, step_ids, cache_key=cache_key)
        prefix = self._checked(prefix_ids, "prefix_ids")
        step = self._checked(step_ids, "step_ids")
        self._check_fits(prefix, step)
        started = time.perf_counter()
        try:
            body = await self._post(CACHED_SCORE_PATH,
                                    self._cached_score_request(prefix + step))
        except RemoteRequestError as err:
            if not is_unencodable_answer(err):
                raise
            # The positions served from the cache hold whatever memory held (vLLM issue
            # #42019; seen as values like -7e25 on vLLM 0.32's CPU build); when one is inf or
            # NaN the server cannot write its JSON answer and refuses with HTTP 400.  The
            # step's own positions were never in doubt: score it without the cache.
            self.refused_scores += 1
            self.uncached_scores += 1
            return await super().score(prefix, step, cache_key=cache_key)
        cached = reported_cached_tokens(body)
        if cached is None or cached > len(prefix) - 1:
            # The cache reached into the step (its positions' values are not to be trusted),
            # or the server did not say how far it reached: score it without the cache.
            self.uncached_scores += 1
            return await super().score(prefix, step, cache_key=cache_key)
        values = generate_logprob_values(body, prefix + step, len(prefix), self.backend)
        self.cached_scores += 1
        return StepScore(tuple(values), cached_tokens=cached,
                         seconds=time.perf_counter() - started)

    def _cached_score_request(self, ids: list[int]) -> dict[str, Any]:
        return {
            "model": self._served,
            "token_ids": ids,
            "sampling_params": {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0,
                                "skip_reading_prefix_cache": False, "detokenize": False},
            "stream": False,
        }

    def _check_tokenizer(self) -> None:
        body = self._http.post_sync(
            self._http.urls[0],
            "/tokenize",
            {"model": self._served, "prompt": PROBE_TEXT, "add_special_tokens": False},
        )
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            return  # no /tokenize on this server: nothing to compare
        mine = self.tokenize(PROBE_TEXT)
        if tokens != mine:
            raise EngineError(
                f"vllm: the server's tokenizer ({self._served}) and the client's "
                f"({self._tokenizer.name}) disagree on a probe text ({tokens[:8]}... vs "
                f"{mine[:8]}...); pass tokenizer=the folder the server loaded"
            )

    def _generate_request(self, prompt: list[int], params: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._served,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
            "include_stop_str_in_output": True,
            "return_token_ids": True,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    def _read_generation(self, body: Any, prompt: list[int], params: SamplingParams
                         ) -> tuple[list[int], FinishReason, int]:
        choice = first_choice(body, self.backend)
        ids = returned_ids(choice)
        if ids is None:
            raise RemoteResponseError(
                "vllm: the answer carries no token ids (neither token_ids nor "
                "logprobs.tokens as 'token_id:N'); is this a vLLM server? For other servers "
                "use the openai backend"
            )
        finish = choice.get("finish_reason")
        stop_reason = choice.get("stop_reason")
        finished = self._finished(finish, stop_reason, ids)
        if finished is not None:
            return (*finished, cached_prompt_tokens(body))
        if finish == "abort":
            raise RemoteUnavailableError("vllm: the server aborted the request",
                                         endpoints=self._http.urls)
        raise RemoteResponseError(f"vllm: unexpected finish_reason {finish!r}")

    def _score_request(self, prefix: list[int], step: list[int]) -> dict[str, Any]:
        return {
            "model": self._served,
            "prompt": prefix + step,
            "max_tokens": 1,
            "temperature": 0.0,
            "n": 1,
            "prompt_logprobs": 0,
        }

    def _read_score(self, body: Any, prefix: list[int], step: list[int]
                    ) -> tuple[list[float], int]:
        values = prompt_logprob_values(body, prefix + step, len(prefix), self.backend)
        return values, cached_prompt_tokens(body)

    def _score_extra_tokens(self) -> int:
        return 1
