"""HTTP for the remote engines: one retry policy, typed errors, per-call timeouts, routing.

Every request of a remote engine goes through ``RemoteHttp.post``:

- routing: each request goes to the endpoint with the fewest requests in flight (ties go to
  the one that has been sent the fewest so far, so sequential calls rotate);
- retries: connection errors, timeouts and HTTP 408/409/429/5xx are retried with exponential
  backoff and jitter, ``min(max_backoff, backoff * 2**attempt) * U(0.5, 1.5)`` capped at
  ``max_backoff``, or after the server's ``Retry-After`` when it sends one; a retry prefers
  another endpoint, and an endpoint that refused a connection is avoided until its backoff ends;
- errors (``atts.engines.remote.errors``): retries exhausted -> ``RemoteUnavailableError``
  (an ``EngineUnavailableError``: the run-level wrapper may retry the call, and a sample that
  still fails records the error); any other 4xx -> ``RemoteRequestError`` carrying the
  server's own message, or ``RemoteContextOverflowError`` when that message says the request
  exceeds the context; a 2xx whose body lacks what the engine needs -> ``RemoteResponseError``.

Start-up checks (``check_health``) are synchronous: engines are built in a constructor.
httpx is imported inside the functions that need it (``import atts`` stays light).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from atts.engines.remote.errors import (
    RemoteResponseError,
    RemoteUnavailableError,
    error_message,
    refusal,
)

# HTTP statuses worth another try: request timeout, conflict (a server busy reloading),
# rate limits, and every server-side error.
RETRY_STATUSES = frozenset({408, 409, 429})
@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a failed remote call again."""

    max_retries: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubles per retry
    max_backoff: float = 20.0
    max_retry_after: float = 120.0  # a longer Retry-After is cut to this

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must be >= 0")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return min(self.max_backoff, base * (0.5 + rng.random()))


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def normalize_urls(base_url: str | Sequence[str]) -> list[str]:
    """One URL, a comma-separated list, or a sequence -> distinct URLs without trailing '/'."""
    items = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls: list[str] = []
    for item in items:
        url = str(item).strip().rstrip("/")
        if not url:
            continue
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {url!r} must start with http:// or https://, "
                             "e.g. http://localhost:8000")
        if url.endswith("/v1"):
            url = url[: -len("/v1")]  # paths are added per endpoint (/v1/completions, /generate)
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError("base_url is empty; pass the server's URL, e.g. http://localhost:8000")
    return urls


class _Endpoint:
    def __init__(self, url: str) -> None:
        self.url = url
        self.in_flight = 0
        self.sent = 0
        self.down_until = 0.0


class Router:
    """Least-loaded choice among endpoints (requests in flight, then requests sent)."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.endpoints = [_Endpoint(u) for u in urls]

    def pick(self, avoid: str | None = None, now: float | None = None) -> _Endpoint:
        now = time.monotonic() if now is None else now
        pool = [e for e in self.endpoints if e.url != avoid] or self.endpoints
        up = [e for e in pool if e.down_until <= now] or pool
        return min(up, key=lambda e: (e.in_flight, e.sent))

    def in_flight(self) -> dict[str, int]:
        return {e.url: e.in_flight for e in self.endpoints}


class RemoteHttp:
    """An async JSON client over one or more endpoints of one server role.

    ``timeout`` bounds each HTTP request (read, write and pool waits); ``connect_timeout``
    bounds opening a connection; ``health_timeout`` bounds each start-up check.  ``transport``
    replaces httpx's network transport (``httpx.MockTransport`` in tests); ``sleep`` replaces
    ``asyncio.sleep`` between retries.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        name: str,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        health_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: Any = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        for label, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                             ("health_timeout", health_timeout)):
            if value <= 0:
                raise ValueError(f"{label} must be > 0 seconds, got {value}")
        self.urls = normalize_urls(base_url)
        self.name = name
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.router = Router(self.urls)
        self.retries = 0
        self._connect_timeout = connect_timeout
        self._health_timeout = health_timeout
        self._headers = dict(headers or {})
        self._transport = transport
        self._rng = rng or random.Random()
        self._sleep = sleep or asyncio.sleep
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- async requests ----------------------------------------------------------------------

    async def post(self, path: str, payload: dict[str, Any], *,
                   timeout: float | None = None) -> Any:
        """POST ``payload`` as JSON to ``path`` on the least-loaded endpoint; the decoded JSON
        body of the first 2xx answer.  Raises the typed errors of this module."""
        import httpx

        client = self._async_client()
        limit = self.timeout if timeout is None else timeout
        call_timeout = httpx.Timeout(limit, connect=min(limit, self._connect_timeout))
        attempt = 0
        last_url: str | None = None
        while True:
            endpoint = self.router.pick(avoid=last_url)
            endpoint.in_flight += 1
            endpoint.sent += 1
            retry_after: float | None = None
            refused_connection = False
            try:
                response = await client.post(endpoint.url + path, json=payload,
                                             timeout=call_timeout)
            except httpx.TimeoutException as err:
                failure = f"no answer within {limit:g} s ({type(err).__name__})"
            except httpx.TransportError as err:
                failure = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                refused_connection = isinstance(err, httpx.ConnectError)
            else:
                if response.status_code < 400:
                    return _json_body(response, endpoint.url + path, self.name)
                message = error_message(response)
                if not retryable_status(response.status_code):
                    raise refusal(response.status_code, message, endpoint.url, self.name)
                failure = f"HTTP {response.status_code}: {message}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            finally:
                endpoint.in_flight -= 1
            if attempt >= self.retry.max_retries:
                raise RemoteUnavailableError(
                    f"{self.name}: POST {path} failed {attempt + 1} time(s); last try "
                    f"{endpoint.url}: {failure}. Check that the server is up (endpoints: "
                    f"{', '.join(self.urls)}), or raise max_retries/timeout",
                    endpoints=self.urls, attempts=attempt + 1,
                )
            delay = self.retry.delay(attempt, retry_after, self._rng)
            if refused_connection:
                endpoint.down_until = time.monotonic() + delay
            attempt += 1
            self.retries += 1
            last_url = endpoint.url
            await self._sleep(delay)

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client's connections belong to the event loop that opened them; a new loop
            # (a second asyncio.run) gets a new client.
            import httpx

            self._client_loop = loop
            self._client = httpx.AsyncClient(
                transport=self._transport,
                headers=self._headers,
                timeout=httpx.Timeout(self.timeout, connect=self._connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    # -- synchronous start-up checks ---------------------------------------------------------

    def check_health(self, paths: Sequence[str]) -> None:
        """GET the first of ``paths`` that answers 2xx on every endpoint; raise one
        ``RemoteUnavailableError`` naming every endpoint that did not answer."""
        import httpx

        dead: list[str] = []
        with self._sync_client() as client:
            for url in self.urls:
                problem = ""
                for path in paths:
                    try:
                        response = client.get(url + path)
                    except httpx.HTTPError as err:
                        problem = f"GET {path}: {type(err).__name__} {err}".rstrip()
                        break  # the server is not there: other paths will not answer either
                    if response.status_code < 300:
                        problem = ""
                        break
                    problem = f"GET {path}: HTTP {response.status_code}"
                if problem:
                    dead.append(f"{url} ({problem})")
        if dead:
            raise RemoteUnavailableError(
                f"{self.name}: {len(dead)} of {len(self.urls)} endpoint(s) did not answer: "
                f"{'; '.join(dead)}. Start the server(s), wait until they are ready, or remove "
                "them from base_url",
                endpoints=[d.split(" ")[0] for d in dead],
            )

    def get_sync(self, url: str, path: str) -> Any | None:
        """GET ``path`` on ``url``: the JSON body, or None when it fails (optional metadata)."""
        return self._request_sync("GET", url, path, None)

    def post_sync(self, url: str, path: str, payload: dict[str, Any]) -> Any | None:
        """POST at start-up (probes): the JSON body, or None when it fails."""
        return self._request_sync("POST", url, path, payload)

    def _request_sync(self, method: str, url: str, path: str,
                      payload: dict[str, Any] | None) -> Any | None:
        import httpx

        with self._sync_client() as client:
            try:
                response = client.request(method, url + path, json=payload)
                if response.status_code >= 300:
                    return None
                return response.json()
            except (httpx.HTTPError, ValueError):
                return None

    def _sync_client(self) -> Any:
        import httpx

        return httpx.Client(transport=self._transport, headers=self._headers,
                            timeout=httpx.Timeout(self._health_timeout))


def _json_body(response: Any, where: str, name: str) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise RemoteResponseError(
            f"{name}: {where} answered HTTP {response.status_code} with a body that is not "
            f"JSON: {str(response.text)[:200]!r}"
        ) from err
