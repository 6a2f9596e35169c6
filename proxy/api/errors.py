"""The one place where errors become HTTP: ``{"error": {"code": ..., "message": ...}}``.

Handlers raise; they never build error responses. Domain errors (``proxy``
and ``billing`` trees) carry or map to a status and a stable ``code``;
aiohttp's own HTTP exceptions (unknown route, wrong method, body too large)
get the same shape; anything else is a bug: 500 ``internal``, traceback in the
log, nothing of it in the response.
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import DBAPIError

from billing import exceptions as billing
from billing.db import is_retryable
from proxy.exceptions import BadRequest, ProxyPrintError, RequestTimeout
from proxy.keys import CONFIG

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the service log has the details"
# RFC 6750 §3: a 401 for a bearer-protected resource carries this challenge.
BEARER_CHALLENGE = 'Bearer realm="proxyprint"'


class BadJson(BadRequest):
    """The request body is not a JSON object."""

    code = "bad-json"


class InvalidParameter(BadRequest):
    """A query or path parameter that cannot be valid (limit, cursor, date...)."""

    code = "invalid-parameter"


# Most specific first: the first isinstance match decides. Status 500 entries
# are bugs upstream (a ledger key reused with another amount...): logged, not shown.
_BILLING: tuple[tuple[type[billing.BillingError], int, str], ...] = (
    (billing.InvalidInput, 400, "invalid-input"),
    (billing.NotFound, 404, "not-found"),
    (billing.Conflict, 409, "conflict"),
    (billing.InvalidTransition, 409, "invalid-transition"),
    (billing.BillingError, 500, "internal"),
)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", BEARER_CHALLENGE)
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


# Codes are a public contract: spelled out, not derived from HTTPStatus
# phrases, which change between Python versions (413 became "Content Too Large").
_HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def _status_code(status: int) -> str:
    return _HTTP_CODES.get(status, f"http-{status}")


def _from_http(exc: web.HTTPException) -> web.Response:
    # aiohttp's default text is "404: Not Found"; a custom one (e.g. the body
    # size limit) says more, so keep it.
    default = f"{exc.status}: {exc.reason}"
    message = exc.reason if exc.text in (None, "", default) else (exc.text or exc.reason)
    kept = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    return error_response(exc.status, _status_code(exc.status), message, kept)


def _internal(request: web.Request, exc: BaseException) -> web.Response:
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", INTERNAL_MESSAGE)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return _from_http(exc)
    except ProxyPrintError as exc:
        if exc.status == 500:
            return _internal(request, exc)
        if exc.status > 500:
            log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(exc.status, exc.code, str(exc))
    except billing.BillingError as exc:
        for kind, status, code in _BILLING:
            if isinstance(exc, kind):
                if status == 500:
                    return _internal(request, exc)
                return error_response(status, code, str(exc))
        raise AssertionError("unreachable: BillingError is the last entry") from exc
    except DBAPIError as exc:
        if not is_retryable(exc):
            return _internal(request, exc)
        # A deadlock or serialization victim: rolled back whole, nothing changed.
        log.warning("%s %s: %s", request.method, request.path, exc.orig)
        message = "the database was busy with a concurrent change; nothing changed, try again"
        return error_response(503, "database-busy", message)
    except Exception as exc:  # a bug: log it whole, show nothing of it
        return _internal(request, exc)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; numbers with a fraction become Decimal.

    Decimal, not float: amounts must stay exact (SPEC §4). NaN/Infinity are
    refused. ``optional`` lets an empty body stand for ``{}``.
    """
    try:
        async with asyncio.timeout(request.app[CONFIG].limits.body_timeout_secs):
            raw = await request.read()  # over client_max_size: aiohttp raises 413
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadJson(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadJson(f"request body must be a JSON object, not {type(body).__name__}")
    _check_text(body)
    return body


def _check_text(body: dict[str, Any]) -> None:
    """Every string must be storable text: no NUL, no lone surrogate (I-JSON, RFC 7493).

    JSON's ``\\ud800`` escapes decode to lone surrogates, which no database driver
    can encode, and PostgreSQL text cannot hold NUL: refused here, as bad JSON.
    """
    stack: list[Any] = [body]
    while stack:  # iterative: nesting depth is bounded by the parser only
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\0" in item:
                raise BadJson("request body: a string contains a NUL character (\\u0000)")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadJson(
                    "request body: a string holds a lone surrogate (\\ud800-\\udfff)"
                ) from None


def reject_unknown(body: dict[str, Any], known: set[str]) -> None:
    """Unknown fields are refused: a typo must not be silently ignored."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidParameter(f"unknown field(s): {', '.join(unknown)}")
