"""The HTTP face of the service: an OpenAI-compatible FastAPI app (``create_app``).

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions``,
``GET /health``, ``GET /metrics`` (Prometheus text).  The ``/v1`` routes need the API key when
the server has one (``Authorization: Bearer KEY``, else 401).

Order of checks for a chat completion, cheapest first, each failure an OpenAI error body:
API key (401), body size (413), JSON and fields (400; unknown model 404), prompt and context
(400), admission (429 with ``Retry-After``).  Only then does work start.

Cancellation: a non-streamed request watches its connection while the samples run; a client
that goes away cancels the solve (every sample task, every engine call), answered with 499 in
the logs.  A streamed request is cancelled by Starlette when the client disconnects, and the
event generator cancels the solve in its ``finally``.  Streaming: with ``n = 1`` the sample's
text is sent round by round as it is written; with ``n > 1`` the vote needs every sample, so
the stream sends keep-alive comments until the vote, then every choice step by step, the
voted one first (index 0).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atts.serve import responses as shapes
from atts.serve.errors import ApiError, error_body
from atts.serve.metrics import ServeMetrics
from atts.serve.schemas import ChatRequest, from_errors, parse_chat_request
from atts.serve.service import AttsService, Prepared, Solution
from atts.serve.settings import ServeSettings

T = TypeVar("T")
ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request": only seen in logs


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
        return PlainTextResponse(service.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        _authorize(request, settings)
        raw = await _read_body(request, settings.max_body_bytes)
        if raw is None:
            return Response(status_code=CLIENT_CLOSED)
        chat = parse_chat_request(raw, settings, service.model_ids)
        prepared = service.prepare(chat.messages, chat.options)
        ticket = service.admit()
        if chat.stream:
            events = _events(service, settings, prepared, chat)
            return _Stream(events, on_close=ticket.release)
        try:
            solution = await _unless_disconnected(request, service.solve(prepared))
        finally:
            ticket.release()
        if solution is None:
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(shapes.completion_body(solution, service.model_id, int(time.time())))

    return app


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


async def _events(
    service: AttsService, settings: ServeSettings, prepared: Prepared, chat: ChatRequest
) -> AsyncIterator[bytes]:
    """The SSE stream of one request (see the module docstring for what is sent when)."""
    request_id, model, created = prepared.request_id, service.model_id, int(time.time())
    live = prepared.options.n == 1
    updates: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.ensure_future(
        service.solve(prepared, on_text=updates.put_nowait if live else None)
    )
    task.add_done_callback(lambda _: updates.put_nowait(None))

    def emit(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return shapes.chunk(request_id, model, created, choices, **extra)

    try:
        sent = 0
        if live:
            yield emit([shapes.delta(0, "", role=True)])
        while (text := await _next_update(updates, settings.keepalive_seconds)) is not None:
            if not text:
                yield shapes.KEEPALIVE
            elif live and len(text) > sent:
                yield emit([shapes.delta(0, text[sent:])])
                sent = len(text)
        try:
            solution = task.result()
        except ApiError as err:
            yield shapes.sse(err.body())
            yield shapes.DONE
            return
        except Exception as err:  # headers are sent: the error can only be an event now
            yield shapes.sse(error_body(f"internal error: {type(err).__name__}",
                                        type="server_error", code="internal_error"))
            yield shapes.DONE
            return
        for event in _after_vote(solution, live, emit):
            yield event
        if chat.include_usage:
            yield emit([], usage=shapes.usage(solution))
        yield shapes.DONE
    finally:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):  # let the samples stop before we return
                await asyncio.gather(task, return_exceptions=True)


async def _next_update(updates: asyncio.Queue[str | None], keepalive: float) -> str | None:
    """The next text of the live sample, "" after ``keepalive`` seconds of silence, or None
    when the solve has ended."""
    try:
        return await asyncio.wait_for(updates.get(), keepalive)
    except TimeoutError:
        return ""


def _after_vote(
    solution: Solution, live: bool, emit: Callable[..., bytes]
) -> list[bytes]:
    order = shapes.choice_order(solution)
    events = []
    if not live:
        for index, i in enumerate(order):
            events.append(emit([shapes.delta(index, "", role=True)]))
            events.extend(emit([shapes.delta(index, piece)])
                          for piece in shapes.step_texts(solution.traces[i]))
    finals = [shapes.delta(index, finish=shapes.finish_reason(solution.traces[i]))
              for index, i in enumerate(order)]
    events.append(emit(finals, atts=shapes.atts_object(solution)))
    return events


class _Stream(StreamingResponse):
    """An SSE response that releases its admission ticket however the stream ends."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _Observe:
    """Pure ASGI middleware: counts every request by route and status, with its duration."""

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

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, observed)
        finally:
            self._metrics.observe_request(route, status, time.monotonic() - started)


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
