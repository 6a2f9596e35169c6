"""The web routes' middleware: the session, HTML errors, security headers.

Only routes named ``web.*`` are touched: the JSON API, /metrics and
/healthz (and unknown paths) keep their JSON answers from the API's error
middleware, which stays outside this one.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from billing import exceptions as billing
from proxy.exceptions import ProxyPrintError

from .auth import SignInRequired, SignInThrottled, load_principal
from .render import SECURITY_HEADERS, html

log = logging.getLogger(__name__)

_BILLING_STATUS: tuple[tuple[type[billing.BillingError], int], ...] = (
    (billing.InvalidInput, 400),
    (billing.NotFound, 404),
    (billing.Conflict, 409),
    (billing.InvalidTransition, 409),
)
_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Not possible now",
    413: "Too large",
    429: "Too many attempts",
}


def is_web(request: web.Request) -> bool:
    name = request.match_info.route.name
    return name is not None and name.startswith("web.")


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _redirect(exc: web.HTTPException) -> web.HTTPException:
    for name, value in SECURITY_HEADERS.items():
        exc.headers.setdefault(name, value)
    return exc


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    response = html(
        request,
        "error.html",
        status=status,
        title=_TITLES.get(status, "Error"),
        message=message,
    )
    _secure(response)
    return response


def _billing_status(exc: billing.BillingError) -> int | None:
    for kind, status in _BILLING_STATUS:
        if isinstance(exc, kind):
            return status
    return None


@web.middleware
async def web_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_web(request):
        return await handler(request)
    try:
        if not request.match_info.route.name.startswith("web.static."):  # type: ignore[union-attr]
            await load_principal(request)
        return _secure(await handler(request))
    except SignInRequired:
        if request.path.startswith("/jobs/events"):  # a script's EventSource, not a page
            return _error_page(request, 401, "sign in first")
        raise _redirect(web.HTTPSeeOther("/")) from None
    except web.HTTPException as exc:
        if exc.status < 400:
            raise _redirect(exc) from None
        return _error_page(request, exc.status, exc.reason)
    except SignInThrottled as exc:
        response = _error_page(request, exc.status, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except ProxyPrintError as exc:
        if exc.status >= 500:
            raise  # the API's middleware logs it and answers 500/502
        return _error_page(request, exc.status, str(exc))
    except billing.BillingError as exc:
        status = _billing_status(exc)
        if status is None:
            raise
        return _error_page(request, status, str(exc))
