"""Malformed requests, sent raw: each gets the right 4xx and an OpenAI error body, never a 500,
and the server keeps answering good requests afterwards."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from atts.serve.app import create_app
from atts.serve.settings import ServeSettings
from test_serve_helpers import USER, running, service

GOOD = {"model": "atts", "messages": USER}
SETTINGS = ServeSettings(max_n=4, max_rounds=8, max_step_tokens=256,
                         max_completion_tokens=1000, max_body_bytes=4096)


def with_(**changes: object) -> dict:
    return {**GOOD, **changes}


def without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


# (case, body (bytes are sent as they are), status, param, code)
CASES = [
    ("invalid JSON", b'{"model": "atts", "messages": [', 400, None, "invalid_json"),
    ("empty body", b"", 400, None, "invalid_json"),
    ("a JSON array", b"[]", 400, None, "invalid_type"),
    ("missing messages", without("messages"), 400, "messages",
     "missing_required_parameter"),
    ("missing model", without("model"), 400, "model", "missing_required_parameter"),
    ("empty messages", with_(messages=[]), 400, "messages", "invalid_value"),
    ("messages not a list", with_(messages="hi"), 400, "messages", "invalid_type"),
    ("message not an object", with_(messages=["hi"]), 400, "messages[0]", "invalid_type"),
    ("unknown role", with_(messages=[{"role": "tool", "content": "x"}]), 400,
     "messages[0].role", "invalid_value"),
    ("role of the wrong type", with_(messages=[{"role": 1, "content": "x"}]), 400,
     "messages[0].role", "invalid_type"),
    ("content of the wrong type", with_(messages=[{"role": "user", "content": 5}]), 400,
     "messages[0].content", "invalid_value"),
    ("missing content", with_(messages=[{"role": "user"}]), 400, "messages[0].content",
     "missing_required_parameter"),
    ("null content", with_(messages=[{"role": "user", "content": None}]), 400,
     "messages[0].content", "invalid_value"),
    ("image content", with_(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]), 400,
     "messages[0].content", "invalid_value"),
    ("no user message", with_(messages=[{"role": "system", "content": "Be brief."}]), 400,
     "messages", "invalid_value"),
    ("n = 0", with_(n=0), 400, "n", "invalid_value"),
    ("n above the limit", with_(n=5), 400, "n", "invalid_value"),
    ("n as a string", with_(n="2"), 400, "n", "invalid_type"),
    ("n as a float", with_(n=1.5), 400, "n", "invalid_type"),
    ("temperature above 2", with_(temperature=3), 400, "temperature", "invalid_value"),
    ("temperature negative", with_(temperature=-0.1), 400, "temperature", "invalid_value"),
    ("temperature as a string", with_(temperature="hot"), 400, "temperature",
     "invalid_type"),
    ("top_p = 0", with_(top_p=0), 400, "top_p", "invalid_value"),
    ("max_tokens = 0", with_(max_tokens=0), 400, "max_tokens", "invalid_value"),
    ("max_tokens above the limit", with_(max_tokens=1001), 400, "max_tokens",
     "invalid_value"),
    ("stream as a string", with_(stream="yes"), 400, "stream", "invalid_type"),
    ("stream_options without stream", with_(stream_options={"include_usage": True}), 400,
     "stream_options", "invalid_value"),
    ("alpha = 0", with_(atts={"alpha": 0}), 400, "atts.alpha", "invalid_value"),
    ("alpha = 1.5", with_(atts={"alpha": 1.5}), 400, "atts.alpha", "invalid_value"),
    ("alpha_discard above alpha", with_(atts={"alpha": 0.1, "alpha_discard": 0.2}), 400,
     "atts.alpha_discard", "invalid_value"),
    ("rounds = 0", with_(atts={"rounds": 0}), 400, "atts.rounds", "invalid_value"),
    ("rounds above the limit", with_(atts={"rounds": 9}), 400, "atts.rounds",
     "invalid_value"),
    ("min_rounds above rounds", with_(atts={"rounds": 2, "min_rounds": 3}), 400,
     "atts.min_rounds", "invalid_value"),
    ("draft_tokens above the limit", with_(atts={"draft_tokens": 257}), 400,
     "atts.draft_tokens", "invalid_value"),
    ("trace as a string", with_(atts={"trace": "yes"}), 400, "atts.trace", "invalid_type"),
    ("unknown atts field", with_(atts={"alfa": 0.1}), 400, "atts.alfa", "unknown_parameter"),
    ("atts not an object", with_(atts=0.1), 400, "atts", "invalid_type"),
    ("unknown field", with_(temprature=0.5), 400, "temprature", "unknown_parameter"),
    ("tools", with_(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools",
     "unsupported_parameter"),
    ("logprobs", with_(logprobs=True), 400, "logprobs", "unsupported_parameter"),
    ("stop strings", with_(stop=["\n"]), 400, "stop", "unsupported_parameter"),
    ("unknown model", with_(model="gpt-4o"), 404, "model", "model_not_found"),
    ("oversized body", with_(messages=[{"role": "user", "content": "x" * 5000}]), 413, None,
     "request_too_large"),
]


@pytest.fixture(scope="module")
def server():
    svc = service(settings=SETTINGS)
    with running(svc) as live:
        yield live


@pytest.mark.parametrize(("case", "body", "status", "param", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_malformed_request_gets_an_openai_error(server, case, body, status, param, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/chat/completions", content=content,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)


def test_at_least_fifteen_cases_and_the_server_still_answers(server):
    assert len(CASES) >= 15
    r = httpx.post(server.url + "/v1/chat/completions", json=GOOD)
    assert r.status_code == 200 and r.json()["atts"]["answer"] == "7"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'status="500"' not in metrics


def test_an_oversized_body_without_content_length_is_refused_too(server):
    def chunks():
        yield b'{"model": "atts", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(server.url + "/v1/chat/completions", content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/chat/completions", 405), ("POST", "/v1/embeddings", 404),
    ("GET", "/v1/completions", 405),
    ("GET", "/v1/models/gpt-4o", 404),
])
def test_unknown_routes_and_methods_answer_in_the_openai_shape(server, method, path, status):
    r = httpx.request(method, server.url + path)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_fastapi_validation_errors_become_openai_400s_not_422s():
    app = create_app(service(), ServeSettings())

    @app.get("/typed")
    async def typed(count: int) -> dict:
        return {"count": count}

    r = TestClient(app).get("/typed", params={"count": "many"})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": r.json()["error"]["message"], "type": "invalid_request_error",
        "param": "query.count", "code": "invalid_type",
    }


def test_a_conversation_too_long_for_the_context_is_a_400():
    from test_serve_helpers import config, engines

    draft, target = engines()
    draft._context_length = target._context_length = 600  # fake engines: a small window
    svc = service(config(draft_tokens=100, target_tokens=100), pair=(draft, target))
    with running(svc) as live:
        r = httpx.post(live.url + "/v1/chat/completions",
                       json=with_(messages=[{"role": "user", "content": "y" * 400}]))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
