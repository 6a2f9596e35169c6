"""Staff pages: the ticket queue (operators), the document log with Reverse and the
accounts list (admins and accounts editors). Roles as the API requires them."""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web
from sqlalchemy import select

from billing import charging, ledger
from billing.enums import PrintStatus, Role, StatusReason
from billing.models import Printer, PrintOut
from proxy.api import export, queries
from proxy.api import tickets as tickets_api
from proxy.api.jobs import held_page, own_print_out
from proxy.api.printouts import _filter as printout_filter
from proxy.api.tickets import OPERATORS, _ticket
from proxy.exceptions import BadRequest, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS
from proxy.pipeline import lifecycle
from proxy.pipeline import release as held

from . import live
from .auth import signed_form, signed_in
from .render import SECURITY_HEADERS, html

log = logging.getLogger(__name__)
PAGE = 50
EXPORT_BATCH = 1_000
LOG_ROLES = (Role.ACCOUNTS_EDITOR,)  # admin passes too (allowed())
LOG_PARAMS = frozenset({"user", "printer", "status", "since", "until", "cursor"})


async def tickets(request: web.Request) -> web.Response:
    signed_in(request, *OPERATORS)
    params = queries.query_params(request.query, frozenset({"cursor", "done"}))
    cursor = params.get("cursor")
    after = queries.decode_cursor("held", cursor, 1)[0] if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows, next_cursor = await held_page(
            session, mode_is_ticket=True, delegate=None, printer=None, limit=PAGE, after=after
        )
        printers = list(await session.scalars(select(Printer).order_by(Printer.name)))
        since = await live.newest(session)
    return html(
        request,
        "tickets.html",
        rows=rows,
        printers=printers,
        next_cursor=next_cursor,
        since=since,
        done=params.get("done", ""),
    )


async def ticket_release(request: web.Request) -> web.Response:
    principal, form = await signed_form(request, *OPERATORS)
    po, _ = await tickets_api.release(
        request.app, principal, request.match_info["id"], form.get("printer", "")
    )
    raise web.HTTPSeeOther(f"/tickets?done=released-{po.ticket_number}")


async def ticket_cancel(request: web.Request) -> web.Response:
    principal, _ = await signed_form(request, *OPERATORS)
    async with lifecycle.ending(request.app) as ends:
        po = _ticket(await own_print_out(ends.session, principal, request.match_info["id"]))
        await held.cancel_held(
            ends, po, actor=principal.describe(), reason=StatusReason.TICKET_CANCELED
        )
    raise web.HTTPSeeOther(f"/tickets?done=canceled-{po.ticket_number}")


async def documents(request: web.Request) -> web.Response:
    principal = signed_in(request, *LOG_ROLES)
    params = queries.query_params(request.query, LOG_PARAMS)
    flt = await printout_filter(
        request, principal, {k: v for k, v in params.items() if k != "cursor"}
    )
    cursor = params.get("cursor")
    after = queries.print_out_position(cursor) if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows, next_cursor = await queries.print_out_page(session, flt, limit=PAGE, after=after)
    filters = {k: v for k, v in params.items() if k != "cursor"}
    return html(
        request,
        "documents.html",
        rows=rows,
        next_cursor=next_cursor,
        filters=filters,
        statuses=[s.label for s in PrintStatus],
    )


async def documents_csv(request: web.Request) -> web.StreamResponse:
    """The filtered log as CSV: the API's export (``GET /printouts.csv``), keyset batches."""
    principal = signed_in(request, *LOG_ROLES)
    params = queries.query_params(request.query, LOG_PARAMS - {"cursor"})
    flt = await printout_filter(request, principal, params)
    response = web.StreamResponse(
        headers={**SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="documents.csv"'}
    )
    response.content_type = export.CONTENT_TYPE
    response.charset = export.CHARSET
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    currency = request.app[CONFIG].money
    try:
        await response.write(export.header())
        found = export.batches(request.app[READ_SESSIONS], flt, batch=EXPORT_BATCH)
        async with contextlib.aclosing(found):
            async for rows in found:
                await response.write(export.rows(rows, currency))
        await response.write_eof()
    except ConnectionError:
        log.info("documents CSV: client went away")
    except Exception:
        log.exception("documents CSV failed; connection closed")
        if request.transport is not None:
            request.transport.close()
    return response


async def reverse(request: web.Request) -> web.Response:
    principal, form = await signed_form(request, Role.ACCOUNTS_EDITOR)
    raw = request.match_info["id"]
    po_id = queries.parse_id(raw)
    reason = form.get("reason", "").strip()
    if not reason:
        raise BadRequest("reason: say why the charge is given back")
    chosen = [queries.parse_id(t) for t in form.getall("transaction", [])]
    if None in chosen:
        raise BadRequest("transaction: a transaction id of the print-out")
    async with request.app[SESSIONS]() as session, session.begin():
        po = None
        if po_id is not None:
            po = await session.scalar(select(PrintOut).where(PrintOut.id == po_id))
        if po is None:
            raise NotFound(f"print-out {raw[:40]!r} not found")
        count = await charging.reverse(
            session,
            po,
            actor=principal.describe(),
            reason=reason,
            transaction_ids=[t for t in chosen if t is not None] or None,
        )
    raise web.HTTPSeeOther(f"/documents/{po.id}?reversed={count}")


async def accounts(request: web.Request) -> web.Response:
    principal = signed_in(request, *LOG_ROLES)
    params = queries.query_params(request.query, frozenset({"type", "cursor"}))
    type_ = queries.parse_account_type(params.get("type"))
    cursor = params.get("cursor")
    after = queries.decode_cursor(queries.ACCOUNT_CURSOR, cursor, 1)[0] if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found, next_cursor = await queries.account_page(
            session,
            type_=type_,
            user_id=principal.user_id,
            own_only=False,
            limit=PAGE,
            after_id=after,
        )
        ids = [a.id for a in found]
        balances = await ledger.balances(session, ids)
        pages = await queries.page_counts(session, ids)
    return html(
        request,
        "accounts.html",
        accounts=found,
        balances=balances,
        pages=pages,
        next_cursor=next_cursor,
        type=params.get("type", ""),
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/tickets", tickets, name="web.tickets"),
        web.post("/tickets/{id}/release", ticket_release, name="web.ticket-release"),
        web.post("/tickets/{id}/cancel", ticket_cancel, name="web.ticket-cancel"),
        web.get("/admin/documents", documents, name="web.admin-documents"),
        web.get("/admin/documents.csv", documents_csv, name="web.admin-documents-csv"),
        web.post("/documents/{id}/reverse", reverse, name="web.reverse"),
        web.get("/admin/accounts", accounts, name="web.admin-accounts"),
    ]
