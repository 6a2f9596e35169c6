"""Jobs: held ones (hold mode and held-for-a-reason) listed and released; any job
not yet ended canceled (``control.cancel``) or redirected to another proxy printer
(``redirect.redirect``).

The ``user`` role sees and acts on its own jobs only (it is the delegate);
another user's job is a 404, as everywhere in the API (a 403 would tell her
that the id exists). Job tickets have their own resource (tickets.py).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import PrinterMode, PrintStatus, Role, StatusReason
from billing.models import Printer, PrintOut
from proxy.exceptions import Conflict, Forbidden, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS, WAKE
from proxy.pipeline import control, redirect
from proxy.pipeline import recheck as fixing
from proxy.pipeline import release as held
from proxy.pipeline.delegation import DelegationKind, delegation_from_json
from proxy.pipeline.wake import DISPATCH

from . import queries, serialize
from .auth import Principal, require
from .errors import InvalidParameter, json_body, reject_unknown

LIST_PARAMS = frozenset({"user", "printer", "limit", "cursor"})
OWNERS = (Role.ADMIN, Role.USER)


def held_json(po: PrintOut, printer: str) -> serialize.JSON:
    return {
        "id": po.id,
        "printer": printer,
        "delegate": po.delegate,
        "title": po.title,
        "pages": po.pages,
        "copies": po.copies,
        "mode": po.mode,
        "status": PrintStatus(po.status).label,
        "status_reason": po.status_reason,
        "status_message": po.status_message,
        "created_at": serialize.iso(po.created_at),
        "hold_until": serialize.iso(po.hold_until),
    }


async def held_page(
    session: AsyncSession,
    *,
    mode_is_ticket: bool,
    delegate: str | None,
    printer: str | None,
    limit: int,
    after: int | None,
) -> tuple[list[tuple[PrintOut, str]], str | None]:
    """Held print-outs oldest first (a queue), keyset on id."""
    query = (
        select(PrintOut, Printer.name)
        .join(Printer, Printer.id == PrintOut.printer_id)
        .where(PrintOut.status == int(PrintStatus.HELD))
        .order_by(PrintOut.id)
        .limit(limit + 1)
    )
    ticket = PrintOut.mode == PrinterMode.TICKET.value
    query = query.where(ticket if mode_is_ticket else ~ticket)
    if delegate is not None:
        query = query.where(PrintOut.delegate == delegate)
    if printer is not None:
        query = query.where(Printer.name == printer)
    if after is not None:
        query = query.where(PrintOut.id > after)
    rows = [(po, name) for po, name in (await session.execute(query)).all()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = queries.encode_cursor("held", rows[-1][0].id)
    return rows, next_cursor


async def list_held(request: web.Request) -> web.Response:
    principal = await require(request, Role.ADMIN, Role.TICKET_OPERATOR, Role.USER)
    params = queries.query_params(request.query, LIST_PARAMS)
    user = params.get("user")
    if principal.own_data_only:
        if user is not None and user != principal.user_name:
            raise Forbidden("a user token may only list its own held jobs")
        user = principal.user_name
    cursor = params.get("cursor")
    after = queries.decode_cursor("held", cursor, 1)[0] if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows, next_cursor = await held_page(
            session,
            mode_is_ticket=False,
            delegate=user,
            printer=params.get("printer"),
            limit=queries.parse_limit(params.get("limit")),
            after=after,
        )
    return web.json_response(serialize.page([held_json(po, n) for po, n in rows], next_cursor))


async def own_print_out(session: AsyncSession, principal: Principal, raw_id: str) -> PrintOut:
    """The print-out if the caller may act on it (owner or staff), else 404."""
    po_id = queries.parse_id(raw_id)
    po = None if po_id is None else await session.get(PrintOut, po_id)
    if po is None or (principal.own_data_only and po.delegate != principal.user_name):
        raise NotFound(f"job {raw_id[:40]!r} not found")
    return po


async def release_job(request: web.Request) -> web.Response:
    principal = await require(request, *OWNERS)
    reject_unknown(await json_body(request, optional=True), set())
    async with request.app[SESSIONS]() as session, session.begin():
        po = await own_print_out(session, principal, request.match_info["id"])
        if po.mode == PrinterMode.TICKET.value:
            raise Conflict(
                "job tickets are released by a ticket operator (POST /tickets/{id}/release)"
            )
        done = await held.release(
            session,
            po,
            actor=principal.describe(),
            reason=StatusReason.WEB_RELEASE,
            currency=request.app[CONFIG].money,
        )
        if not done:
            raise Conflict(f"job {po.id} is {PrintStatus(po.status).label}, not held")
        printer = await session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
    request.app[WAKE].wake(DISPATCH)
    return web.json_response({"released": True, "job": held_json(po, printer or "")})


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a job in any state that has not ended (``control.cancel``): a held or
    pending one at once, a dispatched one at its target first; nothing is charged."""
    principal = await require(request, *OWNERS)
    reject_unknown(await json_body(request, optional=True), set())
    async with request.app[READ_SESSIONS]() as session:
        po = await own_print_out(session, principal, request.match_info["id"])
        printer = await session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
    control.check_not_final(po)
    held_now = po.status == PrintStatus.HELD
    done = await control.cancel(
        request.app,
        po.id,
        actor=principal.describe(),
        reason=StatusReason.CANCELED_WHILE_HELD if held_now else StatusReason.CANCELED_BY_USER,
    )
    return web.json_response({"canceled": True, "job": held_json(done, printer or "")})


async def redirect_job(request: web.Request) -> web.Response:
    """Send a pending, held or not-printed aborted job to another proxy printer."""
    principal = await require(request, *OWNERS)
    body = await json_body(request)
    reject_unknown(body, {"printer"})
    name = body.get("printer")
    if not isinstance(name, str) or not name:
        raise InvalidParameter("printer: must be a proxy printer name")
    async with request.app[SESSIONS]() as session, session.begin():
        po = await own_print_out(session, principal, request.match_info["id"])
        printer = await redirect.find_printer(session, name)
        done = await redirect.redirect(
            session,
            po,
            printer,
            actor=principal.describe(),
            currency=request.app[CONFIG].money,
        )
    if done.print_out.status == PrintStatus.PENDING:
        request.app[WAKE].wake(DISPATCH)
    return web.json_response(
        {
            "redirected": True,
            "new_print_out": done.new_print_out,
            "job": held_json(done.print_out, done.printer),
        }
    )


async def recheck_job(request: web.Request) -> web.Response:
    """Re-resolve a job held for its delegation; ``fixed`` says whether it now proceeds.

    Not fixed: the job stays held with the reason and message found now (stored,
    with an event). 409 when the job is not held for its delegation.
    """
    principal = await require(request, *OWNERS)
    reject_unknown(await json_body(request, optional=True), set())
    config = request.app[CONFIG]
    async with request.app[SESSIONS]() as session, session.begin():
        po = await own_print_out(session, principal, request.match_info["id"])
        fixed = await fixing.recheck(
            session,
            po,
            actor=principal.describe(),
            policy=config.delegation,
            currency=config.money,
        )
        printer = await session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
    if po.status == int(PrintStatus.PENDING):
        request.app[WAKE].wake(DISPATCH)
    return web.json_response(
        {"rechecked": True, "fixed": fixed, "job": held_json(po, printer or "")}
    )


_DELEGATION_KEYS = {kind.value for kind in DelegationKind}


async def put_delegation(request: web.Request) -> web.Response:
    """An admin replaces a held job's delegation (same JSON as POST /delegations)."""
    principal = await require(request, Role.ADMIN)
    body = await json_body(request)
    reject_unknown(body, _DELEGATION_KEYS)
    new = delegation_from_json(body)
    config = request.app[CONFIG]
    async with request.app[SESSIONS]() as session, session.begin():
        po = await own_print_out(session, principal, request.match_info["id"])
        await fixing.replace_delegation(
            session, po, new, actor=principal.describe(), currency=config.money
        )
        printer = await session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
    if po.status == int(PrintStatus.PENDING):
        request.app[WAKE].wake(DISPATCH)
    return web.json_response(
        {"replaced": True, "delegation": new.to_options(), "job": held_json(po, printer or "")}
    )


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/jobs/held", list_held),
        web.post(f"{prefix}/jobs/{{id}}/release", release_job),
        web.post(f"{prefix}/jobs/{{id}}/cancel", cancel_job),
        web.post(f"{prefix}/jobs/{{id}}/redirect", redirect_job),
        web.post(f"{prefix}/jobs/{{id}}/recheck", recheck_job),
        web.put(f"{prefix}/jobs/{{id}}/delegation", put_delegation),
    ]
