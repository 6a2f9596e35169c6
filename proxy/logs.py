"""Logging: request ids in every record of a request, text or JSON lines.

A request id comes from the client's ``X-Request-Id`` header when it is sane
(1-64 characters of ``[A-Za-z0-9._-]``), else it is made here; the response
carries it back in ``X-Request-Id``. The id lives in a context variable set by
:func:`request_id_middleware`; :class:`RequestIdFilter`, installed on the
handler by :func:`setup_logging`, copies it into every record, whichever
logger wrote it (ours, aiohttp's access log, SQLAlchemy's).

aiohttp runs each request in a task of its own (it copies the context for
exactly this, aiohttp#3406), so the variable is set for that task and never
reset: the access-log line, written after the middleware chain returns, still
carries the id, and nothing leaks into the next request of the connection.

``[log] format = "json"`` writes one JSON object per line with the keys
``time`` (ISO 8601 UTC), ``level``, ``logger``, ``message``, ``request_id``
and ``exception`` (the formatted traceback), the last two ``null`` when absent.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import uuid
from typing import TextIO

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import LogConfig

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "proxyprint_request_id", default=None
)
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it may be used as a request id (and written to logs), else None."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take or make the request id; every log record of the request carries it.

    Installed outermost, so the error middleware's log lines carry the id too.
    The response header is added by :func:`add_request_id_header`, just before
    the headers go out, so streamed responses carry it too.
    """
    rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    REQUEST_ID.set(rid)  # this request's own task: see the module docstring
    return await handler(request)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response of a request with an id carries it.

    Runs in the request's task, where the middleware set the context variable.
    """
    del request
    rid = REQUEST_ID.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


def install_request_ids(app: web.Application) -> None:
    """The middleware (outermost: call before adding others) and the header signal."""
    app.middlewares.insert(0, request_id_middleware)
    app.on_response_prepare.append(add_request_id_header)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (None outside a request) and ``request_tag`` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is a string inside it, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            stack = self.formatStack(record.stack_info)
            exception = f"{exception}\n{stack}" if exception else stack
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
            "exception": exception,
        }
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with ``[request id]`` after the logger name."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_tag"):  # a handler without our filter
            rid = REQUEST_ID.get()
            record.request_tag = f" [{rid}]" if rid else ""
        return super().format(record)


def make_handler(config: LogConfig, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the configured format and the id filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name("proxyprint")
    return handler


def setup_logging(config: LogConfig, stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger for ``proxyprint serve``; returns the handler.

    Replaces a handler installed by an earlier call (only ours: handlers that
    others installed, e.g. pytest's capture, are left alone).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "proxyprint":
            root.removeHandler(old)
            old.close()
    handler = make_handler(config, stream)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    return handler
