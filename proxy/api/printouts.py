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

from billing import charging, directory
from billing.charging import MAX_REASON
from billing.enums import AccountType, Role
from billing.exceptions import InvalidInput
from billing.models import Account, Event, PrintOut, User
from billing.money import Currency
from proxy.exceptions import Forbidden, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS

from . import export, queries, serialize
from .auth import READERS, Principal, require
from .errors import InvalidParameter, json_body, reject_unknown

log = logging.getLogger(__name__)

FILTER_PARAMS = frozenset(
    {"user", "printer", "status", "since", "until", "account", "payer", "role"}
)
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
        reversed_=row.reversed,
    )


ROLES = ("delegate", "payer", "any")
MAX_NAME = 255
MAX_ACCOUNT_REF = 600


async def _personal_account(session: AsyncSession, user_name: str) -> int | None:
    return await session.scalar(
        select(Account.id)
        .join(User, User.id == Account.user_id)
        .where(User.name == user_name, Account.type == AccountType.USER.value)
    )


async def _account_param(session: AsyncSession, value: str) -> int | None:
    """``?account=``: an id, ``type:name`` or a name; None: no such account (no rows)."""
    if queries.parse_id(value) is not None:
        return queries.parse_id(value)
    if value.isdigit():
        raise InvalidParameter(f"account: {value[:40]!r} is not an account id")
    if value != value.strip() or any(ch.isspace() for ch in value):
        raise InvalidParameter(f"account: {value[:40]!r}: an id, type:name or a name")
    try:
        found = await directory.find_accounts(session, value)
    except InvalidInput as exc:
        raise InvalidParameter(f"account: {exc}") from None
    if len(found) > 1:
        kinds = ", ".join(f"{a.type}:{a.path}" for a in found)
        raise InvalidParameter(f"account: {value[:80]!r} is ambiguous; name one of: {kinds}")
    return found[0].id if found else None


_NO_ROWS = 0  # an account id no row has: an unknown account name matches nothing


async def _filter(
    request: web.Request, principal: Principal, params: dict[str, str]
) -> queries.PrintOutFilter:
    """The history filter of the query string.

    ``role`` says how ``user`` (a user token: herself) is involved:
    ``delegate`` (default: she printed it), ``payer`` (it is charged to her
    personal account) or ``any`` (either). ``payer=me`` (or a user name, for
    staff) is ``role=payer`` for that user. ``account`` takes an id,
    ``type:name`` or a name.
    """
    delegate = params.get("user")
    payer = params.get("payer")
    role = params.get("role")
    if payer is not None and len(payer) > MAX_NAME:
        raise InvalidParameter(f"payer: at most {MAX_NAME} characters")
    if len(params.get("account", "")) > MAX_ACCOUNT_REF:
        raise InvalidParameter(f"account: at most {MAX_ACCOUNT_REF} characters")
    if role is not None and role not in ROLES:
        raise InvalidParameter(f"role: one of {', '.join(ROLES)}, got {role[:40]!r}")
    if payer is not None:
        if payer == "me":
            if principal.user_name is None:
                raise InvalidParameter("payer=me needs a token bound to a user")
            payer = principal.user_name
        if role not in (None, "payer") or (delegate is not None and delegate != payer):
            raise InvalidParameter("payer: names the user of role=payer; give one of them")
        delegate, role = payer, "payer"
    if principal.own_data_only:
        if delegate is not None and delegate != principal.user_name:
            raise Forbidden("a user token may only list its own print-outs")
        delegate = principal.user_name
    elif role is not None and delegate is None:
        raise InvalidParameter("role: needs user (or payer) to say whose role")
    account_id = None
    person_account = None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        account = params.get("account")
        if account is not None:
            found = await _account_param(session, account)
            account_id = _NO_ROWS if found is None else found
        if role in ("payer", "any") and delegate is not None:
            person_account = await _personal_account(session, delegate)
            if person_account is None:
                person_account = _NO_ROWS
    either = False
    if role == "payer":
        if account_id is not None and account_id != person_account:
            account_id = _NO_ROWS  # her account and another: nothing is both
        else:
            account_id = person_account
        delegate = None
    elif role == "any":
        if account_id is not None:
            raise InvalidParameter("account: cannot be combined with role=any")
        account_id, either = person_account, True
    flt = queries.PrintOutFilter(
        delegate=delegate,
        printer=params.get("printer"),
        status=queries.parse_status(params.get("status")),
        since=queries.parse_time("since", params.get("since")),
        until=queries.parse_time("until", params.get("until")),
        account_id=account_id,
        either=either,
    )
    if flt.since is not None and flt.until is not None and flt.since > flt.until:
        raise InvalidParameter("since: must not be later than until")
    return flt


async def list_printouts(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    params = queries.query_params(request.query, LIST_PARAMS)
    flt = await _filter(request, principal, params)
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
    flt = await _filter(request, principal, queries.query_params(request.query, FILTER_PARAMS))
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
    if found is None or (principal.own_data_only and not _hers(found[0], principal)):
        raise NotFound(f"print-out {raw_id[:40]!r} not found")
    return found


def _hers(row: queries.PrintOutRow, principal: Principal) -> bool:
    """A user token sees what she printed and what is charged to her account."""
    if row.print_out.delegate == principal.user_name:
        return True
    return any(
        a.type == AccountType.USER.value and a.user_id == principal.user_id
        for _, a in row.transactions
    )


async def get_printout(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        row, events = await _visible(session, principal, request.match_info["id"])
    return web.json_response(_json(row, request.app[CONFIG].money, events))


REVERSE_FIELDS = frozenset({"reason", "transactions"})
MAX_TRANSACTIONS = 1_000


def _reverse_body(body: dict[str, object]) -> tuple[str, list[int] | None]:
    """``{"reason": "...", "transactions": [id, ...]}``: a reason is required (a reversal
    gives money back: the ledger says why), ``transactions`` is optional."""
    reject_unknown(body, set(REVERSE_FIELDS))
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidParameter(
            f"reason is required: why this print-out is reversed, 1..{MAX_REASON} characters"
        )
    txns = body.get("transactions")
    if txns is None:
        return reason, None
    if (
        not isinstance(txns, list)
        or not 1 <= len(txns) <= MAX_TRANSACTIONS
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in txns)
    ):
        raise InvalidParameter(
            f"transactions: a list of 1..{MAX_TRANSACTIONS} transaction ids of the print-out"
        )
    return reason, [t for t in txns if isinstance(t, int)]


async def reverse_printout(request: web.Request) -> web.Response:
    """Compensate the print-out's charges (all, or the ``transactions`` named: a partial
    reversal), each by one entry with the reason; reversing again reverses nothing."""
    principal = await require(request, Role.ACCOUNTS_EDITOR)
    # An empty body too gets the clear "reason is required", not "not valid JSON".
    reason, transaction_ids = _reverse_body(await json_body(request, optional=True))
    print_out_id = queries.parse_id(request.match_info["id"])
    async with request.app[SESSIONS]() as session, session.begin():
        print_out = None
        if print_out_id is not None:
            print_out = await session.scalar(select(PrintOut).where(PrintOut.id == print_out_id))
        if print_out is None:
            raise NotFound(f"print-out {request.match_info['id'][:40]!r} not found")
        count = await charging.reverse(
            session,
            print_out,
            actor=principal.describe(),
            reason=reason,
            transaction_ids=transaction_ids,
        )
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
