"""Accounts with derived balances, and each account's ledger.

Staff roles see every account; the ``user`` role only its personal account
(another account's ledger is 404, as if it did not exist).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import adjustments, directory, ledger, rights
from billing.enums import AccountType, Role
from billing.models import Account
from billing.money import Currency, parse_amount
from proxy.exceptions import NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS

from . import queries, serialize
from .auth import READERS, Principal, require
from .errors import InvalidParameter, json_body, reject_unknown

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
    async with request.app[READ_SESSIONS]() as session, session.begin():
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
    async with request.app[READ_SESSIONS]() as session, session.begin():
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
        given_back = await ledger.reversals_of(session, [e.id for e in entries])
    currency = request.app[CONFIG].money
    items = [serialize.ledger_entry(e, currency, given_back.get(e.id)) for e in entries]
    return web.json_response(serialize.page(items, next_cursor))


async def _visible_account(
    session: AsyncSession, principal: Principal, raw_id: str, *, lock: bool = False
) -> Account:
    """The account by id if the caller may see it (a user: her own), else 404."""
    account_id = queries.parse_id(raw_id)
    account = None
    if account_id is not None:
        stmt = select(Account).where(Account.id == account_id)
        account = await session.scalar(stmt.with_for_update() if lock else stmt)
    if account is None or (
        principal.own_data_only
        and (account.type != AccountType.USER.value or account.user_id != principal.user_id)
    ):
        raise NotFound(f"account {raw_id[:40]!r} not found")
    return account


async def _account_json(session: AsyncSession, account: Account, currency: Currency) -> Any:
    """One account; a group or shared one with its access list (``open`` or who may)."""
    balance, pages = await ledger.totals(session, account.id)
    out = serialize.account(account, balance=balance, pages=pages, currency=currency)
    if account.type != AccountType.USER.value:
        access = await rights.access_of(session, account)
        out["access"] = {
            "restricted": access.restricted,
            "users": list(access.users),
            "groups": list(access.groups),
        }
    return out


MAX_ACCESS = 1000


def _access(value: object) -> list[str] | None:
    """``access``: a list of users and ``@group`` entries, or null (open)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_ACCESS
        or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value)
    ):
        raise InvalidParameter(
            f'access: a list of at most {MAX_ACCESS} user names and "@group" entries, or null'
        )
    return [v for v in value if isinstance(v, str)]


async def get_account(request: web.Request) -> web.Response:
    principal = await require(request, *READERS)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        account = await _visible_account(session, principal, request.match_info["id"])
        body = await _account_json(session, account, request.app[CONFIG].money)
    return web.json_response(body)


PATCH_FIELDS = frozenset({"credit_limit", "active", "access"})


async def patch_account(request: web.Request) -> web.Response:
    """``{"credit_limit": "10.00" | null, "active": bool, "access": [...] | null}``
    (accounts-editor); ``access`` replaces a group or shared account's access list
    (users, ``@group`` for every member), null opens it."""
    principal = await require(request, Role.ACCOUNTS_EDITOR)
    body = await json_body(request)
    reject_unknown(body, set(PATCH_FIELDS))
    if "active" in body and not isinstance(body["active"], bool):
        raise InvalidParameter("active: must be true or false")
    access = _access(body["access"]) if "access" in body else None
    wanted: dict[str, Any] = {}
    if "credit_limit" in body:
        wanted["credit_limit"] = directory.parse_credit_limit(body["credit_limit"])
    actor = principal.describe()
    async with request.app[SESSIONS]() as session, session.begin():
        account = await _visible_account(session, principal, request.match_info["id"])
        if account.deleted_at is not None:
            raise NotFound(f"account {account.id} was deleted")
        await directory.edit_account(session, account, wanted, actor=actor)
        if "active" in body:
            await directory.set_account_active(session, account, body["active"], actor=actor)
        if "access" in body:
            await rights.set_access(session, account, access, actor=actor)
        out = await _account_json(session, account, request.app[CONFIG].money)
    return web.json_response(out)


async def delete_account(request: web.Request) -> web.Response:
    """Soft delete a shared account (admin); its ledger and history stay."""
    principal = await require(request, Role.ADMIN)
    async with request.app[SESSIONS]() as session, session.begin():
        account = await _visible_account(session, principal, request.match_info["id"])
        if account.deleted_at is None:
            await directory.delete_account(session, account, actor=principal.describe())
        out = await _account_json(session, account, request.app[CONFIG].money)
    return web.json_response(out)


ADJUSTMENT_FIELDS = frozenset({"amount", "reason", "idempotency_key"})


AMOUNT_RE = re.compile(r"-?[0-9]{1,12}(\.[0-9]+)?", re.ASCII)


def _amount(value: object) -> Decimal:
    if not isinstance(value, str) or not AMOUNT_RE.fullmatch(value):
        raise InvalidParameter('amount: a decimal string such as "5.00" (negative: a debit)')
    return parse_amount(value, field="amount", allow_negative=True)


async def post_adjustment(request: web.Request) -> web.Response:
    """A deposit (positive) or debit (negative) through the ledger; 201 new, 200 replay."""
    principal = await require(request, Role.ACCOUNTS_EDITOR)
    body = await json_body(request)
    reject_unknown(body, set(ADJUSTMENT_FIELDS))
    for name in ADJUSTMENT_FIELDS:
        if name not in body:
            raise InvalidParameter(f"{name}: required")
    amount = _amount(body["amount"])
    currency = request.app[CONFIG].money
    async with request.app[SESSIONS]() as session, session.begin():
        account = await _visible_account(session, principal, request.match_info["id"])
        if account.deleted_at is not None:
            raise NotFound(f"account {account.id} was deleted")
        entry, new = await adjustments.adjust(
            session,
            account,
            amount,
            reason=body["reason"],
            key=body["idempotency_key"],
            actor=principal.describe(),
            currency=currency,
        )
        out = {
            "entry": serialize.ledger_entry(entry, currency),
            "created": new,
            "account": await _account_json(session, account, currency),
        }
    return web.json_response(out, status=201 if new else 200)


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/accounts", list_accounts),
        web.get(f"{prefix}/accounts/{{id}}", get_account),
        web.patch(f"{prefix}/accounts/{{id}}", patch_account),
        web.delete(f"{prefix}/accounts/{{id}}", delete_account),
        web.get(f"{prefix}/accounts/{{id}}/transactions", account_transactions),
        web.post(f"{prefix}/accounts/{{id}}/adjustments", post_adjustment),
    ]
