"""Admission control and hygiene: a full queue answers 429 with Retry-After, a slow request
times out with 504, and a client that goes away cancels its work (sample tasks and engine
calls), streamed or not, so nothing is left in flight."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from atts.serve.settings import ServeSettings
from test_serve_helpers import USER, engines, running, service, settled, wait_until

GOOD = {"model": "atts", "messages": USER}


def test_a_full_queue_answers_429_with_retry_after_and_admits_again_later():
    settings = ServeSettings(max_queue=2)
    svc = service(settings=settings, pair=engines(delay=0.3))
    with running(svc) as server:
        url = server.url + "/v1/chat/completions"
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(url, json=GOOD, timeout=30).status_code)) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: svc.admitted == 2)
        refused = httpx.post(url, json=GOOD)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) \
                .chat.completions.create(model="atts", messages=USER)
        for t in threads:
            t.join()
        assert results == [200, 200]
        assert httpx.post(url, json=GOOD).status_code == 200  # room again
        metrics = httpx.get(server.url + "/metrics").text
    assert 'atts_rejected_total{reason="queue_full"} 2' in metrics
    assert settled(svc)


def test_a_request_past_its_timeout_gets_504_and_its_work_stops():
    settings = ServeSettings(request_timeout=0.3)
    svc = service(settings=settings, pair=engines(delay=30))
    with running(svc) as server:
        r = httpx.post(server.url + "/v1/chat/completions", json={**GOOD, "n": 3}, timeout=30)
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"
        assert r.json()["error"]["code"] == "request_timeout"
        wait_until(lambda: settled(svc))
        assert svc.metrics.cancelled["timeout"] == 1


def test_a_client_that_disconnects_cancels_its_samples_and_engine_calls():
    svc = service(pair=engines(delay=30))
    with running(svc) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json={**GOOD, "n": 4},
                       timeout=httpx.Timeout(30, read=0.5))
        # Work had started: four samples, each in a draft call, until the client left.
        wait_until(lambda: svc.metrics.cancelled["client"] == 1)
        wait_until(lambda: settled(svc))
        assert svc.solving == 0
        assert svc.draft.engine.peak_in_flight == 4
        assert httpx.get(server.url + "/health").json()["admitted"] == 0


def test_a_streaming_client_that_disconnects_cancels_its_work():
    svc = service(pair=engines(delay=30))
    with running(svc) as server:
        with httpx.stream("POST", server.url + "/v1/chat/completions",
                          json={**GOOD, "stream": True}, timeout=30) as response:
            lines = response.iter_lines()  # (dropping this iterator would close the socket)
            assert next(lines).startswith("data: ")  # the role chunk, sent before any step
            wait_until(lambda: svc.draft.in_flight == 1)
            assert svc.metrics.cancelled["client"] == 0
        wait_until(lambda: svc.metrics.cancelled["client"] == 1)
        wait_until(lambda: settled(svc))


def test_a_streamed_request_that_times_out_ends_with_an_error_event():
    settings = ServeSettings(request_timeout=0.3)
    svc = service(settings=settings, pair=engines(delay=30))
    with running(svc) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="atts", messages=USER, stream=True)
        with pytest.raises(openai.APIError) as caught:
            list(stream)
        assert "longer than 0.3 s" in caught.value.message
        wait_until(lambda: settled(svc))
