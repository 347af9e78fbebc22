"""The server through the official openai client on loopback: completions, streams, n > 1,
the trace, the API key, /health, /metrics and the CLI wiring (fake engines throughout)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import httpx
import openai
import pytest

from atts.serve.settings import ServeSettings
from test_serve_helpers import (
    USER,
    Scrape,
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


def test_stream_with_n_1_sends_the_targets_own_step_token_by_token():
    """Issue 17: a stream of n = 1 arrived a whole round at a time.  A step the target writes
    is final as it decodes, so it streams token by token (fake tokens are characters); a
    draft step waits for its decision, which could reject it, and then arrives whole."""
    svc = service(pair=engines(drafting(["9"], think_ppl=500)))
    with running(svc) as server:
        stream = client(server.url).chat.completions.create(
            model="atts", messages=USER, stream=True,
            extra_body={"atts": {"trace": True, "alpha": 0.1, "alpha_discard": 0.0}},
        )
        chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    steps = chunks[-1].model_extra["atts"]["samples"][0]["steps"]
    draft, target = steps[0]["text"], steps[1]["text"]
    assert steps[1]["author"] == "target" and len(target) > 10
    assert pieces[0] == draft  # decided, then sent whole
    assert "".join(pieces) == draft + target
    assert len(pieces) >= len(target) - 1  # one chunk per decoded token (the last one ends it)
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
    scrape = Scrape.of(text)
    chat = "/v1/chat/completions"
    assert scrape("atts_requests_total", route=chat, status="200") == 1
    assert scrape("atts_requests_total", route=chat, status="400") == 1
    assert scrape("atts_samples_total", status="ok") == 2
    # Per sample: the thinking step (ppl 500, p = 0.01) is rejected and, by the default
    # alpha_discard (null: = alpha), regenerated by the target.
    assert scrape("atts_decisions_total", decision="regenerate") == 2
    assert scrape("atts_decisions_total", decision="accept") == 0
    assert scrape("atts_rejection_rate") == 1
    assert scrape("atts_steps_total", author="target", kind="step") == 2
    assert scrape("atts_request_duration_seconds_bucket", route=chat, le="+Inf") == 2
    assert scrape("atts_bank_size") == 101  # 99 loaded + one score per sample
    assert scrape("atts_requests_admitted") == 0
    assert scrape("atts_engine_in_flight_target") == 0
    assert scrape("atts_tokens_total", kind="completion") > 0


def test_metrics_are_prometheus_counters_histograms_and_gauges():
    svc = service()
    with running(svc) as server:
        api = client(server.url)
        api.chat.completions.create(model="atts", messages=USER)
        list(api.chat.completions.create(model="atts", messages=USER, stream=True))
        scrape = Scrape.of(httpx.get(server.url + "/metrics").text)
    for name in ("atts_requests", "atts_samples", "atts_steps", "atts_decisions",
                 "atts_tokens", "atts_cancelled", "atts_rejected"):
        assert scrape.types[name] == "counter", name
    for name in ("atts_request_duration_seconds", "atts_time_to_first_token_seconds",
                 "atts_sample_duration_seconds"):
        assert scrape.types[name] == "histogram", name
    for name in ("atts_requests_admitted", "atts_queue_capacity", "atts_bank_size",
                 "atts_rejection_rate", "atts_alpha"):
        assert scrape.types[name] == "gauge", name
    # Time to first token: one non-streamed answer (to its whole answer), one stream.
    chat = "/v1/chat/completions"
    for stream in ("false", "true"):
        assert scrape("atts_time_to_first_token_seconds_count", route=chat, stream=stream) == 1
        assert scrape("atts_time_to_first_token_seconds_sum", route=chat, stream=stream) > 0
    # Known label values count from zero, so a dashboard sees them before they happen.
    assert scrape("atts_rejected_total", reason="queue_full") == 0
    assert scrape("atts_cancelled_total", reason="shutdown") == 0


def test_time_to_first_token_of_a_stream_is_when_its_first_text_is_sent():
    # Three rounds, each a 0.1 s draft call and a 0.1 s score call: the first text is sent
    # after round one, well before the whole answer.
    svc = service(pair=engines(drafting(thinking_steps=2), delay=0.1))
    with running(svc) as server:
        list(client(server.url).chat.completions.create(model="atts", messages=USER,
                                                         stream=True))
        scrape = Scrape.of(httpx.get(server.url + "/metrics").text)
    chat = "/v1/chat/completions"
    first = scrape("atts_time_to_first_token_seconds_sum", route=chat, stream="true")
    whole = scrape("atts_request_duration_seconds_sum", route=chat)
    assert 0.15 < first < whole * 0.6


def test_two_servers_in_one_process_count_apart_and_leave_the_default_registry_alone():
    import prometheus_client

    first, second = service(), service()
    first.metrics.observe_request("/health", 200, 0.01)
    first.metrics.reject("queue_full")
    assert Scrape.of(first.metrics.render())("atts_requests_total", route="/health",
                                            status="200") == 1
    assert Scrape.of(second.metrics.render())("atts_requests_total", route="/health",
                                             status="200") is None
    assert (first.metrics.rejected["queue_full"], second.metrics.rejected["queue_full"]) == (1, 0)
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "atts_" not in default


def test_the_metrics_module_does_not_import_the_service_not_even_for_types():
    import ast

    from atts.serve import metrics

    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert "atts.serve.service" not in imported  # the service registers its own gauges


def test_cli_flags_build_the_server_config_and_settings(monkeypatch):
    from atts.cli import serve_cmd

    monkeypatch.setenv("ATTS_API_KEY", "from-env")
    parser = argparse.ArgumentParser()
    serve_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "serve", "--engine", "fake", "--draft", "d", "--target", "t", "--port", "0",
        "--alpha", "0.2", "--rounds", "5", "--max-queue", "3", "--bank", "b.json",
        "--set", "min_rounds=1", "--max-n", "4", "--served-model-name", "my-model",
    ])
    cfg = serve_cmd.config_from_args(args)
    settings = serve_cmd.settings_from_args(args)
    assert (cfg.engine, cfg.draft, cfg.target, cfg.alpha, cfg.rounds, cfg.min_rounds) == (
        "fake", "d", "t", 0.2, 5, 1)
    assert (settings.max_queue, settings.bank_path, settings.max_n) == (3, "b.json", 4)
    assert settings.api_key == "from-env"
    assert settings.served_model_name == "my-model"
    assert serve_cmd.settings_from_args(parser.parse_args(["serve"])).served_model_name is None
    assert args.host == "127.0.0.1" and args.port == 0
    served: dict[str, object] = {}
    monkeypatch.setattr("atts.serve.server.serve_forever",
                        lambda svc, settings, **kw: served.update(svc=svc, **kw))
    assert args.func(args) == 0
    assert served["svc"].model_id == "my-model" and served["port"] == 0
    assert served["svc"].model_ids == ("my-model", "atts")


def test_served_model_name_is_the_id_listed_and_answered_to_with_the_alias():
    name = "Qwen/atts-math"  # a slash, as in hub names: /v1/models/{id} takes a path
    svc = service(settings=ServeSettings(served_model_name=name))
    with running(svc) as server:
        api = client(server.url)
        assert [m.id for m in api.models.list().data] == [name]
        assert api.models.retrieve(name).id == name
        assert api.models.retrieve("atts").id == name
        for model in (name, "atts"):
            reply = api.chat.completions.create(model=model, messages=USER)
            assert reply.model == name
        legacy = api.completions.create(model=name, prompt="What is 3 + 4?")
        assert legacy.model == name
        # The default id is not a name of this server any more.
        r = httpx.post(server.url + "/v1/chat/completions",
                       json={"model": "atts:draft+target", "messages": USER})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert repr(name) in r.json()["error"]["message"]
        assert httpx.get(server.url + "/v1/models/atts:draft+target").status_code == 404
        assert httpx.get(server.url + "/health").json()["model"] == name


def test_served_model_name_unset_keeps_the_default_id_and_a_blank_one_is_refused():
    assert service().model_ids == ("atts:draft+target", "atts")
    assert service(settings=ServeSettings(served_model_name="atts")).model_ids == ("atts",)
    for blank in ("", " ", " x"):
        with pytest.raises(ValueError, match="served_model_name"):
            ServeSettings(served_model_name=blank)


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
