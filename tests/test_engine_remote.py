"""Remote engines (vLLM, SGLang, OpenAI-compatible) against httpx's MockTransport, no network.

The fake servers answer with bodies shaped like real ones (vLLM 0.10+ ``/v1/completions`` with
``token_ids``, ``stop_reason`` and ``prompt_logprobs`` whose first entry is null and whose
keys are token ids as strings; SGLang ``/generate`` with ``meta_info.output_token_logprobs``,
``input_token_logprobs`` starting with a null entry, ``finish_reason`` objects and
``cached_tokens``).  Guarantees checked:

- the exact request payloads each backend sends for a step and for a score;
- a step's ids are the server's ids, its text their client-side detokenisation, and a step
  ended by the end-of-generation token keeps that id last (``Generation``'s convention);
- scores take the value of the actual token at each step position, the null entry dropped;
- retries: 503 then success; no retry on 400 (the server's message kept; an overflow message
  -> ContextOverflowError); Retry-After honoured; timeouts retried then reported as
  EngineUnavailableError; each call carries the configured timeout;
- routing: least requests in flight first, sequential calls rotate, a retry moves to another
  endpoint; the start-up health check names each endpoint that does not answer;
- the client tokenizer loads from a folder and from the real tiny model's GGUF.

A small byte-level tokenizer built in code serves most tests; the real one is loaded once.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("transformers")

from atts.engines import create_engine  # noqa: E402
from atts.engines.base import (  # noqa: E402
    ChatMessage,
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    SamplingParams,
)
from atts.engines.remote.errors import (  # noqa: E402
    RemoteContextOverflowError,
    RemoteRequestError,
    RemoteResponseError,
    RemoteUnavailableError,
)
from atts.engines.remote.http import RemoteHttp, RetryPolicy, parse_retry_after  # noqa: E402
from atts.engines.remote.openai_compat import OpenAICompatEngine  # noqa: E402
from atts.engines.remote.sglang import SglangEngine  # noqa: E402
from atts.engines.remote.tokenizer import ClientTokenizer  # noqa: E402
from atts.engines.remote.vllm import PROBE_TEXT, VllmEngine  # noqa: E402
from atts.pipeline.guarded import TRANSIENT  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 2
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
A, B = "http://gpu-a:8000", "http://gpu-b:8000"
STEP_PARAMS = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.95, stop=("\n\n",), seed=7)


# -- a byte-level tokenizer built in code ------------------------------------------------------

def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the ByteLevel pre-tokenizer's alphabet)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _hf_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    stand_in = _byte_to_unicode()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in [10, *range(32, 127)]:
        vocab[stand_in[b]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="module")
def tok() -> ClientTokenizer:
    return ClientTokenizer(_hf_tokenizer(), name="bytes")


def ids_of(tok: ClientTokenizer, text: str) -> list[int]:
    return tok.tokenize(text)


# -- a scripted server -------------------------------------------------------------------------

Handler = Callable[[Any], Any]


class FakeServer:
    """Routes ``(host, method, path)`` to handlers; records every request it is sent."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], Handler] = {}
        self.requests: list[Any] = []
        self.transport = httpx.MockTransport(self._handle)

    def on(self, method: str, path: str, handler: Handler | dict[str, Any],
           host: str | None = None) -> None:
        if isinstance(handler, dict):
            body = handler
            handler = lambda request: httpx.Response(200, json=body)  # noqa: E731
        for h in ([host] if host else [A, B]):
            self.routes[(h, method, path)] = handler

    def _handle(self, request: Any) -> Any:
        self.requests.append(request)
        host = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        handler = self.routes.get((host, request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        return handler(request)

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests
                if r.method == "POST" and r.url.path == path]

    def hosts(self, path: str) -> list[str]:
        return [f"http://{r.url.host}:{r.url.port}" for r in self.requests if r.url.path == path]


def _vllm(server: FakeServer, tok: ClientTokenizer, **options: Any) -> VllmEngine:
    options = {"base_url": A, "tokenizer": tok, "check_health": False, "n_ctx": 4096,
               "backoff": 0.0, **options}
    return VllmEngine("served-model", transport=server.transport, **options)


def _sglang(server: FakeServer, tok: ClientTokenizer, **options: Any) -> SglangEngine:
    options = {"base_url": A, "tokenizer": tok, "check_health": False, "n_ctx": 4096,
               "backoff": 0.0, **options}
    return SglangEngine("served-model", transport=server.transport, **options)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- response bodies shaped like the real servers' ----------------------------------------------

def vllm_completion(tok: ClientTokenizer | None, ids: list[int], finish: str,
                    stop_reason: str | int | None, *, with_ids: bool = True,
                    prompt_tokens: int = 12, cached: int | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "text": tok.detokenize(ids) if tok is not None else "",
        "logprobs": {
            "text_offset": list(range(len(ids))),
            "token_logprobs": [-0.5] * len(ids),
            "tokens": [f"token_id:{t}" for t in ids],
            "top_logprobs": [{f"token_id:{t}": -0.5} for t in ids],
        },
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
    }
    if with_ids:
        choice["token_ids"] = ids
    return {
        "id": "cmpl-8c16f81d43846721",
        "object": "text_completion",
        "created": 1772367069,
        "model": "served-model",
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(ids),
            "completion_tokens": len(ids),
            "prompt_tokens_details": None if cached is None else {"cached_tokens": cached},
        },
        "kv_transfer_params": None,
    }


def vllm_prompt_logprobs(full: list[int], values: dict[int, float],
                         runner_up: dict[int, int] | None = None) -> dict[str, Any]:
    """``prompt_logprobs: 0``: null first, then ``{"<id>": {logprob, rank, decoded_token}}``;
    ``values`` maps position -> the actual token's logprob (others get -1.0); ``runner_up``
    adds a second, more likely token at a position (as with ``prompt_logprobs: 1``)."""
    entries: list[Any] = [None]
    for i in range(1, len(full)):
        lp = values.get(i, -1.0)
        entry = {str(full[i]): {"logprob": lp, "rank": 2 if runner_up and i in runner_up else 1,
                                "decoded_token": "x"}}
        if runner_up and i in runner_up:
            entry[str(runner_up[i])] = {"logprob": -0.01, "rank": 1, "decoded_token": "y"}
        entries.append(entry)
    body = vllm_completion(None, [50], "length", None, prompt_tokens=len(full))
    body["choices"][0]["prompt_logprobs"] = entries
    return body


def sglang_generate(tok: ClientTokenizer, ids: list[int], finish: dict[str, Any], *,
                    prompt_tokens: int, cached: int, output_ids: list[int] | None = None,
                    with_logprobs: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": "16364db12c7841408db86b720b5d37b9",
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "weight_version": "default",
        "completion_tokens": len(ids),
        "cached_tokens": cached,
        "e2e_latency": 0.21,
    }
    if with_logprobs:
        meta["input_token_logprobs"] = [[None, 198, None]]
        meta["output_token_logprobs"] = [[-0.25, t, None] for t in ids]
    return {"text": tok.detokenize(ids), "output_ids": output_ids if output_ids else ids,
            "meta_info": meta}


# -- vLLM: generation ---------------------------------------------------------------------------

def test_vllm_generate_payload_and_stop_string(tok: ClientTokenizer) -> None:
    server = FakeServer()
    step = ids_of(tok, "x = 6 * 7 = 42.\n\n")
    server.on("POST", "/v1/completions", vllm_completion(tok, step, "stop", "\n\n", cached=8))
    engine = _vllm(server, tok)
    prompt = tok.render_chat([ChatMessage("user", "What is 6 * 7?")])
    gen = _run(engine.generate(prompt, STEP_PARAMS))
    assert server.posts("/v1/completions") == [{
        "model": "served-model",
        "prompt": prompt,
        "max_tokens": 16,
        "temperature": 0.8,
        "top_p": 0.95,
        "n": 1,
        "include_stop_str_in_output": True,
        "return_token_ids": True,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
        "stop": ["\n\n"],
        "seed": 7,
    }]
    assert gen.token_ids == tuple(step)
    assert gen.text == "x = 6 * 7 = 42.\n\n"
    assert gen.finish_reason == "stop"
    assert (gen.prompt_tokens, gen.cached_tokens) == (len(prompt), 8)


@pytest.mark.parametrize("stop_reason", [None, EOS])
def test_vllm_eos_is_kept_as_the_last_id(tok: ClientTokenizer, stop_reason: int | None) -> None:
    server = FakeServer()
    step = [*ids_of(tok, "The answer is 42."), EOS]
    server.on("POST", "/v1/completions", vllm_completion(tok, step, "stop", stop_reason))
    gen = _run(_vllm(server, tok).generate([1, 50, 51], STEP_PARAMS))
    assert gen.finish_reason == "eos"
    assert gen.token_ids == tuple(step)
    assert gen.text == "The answer is 42."  # the end-of-turn token has no text


def test_vllm_eos_stripped_by_the_server_is_put_back(tok: ClientTokenizer) -> None:
    server = FakeServer()
    step = ids_of(tok, "Done.")
    server.on("POST", "/v1/completions", vllm_completion(tok, step, "stop", None))
    gen = _run(_vllm(server, tok).generate([1, 50], STEP_PARAMS))
    assert gen.token_ids == (*step, EOS)


def test_vllm_length_and_ids_from_logprob_tokens(tok: ClientTokenizer) -> None:
    server = FakeServer()
    step = ids_of(tok, "abcdefgh")
    # An older vLLM: no token_ids, but logprobs.tokens as "token_id:N".
    server.on("POST", "/v1/completions",
              vllm_completion(tok, step, "length", None, with_ids=False))
    gen = _run(_vllm(server, tok).generate([1, 50], STEP_PARAMS))
    assert (gen.token_ids, gen.finish_reason) == (tuple(step), "length")


def test_vllm_answer_without_ids_is_an_error(tok: ClientTokenizer) -> None:
    server = FakeServer()
    body = vllm_completion(tok, ids_of(tok, "ab"), "length", None, with_ids=False)
    body["choices"][0]["logprobs"] = None
    server.on("POST", "/v1/completions", body)
    with pytest.raises(RemoteResponseError, match="no token ids"):
        _run(_vllm(server, tok).generate([1, 50], STEP_PARAMS))


# -- vLLM: scoring ------------------------------------------------------------------------------

def test_vllm_score_payload_and_values(tok: ClientTokenizer) -> None:
    server = FakeServer()
    prefix = tok.render_chat([ChatMessage("user", "2+2?")])
    step = ids_of(tok, "It is 4.")
    full = prefix + step
    n = len(prefix)
    values = {n + j: -0.1 * (j + 1) for j in range(len(step))}
    values[n - 1] = -9.0  # a prefix position: must not leak into the step's scores
    server.on("POST", "/v1/completions",
              vllm_prompt_logprobs(full, values, runner_up={n + 1: 77, n + 3: 78}))
    score = _run(_vllm(server, tok).score(prefix, step))
    assert server.posts("/v1/completions") == [{
        "model": "served-model", "prompt": full, "max_tokens": 1, "temperature": 0.0, "n": 1,
        "prompt_logprobs": 0,
    }]
    assert score.logprobs == pytest.approx([-0.1 * (j + 1) for j in range(len(step))])


def test_vllm_score_rejects_answers_that_do_not_fit(tok: ClientTokenizer) -> None:
    prefix, step = [1, 50, 51], [52, 53]
    full = prefix + step
    server = FakeServer()
    body = vllm_prompt_logprobs(full, {})
    body["choices"][0]["prompt_logprobs"][4] = {"99": {"logprob": -0.3, "rank": 1}}
    server.on("POST", "/v1/completions", body)
    with pytest.raises(RemoteResponseError, match="lack the prompt's token 53"):
        _run(_vllm(server, tok).score(prefix, step))
    server = FakeServer()
    body["choices"][0]["prompt_logprobs"] = None
    server.on("POST", "/v1/completions", body)
    with pytest.raises(RemoteResponseError, match="no prompt_logprobs"):
        _run(_vllm(server, tok).score(prefix, step))


def test_context_is_checked_before_sending(tok: ClientTokenizer) -> None:
    server = FakeServer()
    engine = _vllm(server, tok, n_ctx=20)
    with pytest.raises(ContextOverflowError):
        _run(engine.generate(list(range(3, 10)), SamplingParams(max_tokens=14)))
    with pytest.raises(ContextOverflowError):  # vLLM scores with max_tokens 1: 20 + 1 > 20
        _run(engine.score(list(range(3, 13)), list(range(3, 13))))
    assert server.requests == []


# -- SGLang -------------------------------------------------------------------------------------

def test_sglang_generate_payload_and_finish_reasons(tok: ClientTokenizer) -> None:
    step = ids_of(tok, "Let x = 3.\n\n")
    server = FakeServer()
    server.on("POST", "/generate", sglang_generate(
        tok, step, {"type": "stop", "matched": "\n\n"}, prompt_tokens=9, cached=8))
    engine = _sglang(server, tok)
    prompt = list(range(3, 12))
    gen = _run(engine.generate(prompt, STEP_PARAMS))
    assert server.posts("/generate") == [{
        "input_ids": prompt,
        "sampling_params": {"max_new_tokens": 16, "temperature": 0.8, "top_p": 0.95,
                            "no_stop_trim": True, "stop": ["\n\n"], "sampling_seed": 7},
        "return_logprob": True,
        "stream": False,
    }]
    assert (gen.token_ids, gen.text, gen.finish_reason) == (tuple(step), "Let x = 3.\n\n", "stop")
    assert gen.cached_tokens == 8

    eos_step = [*ids_of(tok, "So 3."), EOS]
    server.on("POST", "/generate", sglang_generate(
        tok, eos_step, {"type": "stop", "matched": EOS}, prompt_tokens=9, cached=0))
    gen = _run(engine.generate(prompt, STEP_PARAMS))
    assert (gen.token_ids, gen.text, gen.finish_reason) == (tuple(eos_step), "So 3.", "eos")

    server.on("POST", "/generate", sglang_generate(
        tok, step[:4], {"type": "length", "length": 4}, prompt_tokens=9, cached=0))
    assert _run(engine.generate(prompt, STEP_PARAMS)).finish_reason == "length"


def test_sglang_output_ids_with_prompt_tokens_prepended(tok: ClientTokenizer) -> None:
    """Some SGLang versions prepend prompt tokens to output_ids; completion_tokens bounds it."""
    step = ids_of(tok, "ok\n\n")
    server = FakeServer()
    server.on("POST", "/generate", sglang_generate(
        tok, step, {"type": "stop", "matched": "\n\n"}, prompt_tokens=5, cached=0,
        output_ids=[9, 10, *step], with_logprobs=False))
    gen = _run(_sglang(server, tok).generate([3, 4, 5, 9, 10], STEP_PARAMS))
    assert gen.token_ids == tuple(step)


def test_sglang_score_payload_values_and_cache(tok: ClientTokenizer) -> None:
    prefix = list(range(3, 40))
    step = ids_of(tok, "x+1")
    entries = [[None, prefix[-1], None]] + [[-0.5 * (j + 1), t, None]
                                            for j, t in enumerate(step)]
    server = FakeServer()
    server.on("POST", "/generate", {
        "text": "",
        "output_ids": [],
        "meta_info": {"id": "a1", "finish_reason": {"type": "length", "length": 0},
                      "prompt_tokens": 40, "completion_tokens": 0, "cached_tokens": 36,
                      "input_token_logprobs": entries, "output_token_logprobs": []},
    })
    score = _run(_sglang(server, tok).score(prefix, step))
    assert server.posts("/generate") == [{
        "input_ids": prefix + step,
        "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
        "return_logprob": True,
        "logprob_start_len": len(prefix) - 1,
        "stream": False,
    }]
    assert score.logprobs == pytest.approx([-0.5, -1.0, -1.5])
    assert score.cached_tokens == 36

    entries[2][1] = 99  # a token that is not the step's
    with pytest.raises(RemoteResponseError, match="token 99"):
        _run(_sglang(server, tok).score(prefix, step))


def test_sglang_aborts(tok: ClientTokenizer) -> None:
    server = FakeServer()
    abort = {"type": "abort", "status_code": 400, "err_type": "BadRequestError",
             "message": "The input (5000 tokens) is longer than the model's context length "
                        "(4096 tokens)."}
    server.on("POST", "/generate", {"text": "", "output_ids": [],
                                    "meta_info": {"finish_reason": abort}})
    with pytest.raises(ContextOverflowError):
        _run(_sglang(server, tok).generate([3, 4], STEP_PARAMS))
    server.on("POST", "/generate", {"text": "", "output_ids": [], "meta_info": {
        "finish_reason": {"type": "abort", "message": "Abort before prefill"}}})
    with pytest.raises(EngineUnavailableError):
        _run(_sglang(server, tok).generate([3, 4], STEP_PARAMS))


# -- retries, errors, timeouts ------------------------------------------------------------------

def _sequence(*responses: Any) -> Handler:
    """A handler answering with the given responses (or raising the given exceptions) in turn."""
    queue = list(responses)

    def handler(request: Any) -> Any:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def test_retry_on_503_then_success(tok: ClientTokenizer) -> None:
    step = ids_of(tok, "ok")
    server = FakeServer()
    server.on("POST", "/v1/completions", _sequence(
        httpx.Response(503, json={"object": "error", "message": "Service Unavailable",
                                  "type": "ServiceUnavailableError", "code": 503}),
        httpx.Response(502, text="Bad Gateway"),
        httpx.Response(200, json=vllm_completion(tok, step, "length", None)),
    ))
    engine = _vllm(server, tok, max_retries=3)
    gen = _run(engine.generate([1, 50], STEP_PARAMS))
    assert gen.token_ids == tuple(step)
    assert len(server.requests) == 3 and engine.retries == 2


def test_no_retry_on_400_and_the_servers_message_is_kept(tok: ClientTokenizer) -> None:
    server = FakeServer()
    server.on("POST", "/v1/completions", lambda r: httpx.Response(400, json={
        "error": {"message": "temperature must be non-negative, got -1.",
                  "type": "BadRequestError", "param": None, "code": 400}}))
    with pytest.raises(RemoteRequestError, match="temperature must be non-negative") as info:
        _run(_vllm(server, tok).generate([1, 50], STEP_PARAMS))
    assert info.value.status == 400 and not isinstance(info.value, EngineUnavailableError)
    assert len(server.requests) == 1


def test_context_overflow_from_the_server(tok: ClientTokenizer) -> None:
    server = FakeServer()
    server.on("POST", "/v1/completions", lambda r: httpx.Response(400, json={
        "object": "error", "type": "BadRequestError", "param": None, "code": 400,
        "message": "This model's maximum context length is 4096 tokens. However, you "
                   "requested 4200 tokens (4040 in the messages, 160 in the completion). "
                   "Please reduce the length of the messages or completion."}))
    with pytest.raises(RemoteContextOverflowError) as info:
        _run(_vllm(server, tok).generate([1, 50], STEP_PARAMS))
    assert isinstance(info.value, ContextOverflowError) and len(server.requests) == 1


def _http(server: FakeServer, urls: Any = A, **kw: Any) -> tuple[RemoteHttp, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff=0.5, max_backoff=4.0))
    http = RemoteHttp(urls, name="test", transport=server.transport, sleep=sleep,
                      rng=random.Random(0), **kw)
    return http, slept


def test_retry_after_is_honoured_and_backoff_grows_with_jitter() -> None:
    server = FakeServer()
    server.on("POST", "/x", _sequence(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow down"}),
        httpx.Response(500, json={"message": "boom"}),
        httpx.Response(500, json={"message": "boom"}),
        httpx.Response(200, json={"ok": True}),
    ))
    http, slept = _http(server)
    assert _run(http.post("/x", {})) == {"ok": True}
    assert slept[0] == 3.0
    # Without Retry-After: min(cap, 0.5 * 2**attempt) * U(0.5, 1.5), at most the cap (4 s).
    assert 0.5 <= slept[1] <= 1.5 and 1.0 <= slept[2] <= 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_timeouts_are_retried_then_reported_as_unavailable() -> None:
    server = FakeServer()
    server.on("POST", "/x", _sequence(*[httpx.ReadTimeout("timed out")] * 3))
    http, slept = _http(server, retry=RetryPolicy(max_retries=2, backoff=0.1), timeout=7.5)
    with pytest.raises(RemoteUnavailableError, match=r"no answer within 7\.5 s") as info:
        _run(http.post("/x", {}))
    assert isinstance(info.value, TRANSIENT)  # the run-level wrapper may retry it
    assert info.value.attempts == 3 and len(slept) == 2
    timeouts = server.requests[0].extensions["timeout"]
    assert timeouts["read"] == 7.5 and timeouts["connect"] == 7.5  # connect <= the call's limit


def test_per_call_timeout_overrides_the_default() -> None:
    server = FakeServer()
    server.on("POST", "/x", {"ok": True})
    http, _ = _http(server, timeout=60.0, connect_timeout=2.0)
    _run(http.post("/x", {}, timeout=300.0))
    assert server.requests[0].extensions["timeout"] == {
        "connect": 2.0, "read": 300.0, "write": 300.0, "pool": 300.0}


# -- routing and health ------------------------------------------------------------------------

def test_least_loaded_routing() -> None:
    server = FakeServer()
    release = asyncio.Event()

    async def slow(request: Any) -> Any:
        await release.wait()
        return httpx.Response(200, json={"host": "a"})

    server.on("POST", "/x", slow, host=A)
    server.on("POST", "/x", {"host": "b"}, host=B)
    http, _ = _http(server, urls=[A, B])

    async def main() -> list[str]:
        first = asyncio.create_task(http.post("/x", {}))
        await asyncio.sleep(0.01)  # A now has one request in flight
        assert http.router.in_flight() == {A: 1, B: 0}
        second = await http.post("/x", {})
        third = await http.post("/x", {})
        release.set()
        return [(await first)["host"], second["host"], third["host"]]

    assert _run(main()) == ["a", "b", "b"]
    assert server.hosts("/x") == [A, B, B]

    quick = FakeServer()
    quick.on("POST", "/x", {"ok": True})
    http, _ = _http(quick, urls=f"{A}, {B}/v1/")  # comma-separated; "/v1" and "/" dropped
    for _ in range(4):
        _run(http.post("/x", {}))
    assert quick.hosts("/x") == [A, B, A, B]  # idle endpoints take turns


def test_a_retry_goes_to_another_endpoint() -> None:
    server = FakeServer()
    server.on("POST", "/x", lambda r: httpx.Response(503, json={"message": "loading"}), host=A)
    server.on("POST", "/x", {"ok": True}, host=B)
    http, _ = _http(server, urls=[A, B])
    assert _run(http.post("/x", {})) == {"ok": True}
    assert server.hosts("/x") == [A, B]


def test_health_check_names_the_dead_endpoint(tok: ClientTokenizer) -> None:
    server = FakeServer()
    server.on("GET", "/health", lambda r: httpx.Response(200), host=A)

    def refuse(request: Any) -> Any:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    server.on("GET", "/health", refuse, host=B)
    with pytest.raises(RemoteUnavailableError) as info:
        VllmEngine("m", base_url=[A, B], tokenizer=tok, transport=server.transport, n_ctx=64)
    message = str(info.value)
    assert "1 of 2 endpoint(s)" in message and B in message and "Connection refused" in message
    assert A not in message.split("did not answer:")[1]
    assert info.value.endpoints == (B,)


def _healthy_vllm_server(tok: ClientTokenizer, models: list[dict[str, Any]],
                         tokens: list[int] | None = None) -> FakeServer:
    server = FakeServer()
    server.on("GET", "/health", lambda r: httpx.Response(200))
    server.on("GET", "/v1/models", {"object": "list", "data": models})
    server.on("POST", "/tokenize", {"count": 3, "max_model_len": 2048,
                                    "tokens": tokens if tokens is not None
                                    else tok.tokenize(PROBE_TEXT), "token_strs": None})
    return server


def _model_card(name: str, max_len: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1772367069, "owned_by": "vllm",
            "root": f"/models/{name}", "parent": None, "max_model_len": max_len,
            "permission": []}


def test_start_up_reads_the_served_model_and_its_context(tok: ClientTokenizer) -> None:
    server = _healthy_vllm_server(tok, [_model_card("qwen-7b", 2048)])
    engine = VllmEngine("bytes", base_url=[A, B], tokenizer=tok, transport=server.transport,
                        n_ctx=4096)
    info = engine.info
    assert (info.backend, info.model, info.context_length) == ("vllm", "qwen-7b", 2048)
    assert info.extra["base_url"] == f"{A},{B}" and info.vocab_size == tok.vocab_size
    assert [r.url.path for r in server.requests if r.url.path == "/health"] == ["/health"] * 2

    two = _healthy_vllm_server(tok, [_model_card("a", 4096), _model_card("b", 4096)])
    with pytest.raises(EngineError, match="several models"):
        VllmEngine("bytes", base_url=A, tokenizer=tok, transport=two.transport)
    engine = VllmEngine("bytes", base_url=A, tokenizer=tok, transport=two.transport,
                        served_model_name="b")
    assert engine.info.model == "b" and engine.info.context_length == 4096


def test_start_up_refuses_a_different_tokenizer(tok: ClientTokenizer) -> None:
    server = _healthy_vllm_server(tok, [_model_card("m", 512)], tokens=[1, 2, 3])
    with pytest.raises(EngineError, match="disagree"):
        VllmEngine("m", base_url=A, tokenizer=tok, transport=server.transport)


# -- the OpenAI-compatible backend --------------------------------------------------------------

def test_openai_text_prompts_and_retokenized_steps(tok: ClientTokenizer) -> None:
    server = FakeServer()
    prompt = tok.render_chat([ChatMessage("user", "hi")])
    # A server that strips the stop string and says neither why nor which ids it produced.
    server.on("POST", "/v1/completions", {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "Hello there.", "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    })
    engine = OpenAICompatEngine("m", base_url=A, tokenizer=tok, check_health=False, n_ctx=512,
                                prompt_format="text", transport=server.transport)
    gen = _run(engine.generate(prompt, STEP_PARAMS))
    sent = server.posts("/v1/completions")[0]
    assert sent["prompt"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (gen.text, gen.finish_reason) == ("Hello there.\n\n", "stop")
    assert list(gen.token_ids) == tok.tokenize("Hello there.\n\n")
    assert engine.info.extra["retokenized"] == "1"
    with pytest.raises(EngineError, match="--engine vllm"):
        _run(engine.score(prompt, [50]))


def test_openai_echo_scoring(tok: ClientTokenizer) -> None:
    server = FakeServer()
    prefix, step = [1, 40, 41, 42], [43, 44]
    server.on("POST", "/v1/completions", {
        "id": "cmpl-2", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "....", "finish_reason": "length", "logprobs": {
            "text_offset": [0, 1, 2, 3, 4, 5, 6],
            "token_logprobs": [None, -8.8, -1.5, -13.5, -2.0, -2.2, -0.4],
            "tokens": ["a", "b", "c", "d", "e", "f", "g"],
            "top_logprobs": [None] + [{"x": -0.1}] * 6}}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7},
    })
    engine = OpenAICompatEngine("m", base_url=A, tokenizer=tok, check_health=False, n_ctx=512,
                                scoring="echo", extra_body={"top_k": 1},
                                transport=server.transport)
    score = _run(engine.score(prefix, step))
    assert score.logprobs == (-2.0, -2.2)
    assert server.posts("/v1/completions")[0] == {
        "model": "m", "prompt": prefix + step, "max_tokens": 1, "temperature": 0.0, "n": 1,
        "echo": True, "logprobs": 1, "top_k": 1}
    with pytest.raises(ValueError, match="prompt_format='ids'"):
        OpenAICompatEngine("m", base_url=A, tokenizer=tok, check_health=False, n_ctx=8,
                           scoring="echo", prompt_format="text")


# -- registry, lifecycle, tokenizer ------------------------------------------------------------

def test_registry_builds_remote_engines(tok: ClientTokenizer) -> None:
    server = FakeServer()
    for spec, cls in (("vllm:served-model", VllmEngine), ("sglang:served-model", SglangEngine),
                      ("openai:served-model", OpenAICompatEngine)):
        engine = create_engine(spec, "target", base_url=A, tokenizer=tok, check_health=False,
                               n_ctx=1024, transport=server.transport)
        assert isinstance(engine, cls) and engine.info.model == "served-model"
    with pytest.raises(ValueError, match="name the model"):
        create_engine("vllm", "draft", base_url=A)


def test_closed_engine_refuses_calls(tok: ClientTokenizer) -> None:
    engine = _vllm(FakeServer(), tok)
    _run(engine.close())
    with pytest.raises(EngineUnavailableError, match="closed"):
        _run(engine.generate([1, 2], STEP_PARAMS))


def test_tokenizer_from_a_folder(tok: ClientTokenizer, tmp_path: Path) -> None:
    _hf_tokenizer().save_pretrained(tmp_path)
    loaded = ClientTokenizer.load(tmp_path)
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "1+1?")]
    assert loaded.render_chat(messages) == tok.render_chat(messages)
    assert loaded.tokenize("x\n\ny") == tok.tokenize("x\n\ny")
    # <|im_end|> (the EOS) and <|endoftext|> both end generation, as in llama.cpp.
    assert loaded.eos_token_ids == frozenset({0, EOS}) and loaded.eos_token_id == EOS
    assert loaded.detokenize([*loaded.tokenize("N"), EOS]) == "N"
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        ClientTokenizer.load(tmp_path / "..")


def test_importing_the_backends_stays_light() -> None:
    code = ("import sys, atts.engines.remote.vllm, atts.engines.remote.sglang, "
            "atts.engines.remote.openai_compat; "
            "print(sorted(m for m in ('httpx', 'transformers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_real_tiny_tokenizer_matches_the_embedded_engine(tiny_model: Path) -> None:
    """The client renders and tokenises exactly as llama.cpp does on the real GGUF."""
    real = ClientTokenizer.load("smollm2-135m")
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", "What is 7*6?")]
    text = "First, 7 × 6 = 42.\n\nSo the answer is \\boxed{42}."
    server = FakeServer()
    engine = VllmEngine("smollm2-135m", base_url=A, tokenizer=real, check_health=False,
                        n_ctx=2048, transport=server.transport)
    assert engine.detokenize(engine.tokenize(text)) == text
    assert real.eos_token_id is not None and real.is_eos(real.eos_token_id)
    llama_cpp = pytest.importorskip("llama_cpp")
    del llama_cpp
    from atts.engines.llama_cpp import LlamaCppEngine

    llama = LlamaCppEngine(tiny_model, n_ctx=256, n_contexts=1, n_threads=1)
    try:
        assert engine.render_chat(messages) == llama.render_chat(messages)
        assert engine.tokenize(text) == llama.tokenize(text)
    finally:
        _run(llama.close())
