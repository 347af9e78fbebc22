"""The legacy ``POST /v1/completions`` route (lm-evaluation-harness's ``local-completions``):
its shape through the openai client and raw, streams, stop strings, and what it refuses."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from atts.serve.settings import ServeSettings
from test_serve_helpers import Scrape, drafting, engines, running, service, settled

PROMPT = "What is 3 + 4?"
GOOD = {"model": "atts", "prompt": PROMPT}
THINK = "Add the numbers. ppl=2.0\n\n"
ANSWER = "So the answer is \\boxed{7}. ppl=2.0\n\n"
SETTINGS = ServeSettings(max_n=4, max_completion_tokens=1000, max_rounds=8)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=20)


def sse_bodies(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def server():
    svc = service(settings=SETTINGS)
    with running(svc) as live:
        yield live


def test_a_completion_has_the_text_completion_shape_and_the_chat_answer(server):
    r = httpx.post(server.url + "/v1/completions", json={**GOOD, "seed": 1})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "atts"}
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "atts:draft+target"
    assert body["choices"] == [
        {"text": THINK + ANSWER, "index": 0, "logprobs": None, "finish_reason": "stop"},
    ]
    assert body["usage"]["completion_tokens"] == len(THINK + ANSWER)  # fake tokens: chars
    assert body["atts"]["answer"] == "7"
    # The prompt is the user message of a chat, rendered like the chat route's: same usage.
    chat = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "atts", "messages": [{"role": "user", "content": PROMPT}], "seed": 1}).json()
    assert chat["usage"] == body["usage"]
    assert chat["choices"][0]["message"]["content"] == body["choices"][0]["text"]


def test_the_openai_client_reads_a_completion_and_a_list_of_one_prompt(server):
    api = client(server.url)
    reply = api.completions.create(model="atts", prompt=[PROMPT], n=2, max_tokens=500,
                                   temperature=0.5, top_p=0.9, seed=3,
                                   extra_body={"atts": {"trace": True}})
    assert reply.object == "text_completion"
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.text == THINK + ANSWER and c.finish_reason == "stop" for c in reply.choices)
    atts = reply.model_extra["atts"]
    assert atts["votes"] == {"7": 2} and "steps" in atts["samples"][0]
    assert atts["settings"]["temperature"] == 0.5 and atts["settings"]["seed"] == 3


def test_a_stream_sends_text_completion_chunks_then_done(server):
    with httpx.stream("POST", server.url + "/v1/completions",
                      json={**GOOD, "stream": True,
                            "stream_options": {"include_usage": True}}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        bodies = sse_bodies(response)
    assert bodies[-1] == "[DONE]"
    chunks = [json.loads(b) for b in bodies[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    texted = [c for c in chunks if c["choices"] and c["choices"][0]["text"]]
    assert [c["choices"][0]["text"] for c in texted] == [THINK, ANSWER]  # one per round
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
        assert choice["index"] == 0 and choice["logprobs"] is None
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "stop" and final["atts"]["answer"] == "7"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_openai_client_streams_a_completion_with_n_above_1(server):
    stream = client(server.url).completions.create(model="atts", prompt=PROMPT, n=2,
                                                   stream=True)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: THINK + ANSWER, 1: THINK + ANSWER}
    assert finishes == {0: "stop", 1: "stop"}


def test_stop_strings_cut_the_returned_text_before_the_first_one(server):
    url = server.url + "/v1/completions"
    # A string, or a list: the text ends before the stop string that is complete first.
    for stop, text in [("So the", THINK), (["boxed", "numbers"], "Add the "),
                       (["\n\n"], "Add the numbers. ppl=2.0"), (["nowhere"], THINK + ANSWER)]:
        body = httpx.post(url, json={**GOOD, "stop": stop}).json()
        choice = body["choices"][0]
        assert choice["text"] == text, stop
        assert choice["finish_reason"] == "stop"
        # The reasoning itself ran to its answer: the vote and the atts object see it all.
        assert body["atts"]["answer"] == "7" and body["atts"]["samples"][0]["rounds"] == 2


def test_a_stop_string_that_ends_a_sample_early_is_a_stop_even_when_the_rounds_ran_out():
    svc = service(pair=engines(drafting(thinking_steps=99)))  # never answers by itself
    with running(svc) as server:
        url = server.url + "/v1/completions"
        free = httpx.post(url, json=GOOD).json()["choices"][0]
        cut = httpx.post(url, json={**GOOD, "stop": "ppl"}).json()["choices"][0]
    assert free["finish_reason"] == "length"
    assert cut == {"text": "Add the numbers. ", "index": 0, "logprobs": None,
                   "finish_reason": "stop"}


@pytest.mark.parametrize("n", [1, 2])
def test_a_streamed_completion_stops_where_the_non_streamed_one_does(server, n):
    # "ppl=2.0\n\nSo" spans two rounds: the live stream holds back the tail of round one
    # ("ppl=2.0\n\n" could begin it) until round two says it does.
    stop = ["ppl=2.0\n\nSo", "boxed{8}"]
    url = server.url + "/v1/completions"
    plain = httpx.post(url, json={**GOOD, "n": n, "stop": stop}).json()
    with httpx.stream("POST", url, json={**GOOD, "n": n, "stop": stop,
                                         "stream": True}) as response:
        chunks = [json.loads(b) for b in sse_bodies(response)[:-1]]
    texts = ["", ""][:n]
    finishes = [None, None][:n]
    for c in chunks:
        for choice in c["choices"]:
            texts[choice["index"]] += choice["text"]
            finishes[choice["index"]] = choice["finish_reason"] or finishes[choice["index"]]
    assert texts == [c["text"] for c in plain["choices"]] == ["Add the numbers. "] * n
    assert finishes == ["stop"] * n


def test_limits_and_checks_are_those_of_the_chat_route(server):
    url = server.url + "/v1/completions"
    for extra, param in [({"n": 5}, "n"), ({"max_tokens": 1001}, "max_tokens"),
                         ({"atts": {"rounds": 9}}, "atts.rounds"),
                         ({"temperature": 3}, "temperature")]:
        for route, body in (("/v1/completions", GOOD),
                            ("/v1/chat/completions", {"model": "atts", "messages": [
                                {"role": "user", "content": PROMPT}]})):
            r = httpx.post(server.url + route, json={**body, **extra})
            assert r.status_code == 400, (route, extra)
            assert r.json()["error"]["param"] == param
    # Fields the chat route accepts and ignores are accepted here too.
    r = httpx.post(url, json={**GOOD, "frequency_penalty": 0.5, "presence_penalty": 0.1,
                              "logit_bias": {"50256": -100}, "user": "u", "best_of": 1,
                              "echo": False, "suffix": None, "logprobs": None})
    assert r.status_code == 200, r.text


# (case, body, status, param, code)
CASES = [
    ("missing prompt", {"model": "atts"}, 400, "prompt", "missing_required_parameter"),
    ("two prompts", {**GOOD, "prompt": ["a", "b"]}, 400, "prompt", "invalid_value"),
    ("no prompt in the list", {**GOOD, "prompt": []}, 400, "prompt", "invalid_value"),
    ("token ids", {**GOOD, "prompt": [[1, 2, 3]]}, 400, "prompt", "invalid_type"),
    ("prompt a number", {**GOOD, "prompt": 5}, 400, "prompt", "invalid_type"),
    ("stop a number", {**GOOD, "stop": 5}, 400, "stop", "invalid_type"),
    ("stop list of numbers", {**GOOD, "stop": [1]}, 400, "stop", "invalid_type"),
    ("empty stop string", {**GOOD, "stop": ["x", ""]}, 400, "stop", "invalid_value"),
    ("logprobs", {**GOOD, "logprobs": 1}, 400, "logprobs", "unsupported_parameter"),
    ("echo", {**GOOD, "echo": True}, 400, "echo", "unsupported_parameter"),
    ("suffix", {**GOOD, "suffix": "}"}, 400, "suffix", "unsupported_parameter"),
    ("best_of 2", {**GOOD, "best_of": 2}, 400, "best_of", "unsupported_parameter"),
    ("best_of 0", {**GOOD, "best_of": 0}, 400, "best_of", "invalid_value"),
    ("messages", {**GOOD, "messages": []}, 400, "messages", "unknown_parameter"),
    ("max_completion_tokens", {**GOOD, "max_completion_tokens": 5}, 400,
     "max_completion_tokens", "unknown_parameter"),
    ("stream_options without stream", {**GOOD, "stream_options": {"include_usage": True}},
     400, "stream_options", "invalid_value"),
    ("unknown model", {**GOOD, "model": "gpt-3.5-turbo-instruct"}, 404, "model",
     "model_not_found"),
]


@pytest.mark.parametrize(("case", "body", "status", "param", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_bad_completion_gets_an_openai_error_naming_the_field(server, case, body, status,
                                                                param, code):
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"] or status == 404


def test_refusals_say_why_and_what_to_do(server):
    url = server.url + "/v1/completions"
    two = httpx.post(url, json={**GOOD, "prompt": ["a", "b"]}).json()["error"]["message"]
    assert "exactly one string" in two and "2" in two
    ids = httpx.post(url, json={**GOOD, "prompt": [1, 2]}).json()["error"]["message"]
    assert "tokenized_requests=False" in ids
    best = httpx.post(url, json={**GOOD, "best_of": 3}).json()["error"]["message"]
    assert best.startswith("best_of above 1 is not supported") and "n samples" in best
    empty = httpx.post(url, content=b"").json()["error"]["message"]
    assert "model and prompt" in empty


def test_completions_are_counted_under_their_own_route():
    svc = service()
    with running(svc) as server:
        client(server.url).completions.create(model="atts", prompt=PROMPT)
        list(client(server.url).completions.create(model="atts", prompt=PROMPT, stream=True))
        httpx.post(server.url + "/v1/completions", json={"model": "atts"})
        scrape = Scrape.of(httpx.get(server.url + "/metrics").text)
    route = "/v1/completions"
    assert scrape("atts_requests_total", route=route, status="200") == 2
    assert scrape("atts_requests_total", route=route, status="400") == 1
    for stream in ("false", "true"):
        assert scrape("atts_time_to_first_token_seconds_count", route=route,
                      stream=stream) == 1
    assert settled(svc)


def test_a_context_too_long_names_the_prompt():
    draft, target = engines()
    draft._context_length = target._context_length = 300  # fake engines: a small window
    svc = service(pair=(draft, target))
    with running(svc) as server:
        r = httpx.post(server.url + "/v1/completions", json={**GOOD, "prompt": "y" * 400})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == "prompt" and "shorten the prompt" in error["message"]
