"""What every remote engine shares: the client tokenizer, the HTTP client, start-up checks,
context checks, the EOS convention, and the engine protocol's plumbing.

A backend (vLLM, SGLang, an OpenAI-compatible server) supplies only its request payloads and
how to read the answers (``_generate_request``/``_read_generation``, ``_score_request``/
``_read_score``).  Construction (the registry calls ``cls(model, **options)``):

- ``model``: where the tokenizer comes from (a named model, a GGUF file, or a Hugging Face
  folder: the one the server loaded is the surest), and the served model's name when the server
  serves several; ``tokenizer`` overrides the tokenizer source (a path or a ``ClientTokenizer``)
  when ``model`` is only the served name;
- ``base_url``: one URL, a comma-separated string or a list; each request goes to the
  endpoint with the fewest requests in flight;
- ``served_model_name``: the ``model`` field of requests; default: what ``/v1/models`` lists;
- ``n_ctx``: the context limit checked before each request; default (and upper bound) the
  server's ``max_model_len``;
- ``timeout`` (each HTTP request), ``connect_timeout``, ``max_retries``, ``backoff``,
  ``max_backoff``: see ``atts.engines.remote.http``;
- ``api_key``: sent as a Bearer token; default the ``ATTS_REMOTE_API_KEY`` environment
  variable (never recorded in the manifest);
- ``check_health``: at construction, GET the health path on every endpoint and raise one
  error naming each endpoint that does not answer; ``transport``: an httpx transport (tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
    FinishReason,
    Generation,
    ModelNotFoundError,
    SamplingParams,
    StepScore,
    TokenSink,
)
from atts.engines.remote.errors import RemoteResponseError
from atts.engines.remote.http import RemoteHttp, RetryPolicy
from atts.engines.remote.tokenizer import ClientTokenizer

API_KEY_ENV = "ATTS_REMOTE_API_KEY"


class RemoteEngine:
    """Base of the remote engines (see the module docstring for the constructor)."""

    backend: ClassVar[str] = "remote"
    health_paths: ClassVar[tuple[str, ...]] = ("/health",)
    generate_path: ClassVar[str] = "/v1/completions"
    score_path: ClassVar[str] = "/v1/completions"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        base_url: str | Sequence[str],
        tokenizer: str | os.PathLike[str] | ClientTokenizer | None = None,
        served_model_name: str | None = None,
        n_ctx: int | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        api_key: str | None = None,
        check_health: bool = True,
        transport: Any = None,
    ) -> None:
        if n_ctx is not None and n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1 or None (the server's limit), got {n_ctx}")
        source = tokenizer if tokenizer is not None else model
        if source is None:
            raise ValueError(
                f"{self.backend}: name the model whose tokenizer to use, e.g. "
                f"'{self.backend}:qwen2.5-coder-0.5b', or pass tokenizer=/path/to/hf-folder"
            )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._http = RemoteHttp(
            base_url,
            name=self.backend,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=RetryPolicy(max_retries=max_retries, backoff=backoff, max_backoff=max_backoff),
            headers={"Authorization": f"Bearer {key}"} if key else None,
            transport=transport,
        )
        listed: dict[str, int | None] | None = None
        if check_health:  # before loading the tokenizer: a dead server fails in seconds
            self._http.check_health(self.health_paths)
            listed = self._served_models()
        self._tokenizer = (
            source if isinstance(source, ClientTokenizer) else _load_tokenizer(source)
        )
        self._served = self._choose_served(model, served_model_name, listed)
        server_ctx = listed.get(self._served) if listed else None
        if n_ctx is None and server_ctx is None:
            raise ValueError(
                f"{self.backend}: the server did not report its context length "
                "(max_model_len); pass n_ctx"
            )
        self._server_ctx = server_ctx
        self._n_ctx = min(x for x in (n_ctx, server_ctx) if x is not None)
        self._closed = False
        if check_health:
            self._check_server()

    # -- start-up ----------------------------------------------------------------------------

    def _served_models(self) -> dict[str, int | None] | None:
        """``/v1/models`` of the first endpoint: served name -> max_model_len (None when the
        server does not say); None when the server has no such listing."""
        body = self._http.get_sync(self._http.urls[0], "/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        out: dict[str, int | None] = {}
        for entry in data:
            if isinstance(entry, dict) and "id" in entry:
                ctx = entry.get("max_model_len")
                out[str(entry["id"])] = int(ctx) if isinstance(ctx, int) and ctx > 0 else None
        return out or None

    def _choose_served(self, model: Any, requested: str | None,
                       listed: dict[str, int | None] | None) -> str:
        if listed is None:
            if requested is not None:
                return requested
            return os.fspath(model) if model is not None else self._tokenizer.name
        names = sorted(listed)
        if requested is not None:
            if requested not in listed:
                raise EngineError(f"{self.backend}: {self._http.urls[0]} serves {names}, not "
                                  f"{requested!r}; fix served_model_name")
            return requested
        if len(names) == 1:
            return names[0]
        if model is not None and os.fspath(model) in listed:
            return os.fspath(model)
        raise EngineError(f"{self.backend}: {self._http.urls[0]} serves several models "
                          f"{names}; pass served_model_name")

    def _check_server(self) -> None:
        """Backend-specific checks after the health check (e.g. the server's tokenizer)."""

    # -- protocol: metadata and text ---------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        extra = {
            "base_url": ",".join(self._http.urls),
            "tokenizer": self._tokenizer.name,
            "served_model_name": self._served,
        }
        if self._server_ctx is not None:
            extra["server_max_model_len"] = str(self._server_ctx)
        extra.update(self._extra_info())
        return EngineInfo(
            backend=self.backend,
            model=self._served,
            model_sha256=None,  # the weights live on the server; the name identifies them
            context_length=self._n_ctx,
            vocab_size=self._tokenizer.vocab_size,
            extra=extra,
        )

    @property
    def retries(self) -> int:
        """HTTP retries made so far (all calls together)."""
        return self._http.retries

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.detokenize(token_ids)

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        return self._tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt)

    # -- protocol: model calls ---------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        """One non-streamed request: ``on_tokens`` is never called (the step arrives whole)."""
        prompt = self._checked(prompt_ids, "prompt_ids")
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                f"context length {self._n_ctx}; shorten the prompt or raise n_ctx"
            )
        started = time.perf_counter()
        body = await self._post(self.generate_path, self._generate_request(prompt, params))
        ids, finish, cached = self._read_generation(body, prompt, params)
        if not ids:
            raise RemoteResponseError(f"{self.backend}: the server returned no tokens")
        return Generation(
            token_ids=tuple(ids),
            text=self.detokenize(ids),
            finish_reason=finish,
            prompt_tokens=len(prompt),
            cached_tokens=cached,
            seconds=time.perf_counter() - started,
        )

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        prefix = self._checked(prefix_ids, "prefix_ids")
        step = self._checked(step_ids, "step_ids")
        self._check_fits(prefix, step)
        started = time.perf_counter()
        body = await self._post(self.score_path, self._score_request(prefix, step))
        logprobs, cached = self._read_score(body, prefix, step)
        if len(logprobs) != len(step):
            raise RemoteResponseError(
                f"{self.backend}: got {len(logprobs)} log-probabilities for a step of "
                f"{len(step)} tokens"
            )
        return StepScore(tuple(logprobs), cached_tokens=cached,
                         seconds=time.perf_counter() - started)

    def _check_fits(self, prefix: list[int], step: list[int]) -> None:
        if len(prefix) + len(step) + self._score_extra_tokens() > self._n_ctx:
            raise ContextOverflowError(
                f"prefix ({len(prefix)} tokens) + step ({len(step)} tokens) exceeds the context "
                f"length {self._n_ctx}; raise n_ctx"
            )

    def release(self, token_ids: Sequence[int]) -> None:
        """Nothing to do: the server's prefix cache manages itself."""

    async def close(self) -> None:
        self._closed = True
        await self._http.aclose()

    # -- for the backends ---------------------------------------------------------------------

    def _generate_request(self, prompt: list[int], params: SamplingParams) -> dict[str, Any]:
        raise NotImplementedError

    def _read_generation(self, body: Any, prompt: list[int], params: SamplingParams
                         ) -> tuple[list[int], FinishReason, int]:
        """(token ids, finish reason, prompt tokens served from the server's cache)."""
        raise NotImplementedError

    def _score_request(self, prefix: list[int], step: list[int]) -> dict[str, Any]:
        raise NotImplementedError

    def _read_score(self, body: Any, prefix: list[int], step: list[int]
                    ) -> tuple[list[float], int]:
        """(one log-probability per step token, prompt tokens served from the cache)."""
        raise NotImplementedError

    def _extra_info(self) -> dict[str, str]:
        """Backend-specific entries of ``info.extra``."""
        return {}

    def _score_extra_tokens(self) -> int:
        """Tokens a scoring request generates besides the prompt (vLLM refuses max_tokens 0)."""
        return 0

    def _finished(self, kind: object, matched: object, ids: list[int]
                  ) -> tuple[list[int], FinishReason] | None:
        """The step and our finish reason from a server's (kind, matched stop) pair, shared by
        vLLM (finish_reason, stop_reason) and SGLang (finish_reason.type, .matched): "length";
        "stop" on a stop string; "stop" on a token id or none is an end of message (EOS).
        None for any other kind, which each backend reports in its own words."""
        if kind == "length":
            return ids, "length"
        if kind == "stop" and isinstance(matched, str):
            return ids, "stop"
        if kind == "stop":
            return self._ending_with_eos(ids, matched if isinstance(matched, int) else None), "eos"
        return None

    def _ending_with_eos(self, ids: list[int], stop_token: int | None) -> list[int]:
        """The EOS convention of ``Generation``: a step that ended the message holds the
        end-of-generation id last.  Servers return it; one that strips it gets it back."""
        if ids and (ids[-1] == stop_token or self._tokenizer.is_eos(ids[-1])):
            return ids
        eos = stop_token if stop_token is not None else self._tokenizer.eos_token_id
        if eos is None:
            raise RemoteResponseError(
                f"{self.backend}: the step ended at an end-of-generation token, but neither "
                "the server nor the tokenizer says which"
            )
        return [*ids, eos]

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        if self._closed:
            raise EngineUnavailableError(f"{self.backend} engine for {self._served} is closed")
        return await self._http.post(path, payload)

    def _checked(self, ids: Sequence[int], label: str) -> list[int]:
        out = [int(t) for t in ids]
        if not out:
            raise ValueError(f"{label} must not be empty")
        if min(out) < 0:
            raise ValueError(f"{label} holds negative ids: {[t for t in out if t < 0][:5]}")
        return out


def _load_tokenizer(source: str | os.PathLike[str]) -> ClientTokenizer:
    try:
        return ClientTokenizer.load(source)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(
            f"{err}. A remote engine needs the served model's tokenizer on this machine: pass "
            "the folder the server loaded (tokenizer=PATH), a GGUF file, or a named model"
        ) from err
