"""uvicorn around the app: in the foreground (``atts serve``) or on a background thread.

``ServerThread`` runs the whole server (its own event loop, the service and its engines inside)
on a daemon thread bound to an ephemeral loopback port: the tests and the load benchmark call it
with the official clients, over real sockets.  Stopping it runs the app's shutdown, which saves
the calibration bank, exactly like Ctrl-C on ``atts serve``.

Shutdown, both ways: uvicorn stops accepting connections and gives the requests in flight
``settings.shutdown_seconds`` to finish.  ``_Server`` tells the service first, which ends the
requests still running shortly before that (``SHUTDOWN_MARGIN``) with a 503 in the OpenAI
shape, so every client gets an answer before uvicorn would cancel its request.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from atts.serve.service import AttsService
from atts.serve.settings import ServeSettings

SHUTDOWN_MARGIN = 1.0  # seconds left to stop the samples and write the 503s (at most half)


def serve_forever(service: AttsService, settings: ServeSettings, *, host: str, port: int,
                  log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM); the bank is saved on the way out."""
    _Server(service, _config(service, settings, host, port, log_level)).run()


def _config(service: AttsService, settings: ServeSettings, host: str, port: int,
            log_level: str) -> uvicorn.Config:
    from atts.serve.app import create_app

    return uvicorn.Config(create_app(service, settings), host=host, port=port,
                          log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=settings.shutdown_seconds)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the service as its shutdown begins."""

    def __init__(self, service: AttsService, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = float(self.config.timeout_graceful_shutdown or 0)
        self._service.shut_down(within=grace - min(SHUTDOWN_MARGIN, grace / 2))
        await super().shutdown(sockets)


class ServerThread:
    """``with ServerThread(service, settings) as server: httpx.get(server.url + "/health")``."""

    def __init__(self, service: AttsService, settings: ServeSettings, *,
                 host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.service = service
        self._server = _Server(service, _config(service, settings, host, port, log_level))
        self._thread = threading.Thread(target=self._server.run, name="atts-serve",
                                        daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start; see its log above")
            time.sleep(0.01)
        sockets: list[Any] = [s for server in self._server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
