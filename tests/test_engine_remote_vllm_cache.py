"""The vLLM engine's scoring from the prefix cache (``/inference/v1/generate``), against
scripted responses shaped after vLLM's tokens-in protocol (GenerateTokensResponse: top-level
``prompt_logprobs`` keyed by token id, ``usage.prompt_tokens_details.cached_tokens``): the
path is found at start-up and recorded, only the step's positions are read, and a step whose
positions the cache may have served (or a server that does not say) is scored the old way."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from atts.engines.remote.errors import RemoteRequestError, RemoteResponseError
from atts.engines.remote.vllm import CACHED_SCORE_PATH, VllmEngine
from test_engine_remote import A, FakeServer, _run, ids_of, tok, vllm_completion  # noqa: F401


def generate_body(full: list[int], cached: int | None, *, wrong_at: int | None = None
                  ) -> dict[str, Any]:
    """A tokens-in answer: entries of cached positions are null (vLLM computes none), every
    other position holds its own token (or another one, at ``wrong_at``)."""
    entries: list[Any] = [None]
    for i in range(1, len(full)):
        token = full[i] + 1 if i == wrong_at else full[i]
        entries.append(None if cached is not None and i < cached else
                       {str(token): {"logprob": -0.25 * i, "rank": 1, "decoded_token": None}})
    usage: dict[str, Any] = {"prompt_tokens": len(full), "completion_tokens": 1,
                             "total_tokens": len(full) + 1}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"request_id": "gen-1", "model": "served-model", "created": 1772367069,
            "usage": usage, "prompt_logprobs": entries, "prompt_token_ids": None,
            "output_mode": "tokens",
            "choices": [{"index": 0, "finish_reason": "length", "token_ids": [7],
                         "logprobs": None}]}


def started(server: FakeServer, tok, *, endpoint: bool) -> VllmEngine:  # noqa: F811
    """An engine that went through start-up against ``server`` (health, models, tokenizer,
    and the probe of the tokens-in endpoint when ``endpoint``)."""
    server.on("GET", "/health", {})
    server.on("GET", "/v1/models", {"data": [{"id": "served-model", "max_model_len": 4096}]})
    server.on("POST", "/tokenize", lambda request: httpx.Response(200, json={
        "tokens": tok.tokenize(json.loads(request.content)["prompt"])}))
    if endpoint:
        server.on("POST", CACHED_SCORE_PATH, lambda request: httpx.Response(
            200, json=generate_body(json.loads(request.content)["token_ids"], cached=0)))
    return VllmEngine("served-model", base_url=A, tokenizer=tok, transport=server.transport,
                      backoff=0.0)


def test_start_up_finds_the_cached_path_and_records_it(tok):  # noqa: F811
    engine = started(FakeServer(), tok, endpoint=True)
    assert engine.info.extra["score_path"] == f"{CACHED_SCORE_PATH} (prefix cache)"
    bare = started(FakeServer(), tok, endpoint=False)  # an older server: 404
    assert bare.info.extra["score_path"] == "/v1/completions (no prefix cache)"


@pytest.mark.parametrize(("answer", "flag"), [
    (lambda request: httpx.Response(403, json={"error": {
        "message": "Scale-out endpoints are disabled. Restart vllm serve with "
                   "--enable-scale-out to enable them.",
        "type": "PermissionDeniedError", "code": 403}}), "--enable-scale-out"),
    ("no report", "--enable-prompt-tokens-details"),
])
def test_a_server_without_the_flags_is_scored_uncached_with_one_warning(
        tok, caplog, answer, flag):  # noqa: F811
    # vLLM 0.32 answers 403 on the tokens-in endpoint unless started with --enable-scale-out
    # (found on a real server, tests/test_engine_remote_vllm.py); without
    # --enable-prompt-tokens-details it answers but never says how far its cache reached, so
    # every cached score would be sent again uncached.
    server = FakeServer()
    server.on("POST", CACHED_SCORE_PATH, answer if answer != "no report" else (
        lambda request: httpx.Response(200, json=generate_body(
            json.loads(request.content)["token_ids"], cached=None))))
    with caplog.at_level("WARNING", logger="atts.engines"):
        engine = started(server, tok, endpoint=False)
    assert engine.info.extra["score_path"] == "/v1/completions (no prefix cache)"
    warnings = [r.getMessage() for r in caplog.records if r.name == "atts.engines"]
    assert len(warnings) == 1 and flag in warnings[0], warnings


def test_a_step_is_scored_from_the_cache_reading_only_its_own_positions(tok):  # noqa: F811
    server = FakeServer()
    engine = started(server, tok, endpoint=True)
    prefix, step = ids_of(tok, "Question: two plus two?\n\n"), ids_of(tok, "It is 4.")
    full = prefix + step
    server.on("POST", CACHED_SCORE_PATH,
              generate_body(full, cached=len(prefix) - 1))  # stops short of the step
    score = _run(engine.score(prefix, step))
    assert score.logprobs == tuple(-0.25 * i for i in range(len(prefix), len(full)))
    assert score.cached_tokens == len(prefix) - 1
    sent = server.posts(CACHED_SCORE_PATH)[-1]
    assert sent["token_ids"] == full
    assert sent["sampling_params"]["skip_reading_prefix_cache"] is False
    assert sent["sampling_params"]["prompt_logprobs"] == 0
    assert server.posts("/v1/completions") == []
    assert (engine.cached_scores, engine.uncached_scores) == (1, 0)


@pytest.mark.parametrize("cached", [None, "into the step"])
def test_a_cache_reaching_into_the_step_or_unreported_falls_back(tok, cached):  # noqa: F811
    server = FakeServer()
    engine = started(server, tok, endpoint=True)
    prefix, step = ids_of(tok, "Question: two plus two?\n\n"), ids_of(tok, "It is 4.")
    full = prefix + step
    reach = None if cached is None else len(prefix) + 2
    server.on("POST", CACHED_SCORE_PATH, generate_body(full, cached=reach))
    old = vllm_completion(tok, [7], "length", None, prompt_tokens=len(full))
    old["choices"][0]["prompt_logprobs"] = [None] + [{str(t): {"logprob": -1.0}}
                                                     for t in full[1:]]
    server.on("POST", "/v1/completions", old)
    score = _run(engine.score(prefix, step))
    assert score.logprobs == (-1.0,) * len(step)  # the uncached request's values
    assert len(server.posts("/v1/completions")) == 1
    assert (engine.cached_scores, engine.uncached_scores) == (0, 1)


@pytest.mark.parametrize(("message", "falls_back"), [
    ("Out of range float values are not JSON compliant", True),
    ("This model's maximum context length is 4096 tokens", False),
])
def test_an_answer_the_server_cannot_encode_is_scored_uncached(tok, message,  # noqa: F811
                                                               falls_back):
    # vLLM 0.32 (CPU) fills cached positions' prompt log-probabilities with stale memory; an
    # inf or NaN there makes the server refuse its own answer with HTTP 400 (seen on a real
    # server in an ATTS run, tests/test_engine_remote_vllm.py).  Other refusals still raise.
    server = FakeServer()
    engine = started(server, tok, endpoint=True)
    prefix, step = ids_of(tok, "Question: two plus two?\n\n"), ids_of(tok, "It is 4.")
    full = prefix + step
    server.on("POST", CACHED_SCORE_PATH, lambda request: httpx.Response(
        400, json={"error": {"message": message, "type": "BadRequestError", "code": 400}}))
    old = vllm_completion(tok, [7], "length", None, prompt_tokens=len(full))
    old["choices"][0]["prompt_logprobs"] = [None] + [{str(t): {"logprob": -1.0}}
                                                     for t in full[1:]]
    server.on("POST", "/v1/completions", old)
    if not falls_back:
        with pytest.raises(RemoteRequestError, match="maximum context length"):
            _run(engine.score(prefix, step))
        assert server.posts("/v1/completions") == []
        return
    score = _run(engine.score(prefix, step))
    assert score.logprobs == (-1.0,) * len(step)
    assert (engine.cached_scores, engine.uncached_scores, engine.refused_scores) == (0, 1, 1)


def test_a_position_holding_another_token_is_an_error(tok):  # noqa: F811
    server = FakeServer()
    engine = started(server, tok, endpoint=True)
    prefix, step = ids_of(tok, "Question?\n\n"), ids_of(tok, "Yes.")
    server.on("POST", CACHED_SCORE_PATH,
              generate_body(prefix + step, cached=len(prefix) - 1, wrong_at=len(prefix) + 1))
    with pytest.raises(RemoteResponseError, match="lack the prompt's token"):
        _run(engine.score(prefix, step))


def sglang_answer(prefix: list[int], step: list[int], cached: int) -> dict[str, Any]:
    entries = [[None, prefix[-1], None]] + [[-0.5, t, None] for t in step]
    return {"text": "", "output_ids": [],
            "meta_info": {"id": "a1", "finish_reason": {"type": "length", "length": 0},
                          "prompt_tokens": len(prefix) + len(step), "completion_tokens": 0,
                          "cached_tokens": cached, "input_token_logprobs": entries,
                          "output_token_logprobs": []}}


@pytest.mark.parametrize(("cached_share", "warned"), [(0.0, True), (0.9, False)])
def test_sglang_warns_once_when_long_prefixes_stay_uncached(tok, caplog, cached_share,  # noqa: F811
                                                            warned):
    """A server started without its radix cache re-reads every trajectory: after a few long
    scored prefixes that come back mostly uncached, one warning (and only one)."""
    from test_engine_remote import _sglang

    prefix, step = list(range(3, 203)), ids_of(tok, "x+1")
    server = FakeServer()
    server.on("POST", "/generate", sglang_answer(prefix, step, int(cached_share * 200)))
    engine = _sglang(server, tok)
    with caplog.at_level("WARNING", logger="atts.engines"):
        for _ in range(20):
            _run(engine.score(prefix, step))
    warnings = [r for r in caplog.records if "radix cache" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0)
