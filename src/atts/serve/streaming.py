"""The server-sent events of a streamed answer, one generator for both answer routes.

``events`` solves one prepared request and speaks through a ``ChunkShape``
(``chat.completion.chunk`` or the legacy ``text_completion``), so the two routes share when
what is sent:

- ``n = 1``: the sample's text is sent as it becomes final: a step the target writes token by
  token as it decodes (engines that stream: llama.cpp, fake), a draft step whole once its
  decision keeps it (a rejected one is never sent), cues and forced answers as they join
  (``SampleState.on_text``; the chat route opens with a role delta);
- ``n > 1``: the vote needs every sample, so the stream sends keep-alive comments until the
  vote, then every choice step by step, the voted one first (index 0);
- then a chunk with each choice's ``finish_reason`` and the ``atts`` object, a ``usage`` chunk
  when asked for, and ``data: [DONE]``.  An error once the stream has begun can only be an
  event: ``data: {"error": ...}`` before ``[DONE]``.

Text cut by a stop string is never sent: the tail of a live text that could begin one waits
for the next round (``StopStrings.visible``).  A client that disconnects cancels the stream;
the generator cancels the solve in its ``finally`` and waits for its samples to stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from atts.serve import responses as shapes
from atts.serve.errors import ApiError, error_body
from atts.serve.schemas import ChatRequest
from atts.serve.service import AttsService, Prepared, Solution
from atts.serve.settings import ServeSettings
from atts.serve.stops import StopStrings


async def events(
    service: AttsService, settings: ServeSettings, prepared: Prepared, parsed: ChatRequest,
    chunks: shapes.ChunkShape, *, on_first: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The SSE stream of one request, of either route (``chunks`` says how it speaks).
    ``on_first``: called once, as the first content is sent (time to first token)."""
    live = prepared.options.n == 1
    updates: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.ensure_future(
        service.solve(prepared, on_text=updates.put_nowait if live else None)
    )
    task.add_done_callback(lambda _: updates.put_nowait(None))
    mark = _Once(on_first)

    try:
        sent, stopped = 0, False  # the live text: characters sent; cut at a stop string
        if live and (opening := chunks.opening(0)) is not None:
            yield chunks.event([opening])
        while (text := await _next_update(updates, settings.keepalive_seconds)) is not None:
            if not text:
                yield shapes.KEEPALIVE
            elif live and not stopped:
                visible, stopped = parsed.stops.visible(text)
                if len(visible) > sent:
                    mark()
                    yield chunks.event([chunks.text(0, visible[sent:])])
                    sent = len(visible)
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
        for event in _after_vote(solution, sent if live else None, chunks, parsed.stops,
                                 mark):
            yield event
        if parsed.include_usage:
            yield chunks.event([], usage=shapes.usage(solution))
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
    solution: Solution, live_sent: int | None, chunks: shapes.ChunkShape, stops: StopStrings,
    mark: Callable[[], None],
) -> Iterator[bytes]:
    """The events once the vote is in.  ``live_sent``: characters of the live sample sent
    already (None when nothing streamed live: then every choice is sent step by step)."""
    finals = []
    for index, i in enumerate(shapes.choice_order(solution)):
        pieces, finish = shapes.stream_pieces(solution.traces[i], stops)
        if live_sent is not None:  # what was held back in case a stop string began there
            rest = "".join(pieces)[live_sent:]
            pieces = [rest] if rest else []
        elif (opening := chunks.opening(index)) is not None:
            yield chunks.event([opening])
        for piece in pieces:
            mark()
            yield chunks.event([chunks.text(index, piece)])
        finals.append(chunks.end(index, finish))
    mark()  # an answer with no text at all: its first content is its end
    yield chunks.event(finals, atts=shapes.atts_object(solution))


class _Once:
    """Calls ``action`` on the first call only."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


class EventStream(StreamingResponse):
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
