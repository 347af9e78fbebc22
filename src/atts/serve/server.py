"""uvicorn around the app: in the foreground (``atts serve``) or on a background thread.

``ServerThread`` runs the whole server (its own event loop, the service and its engines inside)
on a daemon thread bound to an ephemeral loopback port: the tests and the load benchmark call it
with the official clients, over real sockets.  Stopping it runs the app's shutdown, which saves
the calibration bank, exactly like Ctrl-C on ``atts serve``.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from atts.serve.service import AttsService
from atts.serve.settings import ServeSettings

GRACEFUL_SHUTDOWN_SECONDS = 10.0


def serve_forever(service: AttsService, settings: ServeSettings, *, host: str, port: int,
                  log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM); the bank is saved on the way out."""
    import uvicorn

    from atts.serve.app import create_app

    uvicorn.run(create_app(service, settings), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS))


class ServerThread:
    """``with ServerThread(service, settings) as server: httpx.get(server.url + "/health")``."""

    def __init__(self, service: AttsService, settings: ServeSettings, *,
                 host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        from atts.serve.app import create_app

        self.service = service
        config = uvicorn.Config(create_app(service, settings), host=host, port=port,
                                log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS))
        self._server = uvicorn.Server(config)
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
