"""Listeners that a client cannot exhaust: connection caps, head and idle timeouts.

aiohttp alone accepts every connection and waits for a request head as long
as its keep-alive timeout; 1,100 slow clients then take every descriptor and
the service answers nobody. ``GuardedRunner`` is an ``AppRunner`` whose
protocol factory:

- keeps at most ``max_connections`` open on this listener: at the cap a new
  connection closes the oldest one still waiting for its request head (slow
  clients make way for quick ones, so a probe or a real job still gets in),
  and when every connection is busy with a real request it is refused (a JSON
  503 and close: the CUPS backend treats 503 as "busy", RETRY);
- gives a request head ``head_timeout_secs`` to arrive (aiohttp's keep-alive
  timer closes a connection that is waiting for a head, so it is set to it)
  and an idle keep-alive connection the same;
- answers HTTP parse errors (oversized request line or header, garbage) in
  the service's ``{"error": ...}`` shape instead of aiohttp's plain text.

Refusals and accept errors are logged at most once a second with a count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .config import LimitsConfig as Limits

log = logging.getLogger(__name__)

# The API's request line: the documented query limits (an account path of 600
# characters, dates, names...) percent-encode to more than aiohttp's 8190 bytes when
# the text is not ASCII (12 bytes a character).
MAX_REQUEST_LINE = 32 * 1024


class Throttled:
    """A log line at most once per ``every`` seconds, with what it swallowed."""

    def __init__(self, logger: logging.Logger, every: float = 1.0) -> None:
        self._logger = logger
        self._every = every
        self._last = -float("inf")
        self._swallowed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            self._swallowed += 1
            return
        swallowed, self._swallowed, self._last = self._swallowed, 0, now
        suffix = f" (and {swallowed} more in the last {self._every:g} s)" if swallowed else ""
        self._logger.warning(message + suffix, *args)


def error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class _Refuse(asyncio.Protocol):
    """Over the cap: answer 503 in the error shape and hang up."""

    RESPONSE = b"".join(
        [
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n",
            b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n",
        ]
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = error_body(503, "busy", "too many connections; try again shortly")
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.RESPONSE % len(body) + body)
        transport.close()


class JsonErrorHandler(RequestHandler):
    """aiohttp's protocol with parse errors in the service's error shape."""

    __slots__ = ("_guard",)

    def __init__(self, guard: Guard, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._guard = guard

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # aiohttp counts parsed request heads; the first one ends the wait.
        if self._request_count:
            self._guard.head_arrived(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.head_arrived(self)
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a handler crashed: aiohttp's own logging and body
            return super().handle_error(request, status, exc, message)
        _parse_errors.warning("refused a malformed request (%d): %s", status, message or exc)
        text = (message or "malformed HTTP request").splitlines()[0][:200]
        response = web.Response(
            status=status,
            body=error_body(status, "bad-request", text),
            content_type="application/json",
        )
        response.force_close()
        return response


_parse_errors = Throttled(log)


class Guard:
    """The protocol factory a site serves: cap first, then aiohttp's handler."""

    def __init__(self, server: web.Server, name: str, limits: Limits) -> None:
        self._server = server
        self._name = name
        self._limits = limits
        self._refusals = Throttled(log)
        self._evictions = Throttled(log)
        # Connections still waiting for their first request head, oldest first.
        self._waiting: dict[JsonErrorHandler, None] = {}
        self.refused = 0
        self.evicted = 0

    def head_arrived(self, handler: JsonErrorHandler) -> None:
        self._waiting.pop(handler, None)

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self._limits.max_connections:
            if not self._waiting:
                self.refused += 1
                self._refusals.warning(
                    "%s: %d connections busy, refusing more",
                    self._name,
                    self._limits.max_connections,
                )
                return _Refuse()
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.force_close()
            self.evicted += 1
            self._evictions.warning(
                "%s: at %d connections; closed the oldest one still sending its head",
                self._name,
                self._limits.max_connections,
            )
        # The Server's own arguments (debug, access log, timeouts) for our subclass.
        kwargs: dict[str, Any] = self._server._kwargs
        handler = JsonErrorHandler(self, self._server, loop=asyncio.get_running_loop(), **kwargs)
        self._waiting[handler] = None
        return handler


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose sites serve through a ``Guard``."""

    def __init__(self, app: web.Application, *, name: str, limits: Limits, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", limits.head_timeout_secs)
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        super().__init__(app, **kwargs)
        self._name = name
        self._limits = limits
        self._guard: Guard | None = None

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        if self._guard is None:
            self._guard = Guard(inner, self._name, self._limits)
        # Sites only call it (``loop.create_server(runner.server, ...)``).
        return self._guard  # type: ignore[return-value]

    @property
    def guard(self) -> Guard | None:
        return self._guard


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio logs every failed accept (EMFILE) with a traceback: once a second instead."""
    accept_errors = Throttled(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" in message:
            exc = context.get("exception")
            accept_errors.warning("%s: %s", message, exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft descriptor limit towards ``wanted`` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


# asyncio accepts up to a site's backlog (aiohttp's default, 128) connections in one
# wake-up; a connection evicted at the cap frees its descriptor only after that burst.
ACCEPT_BURST = 128


def check_nofile(limits: Limits, listeners: int) -> str | None:
    """A warning when the descriptor limit is below what the caps allow to be open."""
    per_listener = limits.max_connections + ACCEPT_BURST
    needed = per_listener * listeners + 256  # database, spool, printers
    soft, _hard = raise_nofile(needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"open-file limit {soft} is below {needed} ({listeners} listeners x "
            f"({limits.max_connections} connections + {ACCEPT_BURST} accepted in one burst)"
            " + 256): set LimitNOFILE or lower [limits] max_connections"
        )
    return None
