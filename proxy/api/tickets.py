"""Job tickets: the operator's queue (SavaPage A.3.1 scenarios 4 and 5).

A ticket is a held print-out in ``ticket`` mode with a number and a cost fixed
when it arrived. An operator releases it (optionally to another proxy
printer's target) and it prints and is charged with the ticket cost pro rata;
the delegate or an operator cancels it, which just removes it (spool deleted,
event kept).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from billing.enums import PrinterMode, PrintStatus, Role, StatusReason
from billing.models import Printer, PrintOut
from proxy.exceptions import Conflict, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS, WAKE
from proxy.pipeline import lifecycle
from proxy.pipeline import release as held
from proxy.pipeline.wake import DISPATCH

from . import queries, serialize
from .auth import Principal, require
from .errors import InvalidParameter, json_body, reject_unknown
from .jobs import held_json, held_page, own_print_out

LIST_PARAMS = frozenset({"user", "printer", "limit", "cursor"})
OPERATORS = (Role.TICKET_OPERATOR,)


def ticket_json(po: PrintOut, printer: str, request: web.Request) -> serialize.JSON:
    out = held_json(po, printer)
    out["number"] = po.ticket_number
    out["cost"] = serialize.money(po.ticket_cost, request.app[CONFIG].money)
    out["currency"] = po.currency
    out["cost_detail"] = po.cost_detail
    return out


async def list_tickets(request: web.Request) -> web.Response:
    await require(request, *OPERATORS)
    params = queries.query_params(request.query, LIST_PARAMS)
    cursor = params.get("cursor")
    after = queries.decode_cursor("held", cursor, 1)[0] if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows, next_cursor = await held_page(
            session,
            mode_is_ticket=True,
            delegate=params.get("user"),
            printer=params.get("printer"),
            limit=queries.parse_limit(params.get("limit")),
            after=after,
        )
    items = [ticket_json(po, name, request) for po, name in rows]
    return web.json_response(serialize.page(items, next_cursor))


def _ticket(po: PrintOut) -> PrintOut:
    if po.mode != PrinterMode.TICKET.value:
        raise NotFound(f"ticket {po.id} not found")
    return po


async def release(
    app: web.Application, principal: Principal, ticket_id: str, printer_name: str | None
) -> tuple[PrintOut, str]:
    """Release one ticket, optionally to another proxy printer (API and web alike).

    Returns the print-out and the name of the printer it goes to."""
    async with app[SESSIONS]() as session, session.begin():
        po = _ticket(await own_print_out(session, principal, ticket_id))
        printer = None
        if printer_name:
            printer = await session.scalar(select(Printer).where(Printer.name == printer_name))
            if printer is None:
                raise NotFound(f"unknown printer {printer_name[:127]!r}")
        done = await held.release(
            session,
            po,
            actor=principal.describe(),
            reason=StatusReason.TICKET_RELEASED,
            printer=printer,
            currency=app[CONFIG].money,  # the site's decimals (ticket prices, limits)
        )
        if not done:
            raise Conflict(f"ticket {po.ticket_number} is {PrintStatus(po.status).label}")
        name = (
            printer.name
            if printer
            else await session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
        )
    app[WAKE].wake(DISPATCH)
    return po, name or ""


async def release_ticket(request: web.Request) -> web.Response:
    principal = await require(request, *OPERATORS)
    body = await json_body(request, optional=True)
    reject_unknown(body, {"printer"})
    target_name = body.get("printer")
    if target_name is not None and not isinstance(target_name, str):
        raise InvalidParameter("printer: must be a proxy printer name")
    po, name = await release(request.app, principal, request.match_info["id"], target_name)
    return web.json_response({"released": True, "ticket": ticket_json(po, name, request)})


async def cancel_ticket(request: web.Request) -> web.Response:
    """By an operator or the ticket's own delegate (a ``user`` token)."""
    principal = await require(request, Role.TICKET_OPERATOR, Role.USER)
    reject_unknown(await json_body(request, optional=True), set())
    async with lifecycle.ending(request.app) as ends:
        po = _ticket(await own_print_out(ends.session, principal, request.match_info["id"]))
        await held.cancel_held(
            ends, po, actor=principal.describe(), reason=StatusReason.TICKET_CANCELED
        )
        name = await ends.session.scalar(select(Printer.name).where(Printer.id == po.printer_id))
    return web.json_response({"canceled": True, "ticket": ticket_json(po, name or "", request)})


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/tickets", list_tickets),
        web.post(f"{prefix}/tickets/{{id}}/release", release_ticket),
        web.post(f"{prefix}/tickets/{{id}}/cancel", cancel_ticket),
    ]
