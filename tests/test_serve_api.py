"""The server through the official openai client on loopback: completions, streams, n > 1,
the trace, the API key, /health, /metrics and the CLI wiring (fake engines throughout)."""

from __future__ import annotations

import argparse
import re

import httpx
import openai
import pytest

from atts.serve.settings import ServeSettings
from test_serve_helpers import (
    USER,
    config,
    drafting,
    engines,
    running,
    service,
    settled,
)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_models_lists_the_pair_and_a_completion_answers_with_the_vote():
    svc = service()
    with running(svc) as server:
        api = client(server.url)
        ids = [m.id for m in api.models.list().data]
        assert ids == ["atts:draft+target"]
        reply = api.chat.completions.create(model=ids[0], messages=USER, seed=1)
    assert reply.object == "chat.completion"
    assert reply.model == "atts:draft+target"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == (
        "Add the numbers. ppl=2.0\n\nSo the answer is \\boxed{7}. ppl=2.0\n\n"
    )
    assert choice.finish_reason == "stop"
    # Fake tokens are characters: usage counts the prompt once and the returned text.
    assert reply.usage.completion_tokens == len(choice.message.content)
    assert reply.usage.prompt_tokens > len("What is 3 + 4?")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    atts = reply.model_extra["atts"]
    assert atts["answer"] == "7" and atts["chosen_sample"] == 0
    assert "steps" not in atts["samples"][0]  # the trace only when asked for
    assert settled(svc)


def test_n_samples_run_in_parallel_and_the_majority_answer_comes_first():
    # Answers cycle 8, 7, 7, 8, 7 over the five answer steps: the vote says 7 (3 of 5).
    pair = engines(drafting(["8", "7", "7", "8", "7"]), delay=0.05)
    svc = service(pair=pair)
    with running(svc) as server:
        reply = client(server.url).chat.completions.create(
            model="atts", messages=USER, n=5, extra_body={"atts": {"trace": True}},
        )
    atts = reply.model_extra["atts"]
    assert len(reply.choices) == 5
    assert [c.index for c in reply.choices] == [0, 1, 2, 3, 4]
    assert "\\boxed{7}" in reply.choices[0].message.content
    assert atts["answer"] == "7" and atts["votes"] == {"7": 3, "8": 2}
    chosen = atts["samples"][atts["chosen_sample"]]
    assert chosen["answer"] == "7" and chosen["choice_index"] == 0
    assert sorted(s["choice_index"] for s in atts["samples"]) == [0, 1, 2, 3, 4]
    # Parallel, not one after another: the draft saw all five samples in flight at once.
    assert pair[0].peak_in_flight == 5
    assert reply.usage.completion_tokens == sum(len(c.message.content) for c in reply.choices)
    for sample in atts["samples"]:
        drafts = [s for s in sample["steps"] if s["author"] == "draft"]
        assert [s["decision"] for s in drafts] == ["accept", "accept"]
        # ppl 2 against 1..99 plus the scores of earlier steps (2.0 each): p >= 0.99.
        assert all(s["p_value"] >= 0.99 for s in drafts)


def test_a_rejected_step_shows_in_the_trace_with_its_p_value_and_the_target_step():
    svc = service(pair=engines(drafting(["9"], think_ppl=500)))
    with running(svc) as server:
        reply = client(server.url).chat.completions.create(
            model="atts", messages=USER, extra_body={"atts": {"trace": True, "alpha": 0.1,
                                                              "alpha_discard": 0.0}},
        )
    steps = reply.model_extra["atts"]["samples"][0]["steps"]
    first, second = steps[0], steps[1]
    assert (first["author"], first["decision"], first["kept"]) == ("draft", "continue", True)
    assert first["p_value"] == pytest.approx(0.01) and first["score"] == pytest.approx(500)
    assert second["author"] == "target" and second["decision"] is None
    assert reply.choices[0].message.content.startswith(first["text"] + second["text"])
    # The target's step ends with an answer, so the sample stops after round 0.
    assert reply.model_extra["atts"]["answer"] == "7"


def test_stream_with_n_1_sends_the_steps_as_they_are_written():
    svc = service(pair=engines(drafting(["7"], thinking_steps=2)))
    with running(svc) as server:
        stream = client(server.url).chat.completions.create(
            model="atts", messages=USER, stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    # One chunk per round: two thinking rounds, then the answer round.
    assert pieces == ["Add the numbers. ppl=2.0\n\n"] * 2 + [
        "So the answer is \\boxed{7}. ppl=2.0\n\n"
    ]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert finals[0].model_extra["atts"]["answer"] == "7"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len("".join(pieces))
    assert settled(svc)


def test_stream_with_n_above_1_sends_every_choice_after_the_vote_voted_first():
    svc = service(pair=engines(drafting(["5", "6", "6"])))
    with running(svc) as server, httpx.stream(
        "POST", server.url + "/v1/chat/completions",
        json={"model": "atts", "messages": USER, "n": 3, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [openai.types.chat.ChatCompletionChunk.model_validate_json(line[6:])
              for line in lines[:-1]]
    texts: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1, 2]
    assert "\\boxed{6}" in texts[0]
    assert chunks[-1].model_extra["atts"]["votes"] == {"5": 1, "6": 2}


def test_api_key_is_required_on_v1_routes_but_not_on_health_and_metrics():
    settings = ServeSettings(api_key="sesame")
    svc = service(settings=settings)
    with running(svc) as server:
        with pytest.raises(openai.AuthenticationError) as caught:
            client(server.url, "wrong").models.list()
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"
        for headers in ({}, {"Authorization": "sesame"}, {"Authorization": "Bearer nope"}):
            r = httpx.post(server.url + "/v1/chat/completions", headers=headers,
                           json={"model": "atts", "messages": USER})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        reply = client(server.url, "sesame").chat.completions.create(model="atts",
                                                                     messages=USER)
        assert reply.model_extra["atts"]["answer"] == "7"
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        assert httpx.get(server.url + "/metrics").status_code == 200


SAMPLE_LINE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def test_metrics_speak_the_prometheus_text_format_and_count_what_happened():
    svc = service(pair=engines(drafting(["7"], think_ppl=500)))
    with running(svc) as server:
        api = client(server.url)
        api.chat.completions.create(model="atts", messages=USER, n=2)
        httpx.post(server.url + "/v1/chat/completions", json={"model": "atts"})  # a 400
        response = httpx.get(server.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE_LINE.match(line), line
    assert 'atts_requests_total{route="/v1/chat/completions",status="200"} 1' in text
    assert 'atts_requests_total{route="/v1/chat/completions",status="400"} 1' in text
    assert 'atts_samples_total{status="ok"} 2' in text
    # Per sample: the thinking step (ppl 500, p = 0.01) is rejected; the target answers.
    assert 'atts_decisions_total{decision="continue"} 2' in text
    assert 'atts_decisions_total{decision="accept"} 0' in text
    assert "atts_rejection_rate 1" in text
    assert 'atts_steps_total{author="target",kind="step"} 2' in text
    assert 'atts_request_duration_seconds_bucket{route="/v1/chat/completions",le="+Inf"} 2' \
        in text
    assert "atts_bank_size 101" in text  # 99 loaded + one score per sample
    assert "atts_requests_admitted 0" in text and "atts_engine_in_flight_target 0" in text


def test_cli_flags_build_the_server_config_and_settings(monkeypatch):
    from atts.cli import serve_cmd

    monkeypatch.setenv("ATTS_API_KEY", "from-env")
    parser = argparse.ArgumentParser()
    serve_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "serve", "--engine", "fake", "--draft", "d", "--target", "t", "--port", "0",
        "--alpha", "0.2", "--rounds", "5", "--max-queue", "3", "--bank", "b.json",
        "--set", "min_rounds=1", "--max-n", "4",
    ])
    cfg = serve_cmd.config_from_args(args)
    settings = serve_cmd.settings_from_args(args)
    assert (cfg.engine, cfg.draft, cfg.target, cfg.alpha, cfg.rounds, cfg.min_rounds) == (
        "fake", "d", "t", 0.2, 5, 1)
    assert (settings.max_queue, settings.bank_path, settings.max_n) == (3, "b.json", 4)
    assert settings.api_key == "from-env"
    assert args.host == "127.0.0.1" and args.port == 0
    served: dict[str, object] = {}
    monkeypatch.setattr("atts.serve.server.serve_forever",
                        lambda svc, settings, **kw: served.update(svc=svc, **kw))
    assert args.func(args) == 0
    assert served["svc"].model_id == "atts:d+t" and served["port"] == 0


def test_max_tokens_ends_the_rounds_and_the_answer_is_forced():
    # A draft that never answers: without max_tokens it would think for all 4 rounds.
    svc = service(pair=engines(drafting(thinking_steps=99)))
    with running(svc) as server:
        api = client(server.url)
        capped = api.chat.completions.create(model="atts", messages=USER, max_tokens=60,
                                             extra_body={"atts": {"trace": True,
                                                                  "force_answer": "auto"}})
        free = api.chat.completions.create(model="atts", messages=USER)
        assert api.models.retrieve("atts:draft+target").id == "atts:draft+target"
    reserve = len("\n\nFinal answer: \\boxed{") + 24  # the answer cue and forced tokens
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens <= 60 + reserve
    assert capped.model_extra["atts"]["samples"][0]["rounds"] == 1
    assert capped.model_extra["atts"]["settings"]["draft_tokens"] == 30  # a round fits
    assert capped.model_extra["atts"]["settings"]["force_answer"] == "target"  # auto, resolved
    assert free.model_extra["atts"]["samples"][0]["rounds"] == 4
    assert free.usage.completion_tokens > capped.usage.completion_tokens
    assert "Final answer: \\boxed{" in capped.choices[0].message.content


def test_config_of_the_server_keeps_its_own_defaults():
    svc = service(config(alpha=0.2, draft_tokens=64))
    assert svc.config.strategy == "atts" and svc.config.grow_bank
    assert svc.config.alpha == 0.2 and svc.config.draft_tokens == 64
