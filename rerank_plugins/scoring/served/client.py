"""An asyncio HTTP client for one inference server: bounded requests in flight, retries, timeouts.

The client owns an event loop in a daemon thread. Coroutines run there, so synchronous callers
(strategies call the backend from worker threads; ``arerank`` runs ``rerank`` through
``asyncio.to_thread``) wait on a future without touching the caller's event loop, and async
callers await the same coroutines through :meth:`HttpClient.wrap`.

At most ``max_in_flight`` requests are on the wire at once (a semaphore and the connection pool
share that bound), so the server's continuous batching sees many of them together. A request is
retried with exponential backoff (and the server's ``Retry-After``) on HTTP 429, 502, 503 and 504
and on connection errors (refused, reset, closed mid-response); a request that outlives
``timeout`` seconds, or any other HTTP error, fails at once. Every failure is a
:class:`ServedModelError` naming the server, the endpoint and what the request was for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["RETRY_STATUS", "HttpClient", "ServedModelError", "require_httpx"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses retried with backoff: rate limited, or the server (or its proxy) not ready
RETRY_STATUS = frozenset({429, 502, 503, 504})
_INSTALL = 'pip install "rerank-plugins[served]"'


class ServedModelError(RuntimeError):
    """A request to an inference server failed, or the server cannot serve what a strategy needs.

    The message names the server, the endpoint and the request.
    """


def require_httpx() -> Any:
    """The ``httpx`` module, or an ``ImportError`` giving the pip command that installs it."""
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"served models need httpx: {_INSTALL}") from exc
    return httpx


class HttpClient:
    """JSON over HTTP to one server, from any thread or event loop.

    Args:
        base_url: the server root (``http://host:port``, no ``/v1``).
        api_key: sent as ``Authorization: Bearer <key>`` (never logged or shown).
        timeout: seconds one request may take (connecting, sending, the server working, reading).
        max_in_flight: requests on the wire at once.
        max_retries: retries of one request after a retryable failure (0: none).
        backoff: the first retry's delay in seconds; each further retry doubles it (with jitter).
        transport: an ``httpx.AsyncBaseTransport`` (tests use a mock transport).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_in_flight: int = 32,
        max_retries: int = 3,
        backoff: float = 0.5,
        transport: Any = None,
    ) -> None:
        httpx = require_httpx()
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive int, got {max_in_flight!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.retries = 0  # retried requests, process lifetime (read by the backend's stats)
        self._retry_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rerank-served-http", daemon=True)
        self._thread.start()
        self._closed = False

        async def build() -> tuple[Any, asyncio.Semaphore]:
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0), pool=None),
                limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
                transport=transport,
            )
            return client, asyncio.Semaphore(max_in_flight)

        self._client, self._slots = self.run(build())

    # ------------------------------------------------------------------ running coroutines
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop and wait for it (from any thread but the loop's own)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("HttpClient.run called from the client's own event loop; await the coroutine")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def wrap(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """An awaitable for the caller's event loop; ``coro`` runs on the client's loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the client's loop; the returned future completes with its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # ------------------------------------------------------------------ requests
    async def get(self, path: str, *, what: str, missing_ok: bool = False) -> Any:
        """GET ``path`` as JSON; ``None`` for a 404/405 when ``missing_ok`` (an endpoint the server lacks)."""
        return await self._request("GET", path, None, what=what, missing_ok=missing_ok)

    async def post(self, path: str, body: dict[str, Any], *, what: str, missing_ok: bool = False) -> Any:
        """POST ``body`` to ``path`` and return the JSON answer."""
        return await self._request("POST", path, body, what=what, missing_ok=missing_ok)

    def _where(self, method: str, path: str, what: str) -> str:
        return f"{method} {self.base_url}{path} ({what})"

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, *, what: str, missing_ok: bool
    ) -> Any:
        httpx = require_httpx()
        where = self._where(method, path, what)
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                async with self._slots:
                    response = await self._client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    last = f"connection timed out ({exc!r})"
                else:
                    raise ServedModelError(
                        f"{where}: no answer within the timeout of {self.timeout:g} s "
                        f"({type(exc).__name__}); raise timeout= if the server is just slow"
                    ) from exc
            except (httpx.TransportError, OSError) as exc:
                # refused, reset, or closed before the answer: the server is down or restarting
                last = f"{type(exc).__name__}: {exc or 'connection failed'}"
            else:
                status = response.status_code
                if status < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise ServedModelError(f"{where}: the answer is not JSON: {response.text[:300]!r}") from exc
                if missing_ok and status in (404, 405):
                    return None
                text = response.text[:500]
                if status not in RETRY_STATUS:
                    hint = " (check api_key= or RERANK_PLUGINS_API_KEY)" if status in (401, 403) else ""
                    raise ServedModelError(f"{where}: HTTP {status}{hint}: {text}")
                last = f"HTTP {status}: {text}"
                retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt + 1 < attempts:
                delay = self.backoff * (2**attempt) * (0.5 + random.random() / 2)
                delay = min(max(delay, retry_after or 0.0), 30.0)
                with self._retry_lock:
                    self.retries += 1
                logger.info("%s failed (%s); retry %d of %d in %.2f s", where, last, attempt + 1, self.max_retries,
                            delay)
                await asyncio.sleep(delay)
        raise ServedModelError(f"{where}: failed after {attempts} attempt(s): {last}")

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self._client.aclose())
        except Exception:  # closing a client whose server died must not raise
            logger.debug("closing the HTTP client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def gather_all(calls: list[Callable[[], Coroutine[Any, Any, T]]]) -> list[T]:
    """Run every call concurrently; the first failure cancels the rest and is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call()) for call in calls]
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]
