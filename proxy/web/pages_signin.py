"""``/``: the sign-in page, sign-in and sign-out."""

from __future__ import annotations

from aiohttp import web

from billing.enums import Role

from . import auth, csrf, sessions
from .render import html


def _home_of(principal: auth.WebPrincipal) -> str:
    return "/tickets" if principal.role is Role.TICKET_OPERATOR else "/jobs"


def _sign_in_page(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    token = csrf.new_token()
    response = html(request, "signin.html", status=status, login_csrf=token, error=error)
    auth.set_login_cookie(request, response, token)
    return response


async def home(request: web.Request) -> web.Response:
    principal = auth.principal_of(request)
    if principal is not None:
        raise web.HTTPSeeOther(_home_of(principal))
    return _sign_in_page(request)


async def login(request: web.Request) -> web.Response:
    signed = await auth.sign_in(request)
    if signed is None:
        return _sign_in_page(request, status=401, error="Wrong user name or password.")
    secret, user = signed
    response = web.HTTPSeeOther("/tickets" if user.web_role == Role.TICKET_OPERATOR else "/jobs")
    auth.set_session_cookie(request, response, secret)
    raise response


async def logout(request: web.Request) -> web.Response:
    await auth.sign_out(request)
    response = web.HTTPSeeOther("/")
    response.del_cookie(sessions.COOKIE, path="/")
    raise response


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", home, name="web.home"),
        web.post("/login", login, name="web.login"),
        web.post("/logout", logout, name="web.logout"),
    ]
