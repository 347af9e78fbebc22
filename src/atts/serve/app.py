"""The HTTP face of the service: an OpenAI-compatible FastAPI app (``create_app``).

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions``, the
legacy ``POST /v1/completions`` (its ``prompt`` is the one user message; ``stop`` strings cut
the returned text), ``GET /health``, ``GET /metrics`` (Prometheus text).  The ``/v1`` routes
need the API key when the server has one (``Authorization: Bearer KEY``, else 401).  Both
answer routes run the same code (``_answer``); a ``_Route`` holds what differs between them.

Order of checks for a completion, cheapest first, each failure an OpenAI error body: API key
(401), body size (413), JSON and fields (400; unknown model 404), prompt and context (400),
admission (429 with ``Retry-After``; 503 once shutdown has begun).  Only then does work start.

Cancellation: a non-streamed request watches its connection while the samples run; a client
that goes away cancels the solve (every sample task, every engine call), answered with 499 in
the logs.  A streamed request (``streaming``: what is sent when) is cancelled by Starlette
when the client disconnects, and the event generator cancels the solve in its ``finally``.

Shutdown: the server tells the service when it begins to stop (``AttsService.shut_down``), and
requests still running near the end of the grace period end with a 503 in the OpenAI shape
(a stream: an error event).  Should uvicorn cancel a request anyway, ``_Observe`` answers it in
that shape too, instead of uvicorn's plain-text 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atts.serve import responses as shapes
from atts.serve.errors import ApiError, error_body, shutting_down
from atts.serve.metrics import CONTENT_TYPE, ServeMetrics
from atts.serve.schemas import (
    ChatRequest,
    from_errors,
    parse_chat_request,
    parse_completion_request,
)
from atts.serve.service import AttsService, Solution
from atts.serve.settings import ServeSettings
from atts.serve.stops import StopStrings
from atts.serve.streaming import EventStream, events

T = TypeVar("T")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request": only seen in logs


@dataclass(frozen=True)
class _Route:
    """What differs between the two answer routes; everything else is ``_answer``'s."""

    path: str
    parse: Callable[[bytes, ServeSettings, Collection[str]], ChatRequest]
    param: str  # the request field that holds the conversation
    id_prefix: str
    body: Callable[[Solution, str, int, StopStrings], dict[str, Any]]
    chunks: Callable[[str, str, int], shapes.ChunkShape]


CHAT = _Route("/v1/chat/completions", parse_chat_request, "messages", "chatcmpl",
              shapes.completion_body, shapes.ChatChunks)
LEGACY = _Route("/v1/completions", parse_completion_request, "prompt", "cmpl",
                shapes.text_completion_body, shapes.TextChunks)


def create_app(service: AttsService, settings: ServeSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await service.aclose()  # saves the bank

    app = FastAPI(title="atts", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(_Observe, metrics=service.metrics)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "admitted": service.admitted,
                "max_queue": settings.max_queue, "bank_size": len(service.bank)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request, settings)
        return {"object": "list", "data": [_model_card(service)]}

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> dict[str, Any]:
        _authorize(request, settings)
        if model not in service.model_ids:
            raise ApiError(404, f"the model {model!r} does not exist", param="model",
                           code="model_not_found")
        return _model_card(service)

    @app.post(CHAT.path)
    async def chat_completions(request: Request) -> Response:
        return await _answer(request, service, settings, CHAT)

    @app.post(LEGACY.path)
    async def completions(request: Request) -> Response:
        return await _answer(request, service, settings, LEGACY)

    return app


async def _answer(request: Request, service: AttsService, settings: ServeSettings,
                  route: _Route) -> Response:
    arrived = time.monotonic()
    _authorize(request, settings)
    raw = await _read_body(request, settings.max_body_bytes)
    if raw is None:
        return Response(status_code=CLIENT_CLOSED)
    parsed = route.parse(raw, settings, service.model_ids)
    prepared = service.prepare(parsed.messages, parsed.options, param=route.param,
                               id_prefix=route.id_prefix)
    ticket = service.admit()

    def first_content(stream: bool) -> None:
        service.metrics.observe_first_content(route.path, stream=stream,
                                              seconds=time.monotonic() - arrived)

    if parsed.stream:
        chunks = route.chunks(prepared.request_id, service.model_id, int(time.time()))
        stream = events(service, settings, prepared, parsed, chunks,
                        on_first=lambda: first_content(True))
        return EventStream(stream, on_close=ticket.release)
    try:
        solution = await _unless_disconnected(request, service.solve(prepared))
    finally:
        ticket.release()
    if solution is None:
        return Response(status_code=CLIENT_CLOSED)
    first_content(False)
    return JSONResponse(route.body(solution, service.model_id, int(time.time()), parsed.stops))


def _model_card(service: AttsService) -> dict[str, Any]:
    return {"id": service.model_id, "object": "model", "created": service.created,
            "owned_by": "atts"}


def _authorize(request: Request, settings: ServeSettings) -> None:
    if settings.api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.api_key.encode()
    ):
        raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer KEY'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, at most ``limit`` bytes (else 413); None when the client went away."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header", code="invalid_value")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        return None
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body exceeds {limit} bytes; send fewer or shorter "
                    "messages", code="request_too_large")


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; cancel it (and wait for it) when the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Observe:
    """Pure ASGI middleware: counts every request by route and status, with its duration;
    answers a request cancelled by the server (its shutdown) in the OpenAI shape."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = next((r for r in ROUTES if path == r or path.startswith(r + "/")), "other")
        status, started = 500, time.monotonic()
        begun = finished = streaming = False

        async def observed(message: Message) -> None:
            nonlocal status, begun, finished, streaming
            if message["type"] == "http.response.start":
                status, begun = int(message["status"]), True
                streaming = any(k.lower() == b"content-type"
                                and v.startswith(b"text/event-stream")
                                for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self._app(scope, receive, observed)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when its graceful shutdown ends (the service
            # normally ends it first) and would answer a plain-text 500: answer like the API.
            if finished or (begun and not streaming):
                raise
            body = shutting_down().body()
            if not begun:
                status = 503
                await _send_json(send, status, body)
            else:
                await send({"type": "http.response.body", "body": shapes.sse(body) + shapes.DONE,
                            "more_body": False})
            raise
        finally:
            self._metrics.observe_request(route, status, time.monotonic() - started)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def _add_error_handlers(app: FastAPI) -> None:
    Handler = Callable[[Request, Any], Awaitable[Response]]

    async def api_error(request: Request, err: ApiError) -> Response:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        return await api_error(request, from_errors(list(err.errors())))

    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = f"{request.method} {request.url.path}: {err.detail}"
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return JSONResponse(error_body(message, type=kind, code=code),
                            status_code=err.status_code, headers=err.headers)

    async def unexpected(request: Request, err: Exception) -> Response:
        return JSONResponse(error_body(f"internal error: {type(err).__name__}",
                                       type="server_error", code="internal_error"),
                            status_code=500)

    handlers: list[tuple[type[Exception], Handler]] = [
        (ApiError, api_error), (RequestValidationError, validation_error),
        (StarletteHTTPException, http_error), (Exception, unexpected),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
