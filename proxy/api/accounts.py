"""Accounts with derived balances, and each account's ledger.

Staff roles see every account; the ``user`` role only its personal account
(another account's ledger is 404, as if it did not exist).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from billing import ledger
from billing.enums import AccountType
from billing.models import Account
from proxy.exceptions import NotFound
from proxy.keys import CONFIG, SESSIONS

from . import queries, serialize
from .auth import READERS, require

LIST_PARAMS = frozenset({"type", "limit", "cursor"})
LEDGER_PARAMS = frozenset({"limit", "cursor"})


async def list_accounts(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    params = queries.query_params(request.query, LIST_PARAMS)
    type_ = queries.parse_account_type(params.get("type"))
    limit = queries.parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    after_id = None
    if cursor is not None:
        (after_id,) = queries.decode_cursor(queries.ACCOUNT_CURSOR, cursor, 1)
    async with request.app[SESSIONS]() as session, session.begin():
        found, next_cursor = await queries.account_page(
            session,
            type_=type_,
            user_id=principal.user_id,
            own_only=principal.own_data_only,
            limit=limit,
            after_id=after_id,
        )
        ids = [a.id for a in found]
        balances = await ledger.balances(session, ids)
        pages = await queries.page_counts(session, ids)
    currency = request.app[CONFIG].money
    items = [
        serialize.account(a, balance=balances[a.id], pages=pages[a.id], currency=currency)
        for a in found
    ]
    return web.json_response(serialize.page(items, next_cursor))


async def account_transactions(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    params = queries.query_params(request.query, LEDGER_PARAMS)
    limit = queries.parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    before_id = None
    if cursor is not None:
        (before_id,) = queries.decode_cursor(queries.LEDGER_CURSOR, cursor, 1)
    raw_id = request.match_info["id"]
    account_id = queries.parse_id(raw_id)
    async with request.app[SESSIONS]() as session, session.begin():
        account = None
        if account_id is not None:
            account = await session.scalar(select(Account).where(Account.id == account_id))
        if account is None or (
            principal.own_data_only
            and (account.type != AccountType.USER.value or account.user_id != principal.user_id)
        ):
            raise NotFound(f"account {raw_id[:40]!r} not found")
        entries, next_cursor = await queries.ledger_page(
            session, account.id, limit=limit, before_id=before_id
        )
    currency = request.app[CONFIG].money
    items = [serialize.ledger_entry(e, currency) for e in entries]
    return web.json_response(serialize.page(items, next_cursor))


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/accounts", list_accounts),
        web.get(f"{prefix}/accounts/{{id}}/transactions", account_transactions),
    ]
