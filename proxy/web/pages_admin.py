"""Admin pages: users (web role, password, disable) and one account's ledger.

Setting a password or disabling a user ends that user's web sessions at once
(a disabled user's sessions would end anyway: every request checks
``users.active``). Each change is an event with the admin as actor.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import select

from billing import events, ledger
from billing.enums import Role
from billing.models import Account, User
from proxy.api import queries
from proxy.exceptions import BadRequest, NotFound
from proxy.keys import READ_SESSIONS, SESSIONS

from . import passwords, sessions
from .auth import signed_form, signed_in
from .render import html

PAGE = 50
# Roles a person's web session may carry (reader is for card readers).
WEB_ROLES = tuple(r.value for r in Role if r is not Role.READER)
ACCOUNT_ROLES = (Role.ACCOUNTS_EDITOR,)  # admin passes too


async def users(request: web.Request) -> web.Response:
    signed_in(request, Role.ADMIN)
    params = queries.query_params(request.query, frozenset({"cursor", "done"}))
    cursor = params.get("cursor")
    after = queries.decode_cursor("user", cursor, 1)[0] if cursor else None
    stmt = select(User).order_by(User.id).limit(PAGE + 1)
    if after is not None:
        stmt = stmt.where(User.id > after)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = list(await session.scalars(stmt))
    next_cursor = queries.encode_cursor("user", found[PAGE - 1].id) if len(found) > PAGE else None
    return html(
        request,
        "users.html",
        users=found[:PAGE],
        roles=WEB_ROLES,
        next_cursor=next_cursor,
        done=params.get("done", ""),
    )


async def edit_user(request: web.Request) -> web.Response:
    principal, form = await signed_form(request, Role.ADMIN)
    role = form.get("role", "")
    if role not in WEB_ROLES:
        raise BadRequest(f"unknown role {role[:40]!r} (one of: {', '.join(WEB_ROLES)})")
    active = form.get("active") == "on"
    password = form.get("password", "")
    hashed = None
    if password:
        problem = passwords.acceptable(password)
        if problem:
            raise BadRequest(problem)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
    raw = request.match_info["id"]
    user_id = queries.parse_id(raw)
    async with request.app[SESSIONS]() as session, session.begin():
        user = None if user_id is None else await session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {raw[:40]!r} not found")
        if user.id == principal.user_id and (not active or role != Role.ADMIN.value):
            raise BadRequest("you cannot disable yourself or take away your own admin role")
        changes = []
        if role != user.web_role:
            changes.append(f"web role {user.web_role} -> {role}")
            user.web_role = role
        if active != user.active:
            changes.append("enabled" if active else "disabled")
            user.active = active
        if hashed is not None:
            changes.append("password set")
            user.password_hash = hashed
        if hashed is not None or not active:
            ended = await sessions.revoke_user(session, user.id)
            if ended:
                changes.append(f"{ended} web session(s) ended")
        if changes:
            events.record(
                session,
                subject_type="user",
                subject_id=user.id,
                actor=principal.describe(),
                reason="web-user-edited",
                message="; ".join(changes),
            )
        name = user.name
    raise web.HTTPSeeOther(f"/admin/users?done={'changed' if changes else 'unchanged'}-{name}")


async def account_ledger(request: web.Request) -> web.Response:
    signed_in(request, *ACCOUNT_ROLES)
    params = queries.query_params(request.query, frozenset({"cursor"}))
    cursor = params.get("cursor")
    before = queries.decode_cursor(queries.LEDGER_CURSOR, cursor, 1)[0] if cursor else None
    raw = request.match_info["id"]
    account_id = queries.parse_id(raw)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        account = None
        if account_id is not None:
            account = await session.scalar(select(Account).where(Account.id == account_id))
        if account is None:
            raise NotFound(f"account {raw[:40]!r} not found")
        amount, pages = await ledger.totals(session, account.id)
        entries, next_cursor = await queries.ledger_page(
            session, account.id, limit=PAGE, before_id=before
        )
    return html(
        request,
        "balance.html",
        account=account,
        balance=amount,
        pages=pages,
        entries=entries,
        next_cursor=next_cursor,
        more_url=f"/admin/accounts/{account.id}",
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/users", users, name="web.admin-users"),
        web.post("/admin/users/{id}", edit_user, name="web.admin-user-edit"),
        web.get("/admin/accounts/{id}", account_ledger, name="web.admin-account"),
    ]
