"""Print-out history: list, CSV export, detail, reverse.

Staff roles see every print-out; the ``user`` role only those it printed
(it is the delegate). Asking for another user's list is 403 (the caller
named them), another user's print-out is 404 (its existence is not revealed).
The CSV export takes the list's filters and rules.
"""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import charging
from billing.enums import Role
from billing.models import Event, PrintOut
from billing.money import Currency
from proxy.exceptions import Forbidden, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS

from . import export, queries, serialize
from .auth import READERS, Principal, require
from .errors import InvalidParameter, json_body, reject_unknown

log = logging.getLogger(__name__)

FILTER_PARAMS = frozenset({"user", "printer", "status", "since", "until", "account"})
LIST_PARAMS = FILTER_PARAMS | {"limit", "cursor"}
# Rows per query of a CSV export: memory stays at one batch whatever the size.
EXPORT_BATCH = 1_000


def _json(
    row: queries.PrintOutRow, currency: Currency, events: list[Event] | None = None
) -> serialize.JSON:
    return serialize.print_out(
        row.print_out,
        printer=row.printer,
        transactions=row.transactions,
        currency=currency,
        events=events,
        pages_estimated=row.counted.pages_estimated,
        count_method=row.counted.count_method,
        color_pages=row.counted.color_pages,
        document_copies=row.counted.document_copies,
    )


def _filter(principal: Principal, params: dict[str, str]) -> queries.PrintOutFilter:
    delegate = params.get("user")
    if principal.own_data_only:
        if delegate is not None and delegate != principal.user_name:
            raise Forbidden("a user token may only list its own print-outs")
        delegate = principal.user_name
    account = params.get("account")
    account_id = None
    if account is not None:
        account_id = queries.parse_id(account)
        if account_id is None:
            raise InvalidParameter(f"account: expected an account id, got {account[:40]!r}")
    flt = queries.PrintOutFilter(
        delegate=delegate,
        printer=params.get("printer"),
        status=queries.parse_status(params.get("status")),
        since=queries.parse_time("since", params.get("since")),
        until=queries.parse_time("until", params.get("until")),
        account_id=account_id,
    )
    if flt.since is not None and flt.until is not None and flt.since > flt.until:
        raise InvalidParameter("since: must not be later than until")
    return flt


async def list_printouts(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    params = queries.query_params(request.query, LIST_PARAMS)
    flt = _filter(principal, params)
    limit = queries.parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    after = queries.print_out_position(cursor) if cursor is not None else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows, next_cursor = await queries.print_out_page(session, flt, limit=limit, after=after)
    currency = request.app[CONFIG].money
    return web.json_response(serialize.page([_json(r, currency) for r in rows], next_cursor))


async def export_printouts(request: web.Request) -> web.StreamResponse:
    """The filtered history as CSV, streamed in keyset batches of EXPORT_BATCH rows.

    Parameters and the token are checked before the first byte goes out (so
    they still fail as JSON errors). A failure later cannot change the status:
    the connection is closed before the last chunk, so the client sees a
    broken transfer rather than a CSV that merely looks short.
    """
    principal = await require(request, *READERS)
    flt = _filter(principal, queries.query_params(request.query, FILTER_PARAMS))
    currency = request.app[CONFIG].money
    response = web.StreamResponse(
        headers={
            "Content-Disposition": 'attachment; filename="printouts.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.content_type = export.CONTENT_TYPE
    response.charset = export.CHARSET
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":  # headers only: aiohttp would send written bytes anyway
        await response.write_eof()
        return response
    written = 0
    try:
        await response.write(export.header())
        batches = export.batches(request.app[READ_SESSIONS], flt, batch=EXPORT_BATCH)
        async with contextlib.aclosing(batches):
            async for rows in batches:
                await response.write(export.rows(rows, currency))
                written += len(rows)
        await response.write_eof()
    except ConnectionError:
        log.info("CSV export: client went away after %d rows", written)
    except Exception:
        log.exception("CSV export failed after %d rows; connection closed", written)
        if request.transport is not None:
            request.transport.close()
    return response


async def _visible(
    session: AsyncSession, principal: Principal, raw_id: str
) -> tuple[queries.PrintOutRow, list[Event]]:
    """The print-out with its events, or 404 if missing or not the caller's to see."""
    print_out_id = queries.parse_id(raw_id)
    found = None if print_out_id is None else await queries.print_out_detail(session, print_out_id)
    if found is None or (
        principal.own_data_only and found[0].print_out.delegate != principal.user_name
    ):
        raise NotFound(f"print-out {raw_id[:40]!r} not found")
    return found


async def get_printout(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        row, events = await _visible(session, principal, request.match_info["id"])
    return web.json_response(_json(row, request.app[CONFIG].money, events))


async def reverse_printout(request: web.Request) -> web.Response:
    """Compensate every charge of the print-out; a second call reverses nothing."""
    principal = await require(request, Role.ACCOUNTS_EDITOR)
    # No fields yet; the body is still parsed so that garbage is refused.
    reject_unknown(await json_body(request, optional=True), set())
    print_out_id = queries.parse_id(request.match_info["id"])
    async with request.app[SESSIONS]() as session, session.begin():
        print_out = None
        if print_out_id is not None:
            print_out = await session.scalar(select(PrintOut).where(PrintOut.id == print_out_id))
        if print_out is None:
            raise NotFound(f"print-out {request.match_info['id'][:40]!r} not found")
        count = await charging.reverse(session, print_out, actor=principal.describe())
        row, events = await _visible(session, principal, str(print_out.id))
    return web.json_response(
        {"reversed": count, "print_out": _json(row, request.app[CONFIG].money, events)}
    )


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/printouts", list_printouts),
        web.get(f"{prefix}/printouts.csv", export_printouts),
        web.get(f"{prefix}/printouts/{{id}}", get_printout),
        web.post(f"{prefix}/printouts/{{id}}/reverse", reverse_printout),
    ]
