"""Who is signed in: the web session as an API ``Principal``, role checks, sign-in/out.

A web session carries its user's ``web_role``, one of the API's roles, and
handlers check it with the API's rule (``proxy.api.auth.allowed``: admin
passes wherever a staff role does). Pages reuse the API's query and
operation functions with this principal, so a page never shows or does more
than the same user's token could.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select

from billing.enums import Role
from billing.models import User
from proxy.api.auth import Principal, allowed
from proxy.exceptions import Forbidden, TooManyAttempts, Unauthorized
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS, WEB_THROTTLE

from . import csrf, passwords, sessions


@dataclass(frozen=True, slots=True)
class WebPrincipal(Principal):
    """A signed-in person: ``token_id`` is the web session's id."""

    csrf: str = ""

    def describe(self) -> str:
        return f"web:{self.role.value}:{self.user_name}"


PRINCIPAL = web.RequestKey("web_principal", WebPrincipal)


class SignInThrottled(TooManyAttempts):
    """Too many failed sign-ins for the user name or the address lately."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = int(retry_after) + 1
        super().__init__(f"too many failed sign-ins; try again in {self.retry_after} seconds")


class SignInRequired(Unauthorized):
    """No live session: pages answer with the sign-in page (a redirect to ``/``)."""

    code = "sign-in-required"


def principal_of(request: web.Request) -> WebPrincipal | None:
    return request.get(PRINCIPAL)


def cookie_secure(request: web.Request) -> bool:
    mode = request.app[CONFIG].web.cookie_secure
    if mode != "auto":
        return mode == "always"
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def load_principal(request: web.Request) -> None:
    """Put the request's live session, if any, under ``PRINCIPAL``."""
    secret = request.cookies.get(sessions.COOKIE)
    if not secret:
        return
    config = request.app[CONFIG].web
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await sessions.lookup(session, secret, config)
    if found is None:
        return
    if found.stale:
        async with request.app[SESSIONS]() as session, session.begin():
            await sessions.touch(session, found.session_id)
    request[PRINCIPAL] = WebPrincipal(
        token_id=found.session_id,
        role=found.role,
        user_id=found.user_id,
        user_name=found.user_name,
        csrf=found.csrf,
    )


def signed_in(request: web.Request, *roles: Role) -> WebPrincipal:
    """The signed-in principal; SignInRequired without one, 403 for a wrong role."""
    principal = principal_of(request)
    if principal is None:
        raise SignInRequired("sign in first")
    if roles and not allowed(principal.role, roles):
        raise Forbidden(f"role {principal.role.value!r} may not see or do this")
    return principal


async def signed_form(
    request: web.Request, *roles: Role
) -> tuple[WebPrincipal, MultiDictProxy[str]]:
    """A POST of a signed-in principal with the session's CSRF token, and its form."""
    principal = signed_in(request)
    form = await csrf.read_form(request)
    csrf.check(principal.csrf, form)
    if roles and not allowed(principal.role, roles):
        raise Forbidden(f"role {principal.role.value!r} may not do this")
    return principal, form


# --- sign-in and sign-out -----------------------------------------------------------


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


async def _check_password(request: web.Request, name: str, password: str) -> User | None:
    """The active proxyprint user ``name`` whose password is right, or None.

    Local first, then PAM (as ``[web] auth`` enables them). PAM is asked even
    for a name proxyprint does not know, so the answer time does not tell
    which names exist; a PAM success for such a name is still a refusal.
    """
    config = request.app[CONFIG].web
    async with request.app[READ_SESSIONS]() as session, session.begin():
        user = await session.scalar(select(User).where(User.name == name))
    ok = False
    if "local" in config.auth:
        stored = user.password_hash if user is not None else None
        ok = await asyncio.to_thread(passwords.verify_password, password, stored)
    if not ok and "pam" in config.auth:
        ok = await asyncio.to_thread(passwords.verify_pam, name, password, config.pam_service)
    if not ok or user is None or not user.active:
        return None
    return user


async def sign_in(request: web.Request) -> tuple[str, User] | None:
    """Check the sign-in form; a new session's secret and its user, or None (wrong).

    Raises 403 without the sign-in form's CSRF token, 429 when the user name
    or the address has had too many failures lately.
    """
    form = await csrf.read_form(request)
    csrf.check(request.cookies.get(csrf.LOGIN_COOKIE, ""), form)
    name = form.get("user", "").strip()[:255]
    password = form.get("password", "")
    throttle = request.app[WEB_THROTTLE]
    address = _address(request)
    wait = throttle.retry_after(name, address)
    if wait is not None:
        raise SignInThrottled(wait)
    user = await _check_password(request, name, password) if name and password else None
    if user is None:
        throttle.failed(name, address)
        return None
    throttle.succeeded(name)
    previous = principal_of(request)
    async with request.app[SESSIONS]() as session, session.begin():
        if previous is not None:  # a new session at each sign-in; the old one ends
            await sessions.revoke(session, previous.token_id)
        secret, _ = await sessions.create(
            session, user, address=address, config=request.app[CONFIG].web
        )
    return secret, user


def set_session_cookie(request: web.Request, response: web.StreamResponse, secret: str) -> None:
    response.set_cookie(
        sessions.COOKIE,
        secret,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=cookie_secure(request),
        max_age=int(dt.timedelta(hours=request.app[CONFIG].web.session_hours).total_seconds()),
    )
    response.del_cookie(csrf.LOGIN_COOKIE, path="/")


def set_login_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        csrf.LOGIN_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=cookie_secure(request),
    )


async def sign_out(request: web.Request) -> None:
    principal, _ = await signed_form(request)
    async with request.app[SESSIONS]() as session, session.begin():
        await sessions.revoke(session, principal.token_id)
