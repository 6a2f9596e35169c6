"""Server-rendered HTML: Jinja2 with autoescaping on, and the headers every page carries.

Templates live in ``templates/``; the one stylesheet and script of our own in
``static/`` (served by ``static_routes``, never a directory listing). The
Content-Security-Policy allows nothing but our own files: no inline script
or style, no other origin, no framing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from billing.enums import PrintStatus
from billing.money import Currency
from proxy.api import serialize
from proxy.keys import CONFIG, WEB_TEMPLATES

from .auth import WebPrincipal, principal_of

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("proxy.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["status"] = status_label
    env.filters["final"] = lambda value: PrintStatus(value).is_final
    return env


def when(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def status_label(value: int) -> str:
    return PrintStatus(value).label


def money_text(amount: Decimal | None, currency: Currency) -> str:
    shown = serialize.money(amount, currency)
    return "" if shown is None else f"{shown} {currency.code}"


def html(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render ``template`` for this request (its principal and config in the context)."""
    principal: WebPrincipal | None = principal_of(request)
    config = request.app[CONFIG]
    currency = config.money
    text = (
        request.app[WEB_TEMPLATES]
        .get_template(template)
        .render(
            me=principal,
            money=lambda amount: money_text(amount, currency),
            path=request.path,
            **context,
        )
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _static(name: str, content_type: str) -> web.RouteDef:
    body = resources.files("proxy.web").joinpath("static", name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        del request
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "max-age=3600"},
        )

    return web.get(f"/static/{name}", handler, name=f"web.static.{name.replace('.', '-')}")


def static_routes() -> list[web.RouteDef]:
    return [_static("app.js", "text/javascript"), _static("app.css", "text/css")]
