"""Any OpenAI-compatible server (llama.cpp's, TGI, LM Studio, Ollama, TensorRT-LLM, vLLM, ...).

- ``generate``: ``POST /v1/completions``.  ``prompt_format="ids"`` sends the prompt as token
  ids (exact; most servers accept it), ``"text"`` sends the client's rendering of those ids,
  special tokens included (the server tokenises it again: exact only when both tokenizers
  agree).  The step's ids are the server's when it returns them (``token_ids``, or
  ``logprobs.tokens`` as "token_id:N"; ask with ``extra_body``), else the client's tokenisation
  of the returned text (counted in ``info.extra["retokenized"]``).
  A step ends with "stop" when the server names the stop string (``stop_reason``) or the text
  ends with one.  Servers that strip the stop string and do not say why stopped cannot be told
  apart from an end-of-generation: with stop strings set, such a step is taken as ended by the
  first stop string (appended; a wrongly ended sample costs more than one extra round).
- ``score``: only where the server can: ``scoring="prompt_logprobs"`` (vLLM's extension) or
  ``scoring="echo"`` (``echo: true`` + ``logprobs``, ``token_logprobs`` over the prompt; check
  your server's alignment: llama-cpp-python's is shifted by one position).  With the default
  ``scoring="none"`` a call to ``score`` raises an ``EngineError`` naming the backends that can.
- ``extra_body``: fields merged into every request (e.g. ``{"return_token_ids": true,
  "include_stop_str_in_output": true}`` for servers with vLLM's extensions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from atts.engines.base import EngineError, FinishReason, SamplingParams
from atts.engines.remote.completions import (
    cached_prompt_tokens,
    echo_logprob_values,
    first_choice,
    prompt_logprob_values,
    returned_ids,
)
from atts.engines.remote.engine import RemoteEngine
from atts.engines.remote.errors import RemoteResponseError, RemoteUnavailableError

PromptFormat = Literal["ids", "text"]
Scoring = Literal["none", "echo", "prompt_logprobs"]


class OpenAICompatEngine(RemoteEngine):
    """A model behind an OpenAI-compatible ``/v1/completions`` (see ``RemoteEngine`` and the
    module docstring for ``prompt_format``, ``scoring`` and ``extra_body``)."""

    backend: ClassVar[str] = "openai"
    health_paths: ClassVar[tuple[str, ...]] = ("/v1/models", "/health")

    def __init__(
        self,
        model: Any = None,
        *,
        prompt_format: PromptFormat = "ids",
        scoring: Scoring = "none",
        extra_body: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if prompt_format not in ("ids", "text"):
            raise ValueError(f"prompt_format must be 'ids' or 'text', got {prompt_format!r}")
        if scoring not in ("none", "echo", "prompt_logprobs"):
            raise ValueError(
                f"scoring must be 'none', 'echo' or 'prompt_logprobs', got {scoring!r}"
            )
        if scoring != "none" and prompt_format != "ids":
            raise ValueError("scoring needs prompt_format='ids': a text prompt is tokenised "
                             "again by the server, so positions would not match the step's ids")
        self._prompt_format = prompt_format
        self._scoring = scoring
        self._extra = dict(extra_body or {})
        self._retokenized = 0
        super().__init__(model, **options)

    def _extra_info(self) -> dict[str, str]:
        return {"prompt_format": self._prompt_format, "scoring": self._scoring,
                "retokenized": str(self._retokenized)}

    def _prompt(self, ids: list[int]) -> list[int] | str:
        return ids if self._prompt_format == "ids" else self._tokenizer.decode_with_specials(ids)

    def _generate_request(self, prompt: list[int], params: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._served,
            "prompt": self._prompt(prompt),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        return {**payload, **self._extra}

    def _read_generation(self, body: Any, prompt: list[int], params: SamplingParams
                         ) -> tuple[list[int], FinishReason, int]:
        choice = first_choice(body, self.backend)
        ids = returned_ids(choice)
        text = str(choice.get("text") or "")
        finish = choice.get("finish_reason")
        stop_reason = choice.get("stop_reason")
        reason: FinishReason
        if finish == "length":
            reason = "length"
        elif finish == "stop":
            ended = next((s for s in params.stop if s and text.endswith(s)), None)
            if isinstance(stop_reason, str) or ended is not None:
                reason = "stop"
                missing = isinstance(stop_reason, str) and not text.endswith(stop_reason)
                if ids is None and missing:
                    text += str(stop_reason)  # the server stripped the stop string it names
            elif isinstance(stop_reason, int) or not params.stop or "stop_reason" in choice:
                reason = "eos"
            else:
                reason = "stop"  # ambiguous: see the module docstring
                if ids is None:
                    text += params.stop[0]
        elif finish == "abort":
            raise RemoteUnavailableError("openai: the server aborted the request",
                                         endpoints=self._http.urls)
        else:
            raise RemoteResponseError(f"openai: unexpected finish_reason {finish!r}")
        if ids is None:
            self._retokenized += 1
            ids = self.tokenize(text)
        if reason == "eos":
            ids = self._ending_with_eos(ids, stop_reason if isinstance(stop_reason, int) else None)
        return ids, reason, cached_prompt_tokens(body)

    def _score_request(self, prefix: list[int], step: list[int]) -> dict[str, Any]:
        if self._scoring == "none":
            raise EngineError(
                "openai: this engine was built with scoring='none' and cannot score steps; "
                "serve the target with vLLM (--engine vllm) or SGLang (--engine sglang), or set "
                "scoring='echo' / 'prompt_logprobs' if this server returns prompt "
                "log-probabilities"
            )
        payload: dict[str, Any] = {
            "model": self._served,
            "prompt": prefix + step,
            "max_tokens": 1,
            "temperature": 0.0,
            "n": 1,
        }
        if self._scoring == "echo":
            payload.update(echo=True, logprobs=1)
        else:
            payload["prompt_logprobs"] = 0
        return {**payload, **self._extra}

    def _read_score(self, body: Any, prefix: list[int], step: list[int]
                    ) -> tuple[list[float], int]:
        full = prefix + step
        if self._scoring == "echo":
            values = echo_logprob_values(body, full, len(prefix), self.backend)
        else:
            values = prompt_logprob_values(body, full, len(prefix), self.backend)
        return values, cached_prompt_tokens(body)

    def _score_extra_tokens(self) -> int:
        return 1
