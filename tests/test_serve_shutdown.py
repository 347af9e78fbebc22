"""A server stopped while requests are in flight answers them in the OpenAI error shape (503,
``server_shutting_down``; a stream: an error event), never uvicorn's plain-text 500, and
a request that finishes within the grace period is answered as usual."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from atts.serve.errors import ApiError
from atts.serve.server import ServerThread
from atts.serve.settings import ServeSettings
from test_serve_helpers import USER, engines, service, settled, wait_until

CHAT = {"model": "atts", "messages": USER}
LEGACY = {"model": "atts", "prompt": "What is 3 + 4?"}
SETTINGS = ServeSettings(shutdown_seconds=1)  # the service ends what still runs at 0.5 s


def in_flight(server: ServerThread, send: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    """``send()`` on a thread, its result (or error) in the dict once it returns."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = send()
        except Exception as err:  # the assertion says which
            out["result"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def stop_while_running(svc, send: Callable[[str], Any]) -> Any:
    server = ServerThread(svc, svc.settings).start()
    thread, out = in_flight(server, lambda: send(server.url))
    wait_until(lambda: svc.draft.in_flight >= 1)
    server.stop()
    thread.join(30)
    return out["result"]


def post(path: str, body: dict) -> Callable[[str], httpx.Response]:
    return lambda url: httpx.post(url + path, json=body, timeout=30)


def streamed(path: str, body: dict) -> Callable[[str], list[str]]:
    def send(url: str) -> list[str]:
        with httpx.stream("POST", url + path, json={**body, "stream": True},
                          timeout=30) as response:
            return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]

    return send


def assert_shutting_down(response: httpx.Response) -> None:
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": {
        "message": response.json()["error"]["message"], "type": "server_error",
        "param": None, "code": "server_shutting_down"}}


@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT),
                                            ("/v1/completions", LEGACY)])
def test_a_request_in_flight_at_shutdown_gets_a_503_in_the_openai_shape(path, body):
    svc = service(settings=SETTINGS, pair=engines(delay=30))
    response = stop_while_running(svc, post(path, {**body, "n": 2}))
    assert_shutting_down(response)
    assert "shutting down" in response.json()["error"]["message"]
    assert svc.metrics.cancelled["shutdown"] == 1
    assert settled(svc)


@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT),
                                            ("/v1/completions", LEGACY)])
def test_a_stream_in_flight_at_shutdown_ends_with_an_error_event(path, body):
    svc = service(settings=SETTINGS, pair=engines(delay=30))
    events = stop_while_running(svc, streamed(path, body))
    assert isinstance(events, list), events
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
    assert settled(svc)


def test_a_request_that_finishes_within_the_grace_period_is_answered():
    svc = service(settings=SETTINGS, pair=engines(delay=0.05))
    response = stop_while_running(svc, post("/v1/chat/completions", CHAT))
    assert response.status_code == 200 and response.json()["atts"]["answer"] == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_uvicorn_cancels_itself_is_answered_in_the_openai_shape_too(stream):
    # Without the service's own stop (as when an engine call cannot stop in time), uvicorn
    # cancels the request at the end of its grace period; it used to answer 500 text/plain.
    svc = service(settings=SETTINGS, pair=engines(delay=30))
    svc.shut_down = lambda within: None
    if stream:
        events = stop_while_running(svc, streamed("/v1/chat/completions", CHAT))
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
    else:
        assert_shutting_down(stop_while_running(svc, post("/v1/chat/completions", CHAT)))
    wait_until(lambda: settled(svc))


def test_nothing_is_admitted_once_shutdown_has_begun():
    svc = service()

    async def admit_after_shutdown() -> None:
        svc.shut_down(within=5.0)
        svc.admit()

    with pytest.raises(ApiError) as caught:
        asyncio.run(admit_after_shutdown())
    assert (caught.value.status, caught.value.code) == (503, "server_shutting_down")
    assert svc.metrics.rejected["shutting_down"] == 1 and svc.admitted == 0
