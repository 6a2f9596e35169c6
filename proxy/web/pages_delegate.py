"""Delegate a job: the ``POST /api/v1/delegations`` form, for clients that cannot send options.

The form's lists use the syntax of the job options (``bob,carol:2``); a
name without ``:N`` gets the form's copies. The API's one path stores it
(``proxy.api.delegations.register``), so the rights of SPEC §3 are the
API's: a delegation she may not make is refused with the reason, on the
form again, nothing stored.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import rights
from billing.db import utcnow
from billing.enums import AccountType, Role
from billing.models import (
    Account,
    Delegation,
    Group,
    Printer,
    User,
    group_members,
)
from proxy.api.delegations import MAX_VALID_MINUTES, register
from proxy.exceptions import BadRequest, Forbidden, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS
from proxy.pipeline.delegation import MAX_COPIES, DelegationKind, parse_delegation

from .auth import WebPrincipal, signed_form, signed_in
from .render import html

# The form's lists, in the order shown: (option, label).
LISTS = (
    (DelegationKind.USERS, "Users"),
    (DelegationKind.GROUPS, "Groups (their group account)"),
    (DelegationKind.SHARED, "Shared accounts"),
)
MINUTES = (15, 60, 240, 1440)
SUGGESTIONS = 200
OWNERS = (Role.ADMIN, Role.USER)  # as POST /api/v1/delegations


async def _suggestions(session: AsyncSession, principal: WebPrincipal) -> dict[str, list[str]]:
    """What she may name: her groups' members, her groups, the shared accounts open to her.

    Only suggestions: the rights are checked when the form is sent.
    """
    mine = select(group_members.c.group_id).where(group_members.c.user_id == principal.user_id)
    users = await session.scalars(
        select(User.name)
        .join(group_members, group_members.c.user_id == User.id)
        .where(group_members.c.group_id.in_(mine), User.active.is_(True))
        .distinct()
        .order_by(User.name)
        .limit(SUGGESTIONS)
    )
    groups = await session.scalars(
        select(Group.name).where(Group.id.in_(mine), Group.active.is_(True)).order_by(Group.name)
    )
    shared = await session.scalars(
        select(Account.path)
        .where(
            Account.type == AccountType.SHARED.value,
            Account.active.is_(True),
            Account.deleted_at.is_(None),
            rights.open_to(principal.user_id),
        )
        .order_by(Account.path)
        .limit(SUGGESTIONS)
    )
    return {
        DelegationKind.USERS.value: [u for u in users if u != principal.user_name],
        DelegationKind.GROUPS.value: list(groups),
        DelegationKind.SHARED.value: list(shared),
    }


async def _page(
    request: web.Request,
    principal: WebPrincipal,
    *,
    status: int = 200,
    error: str = "",
    done: str = "",
    form: MultiDictProxy[str] | None = None,
) -> web.Response:
    async with request.app[READ_SESSIONS]() as session, session.begin():
        printers = list(await session.scalars(select(Printer.name).order_by(Printer.name)))
        suggestions = await _suggestions(session, principal)
        pending = (
            await session.execute(
                select(Delegation, Printer.name)
                .join(Printer, Printer.id == Delegation.printer_id)
                .where(
                    Delegation.delegate == principal.user_name,
                    Delegation.consumed_at.is_(None),
                    Delegation.valid_until > utcnow(),
                )
                .order_by(Delegation.id.desc())
                .limit(SUGGESTIONS)
            )
        ).all()
    keys = ("printer", "copies", "minutes", *(kind.value for kind, _ in LISTS))
    values = {key: form.get(key, "") if form is not None else "" for key in keys}
    return html(
        request,
        "delegate.html",
        status=status,
        printers=printers,
        lists=LISTS,
        suggestions=suggestions,
        minutes=MINUTES,
        values=values,
        error=error,
        done=done,
        pending=pending,
    )


def _number(text: str, name: str, low: int, high: int, default: int) -> int:
    if not text.strip():
        return default
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise BadRequest(f"{name}: a whole number {low}..{high}")
    return int(text)


def _with_copies(text: str, copies: int) -> str:
    """``bob, carol:2`` with copies 3 → ``bob:3,carol:2`` (what the job options would say)."""
    parts = [p.strip() for p in text.split(",")]
    return ",".join(p if ":" in p or not p or copies == 1 else f"{p}:{copies}" for p in parts)


async def delegate_page(request: web.Request) -> web.Response:
    principal = signed_in(request, *OWNERS)
    return await _page(request, principal, done=request.query.get("done", "")[:20])


async def delegate(request: web.Request) -> web.Response:
    principal, form = await signed_form(request, *OWNERS)
    assert principal.user_name is not None  # a web session is always a user's
    try:
        copies = _number(form.get("copies", ""), "copies", 1, MAX_COPIES, 1)
        minutes = _number(form.get("minutes", ""), "valid minutes", 1, MAX_VALID_MINUTES, 60)
        options = {
            kind.value: _with_copies(form[kind.value], copies)
            for kind, _ in LISTS
            if form.get(kind.value, "").strip()
        }
        wanted = parse_delegation(options)
        if wanted is None:
            raise BadRequest("name at least one user, group or shared account to charge")
        async with request.app[SESSIONS]() as session, session.begin():
            row = await register(
                session,
                delegate=principal.user_name,
                printer_name=form.get("printer", ""),
                request=wanted,
                minutes=minutes,
                policy=request.app[CONFIG].delegation,
            )
    except (BadRequest, Forbidden, NotFound) as exc:  # shown on the form, which keeps her input
        return await _page(request, principal, status=exc.status, error=str(exc), form=form)
    raise web.HTTPSeeOther(f"/delegate?done={row.id}")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/delegate", delegate_page, name="web.delegate"),
        web.post("/delegate", delegate, name="web.delegate-post"),
    ]
