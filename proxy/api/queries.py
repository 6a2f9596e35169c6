"""List queries for the API: parameters, keyset cursors, batched loading.

Pagination is keyset only (never OFFSET): a page is "the next ``limit`` rows
after this position" in a total order ending in the primary key, so pages
neither skip nor repeat rows when new ones arrive, and each page costs the
same however deep it is. Print-outs run newest first on ``(created_at, id)``,
which the ``ix_print_outs_*`` indexes cover (alone or after an equality on
delegate, printer or status); accounts on ``id``; ledger entries newest first
on ``(account_id, id)``.

Everything a page shows is loaded in one query per kind for the whole page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import AccountType, PrintStatus
from billing.models import Account, AccountTransaction, Event, LedgerEntry, Printer, PrintOut

from .errors import InvalidParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_ID = 2**63 - 1  # BIGINT on PostgreSQL; larger values cannot be ids
_ID_RE = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{4,200}", re.ASCII)
_MAX_TIME_CHARS = 64


# --- parameters -----------------------------------------------------------------


def query_params(query: Mapping[str, str], allowed: frozenset[str]) -> dict[str, str]:
    """The query string as a dict: unknown or repeated names are refused.

    A misspelt filter (``?stauts=held``) would otherwise return everything.
    Empty values count as absent: ``?user=&status=`` is a form left blank.
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in query.items():  # a MultiDict yields every repetition
        if name not in allowed:
            names = ", ".join(sorted(allowed))
            raise InvalidParameter(f"unknown query parameter {name!r} (known: {names})")
        if name in seen:
            raise InvalidParameter(f"query parameter {name!r} given more than once")
        seen.add(name)
        if value != "":
            out[name] = value
    return out


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    # Digits only: int() would also take " 5", "+5" and "5_0".
    if not re.fullmatch(r"[0-9]{1,4}", value, re.ASCII) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidParameter(f"limit: expected an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return int(value)


def parse_status(value: str | None) -> PrintStatus | None:
    if value is None:
        return None
    for status in PrintStatus:
        if status.label == value:
            return status
    labels = ", ".join(s.label for s in PrintStatus)
    raise InvalidParameter(f"status: unknown status {value!r} (one of: {labels})")


def parse_time(name: str, value: str | None) -> dt.datetime | None:
    """ISO 8601 date or date-time; without an offset it is taken as UTC.

    In a query string ``+`` means a space: send ``Z`` or ``%2B01:00``.
    """
    if value is None:
        return None
    try:
        if len(value) > _MAX_TIME_CHARS:
            raise ValueError("too long")
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidParameter(
            f"{name}: {value[:_MAX_TIME_CHARS]!r} is not an ISO 8601 date or time "
            "(e.g. 2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None


def parse_account_type(value: str | None) -> AccountType | None:
    if value is None:
        return None
    try:
        return AccountType(value)
    except ValueError:
        types = ", ".join(t.value for t in AccountType)
        raise InvalidParameter(f"type: unknown account type {value!r} (one of: {types})") from None


def parse_id(value: str) -> int | None:
    """A path id, or None when it cannot be one (the caller answers 404)."""
    if not _ID_RE.fullmatch(value) or int(value) > _MAX_ID:
        return None
    return int(value)


# --- cursors --------------------------------------------------------------------
# Opaque to clients: urlsafe base64 (unpadded) of "<kind>:<n>:<n>...". The kind
# stops a cursor of one list from being used on another. Only the canonical
# encoding is accepted, so any edited cursor is refused rather than reinterpreted.


def encode_cursor(kind: str, *parts: int) -> str:
    payload = ":".join([kind, *map(str, parts)]).encode("ascii")
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str, size: int) -> tuple[int, ...]:
    bad = InvalidParameter("cursor: not a cursor returned by this list")
    if not _CURSOR_RE.fullmatch(cursor):
        raise bad
    try:
        payload = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    fields = payload.split(":")
    if len(fields) != size + 1 or fields[0] != kind:
        raise bad
    if not all(f == "0" or _ID_RE.fullmatch(f) for f in fields[1:]):
        raise bad
    values = tuple(int(f) for f in fields[1:])
    if any(v > _MAX_ID for v in values) or encode_cursor(kind, *values) != cursor:
        raise bad
    return values


def _micros(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> dt.datetime:
    try:
        return _EPOCH + dt.timedelta(microseconds=value)
    except OverflowError:
        raise InvalidParameter("cursor: not a cursor returned by this list") from None


# --- print-outs -----------------------------------------------------------------

PRINT_OUT_CURSOR = "po"


@dataclass(frozen=True, slots=True)
class PrintOutFilter:
    delegate: str | None = None
    printer: str | None = None
    status: PrintStatus | None = None
    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class PrintOutRow:
    """A print-out with what its JSON needs, loaded in batches."""

    print_out: PrintOut
    printer: str
    transactions: list[tuple[AccountTransaction, Account]]


def print_out_cursor(po: PrintOut) -> str:
    return encode_cursor(PRINT_OUT_CURSOR, _micros(po.created_at), po.id)


def print_out_position(cursor: str) -> tuple[dt.datetime, int]:
    micros, id_ = decode_cursor(PRINT_OUT_CURSOR, cursor, 2)
    return _from_micros(micros), id_


async def _rows(session: AsyncSession, found: Sequence[tuple[PrintOut, str]]) -> list[PrintOutRow]:
    """Attach transactions and their accounts: one query for all of ``found``."""
    by_print_out: dict[int, list[tuple[AccountTransaction, Account]]] = {
        po.id: [] for po, _ in found
    }
    if by_print_out:
        result = await session.execute(
            select(AccountTransaction, Account)
            .join(Account, Account.id == AccountTransaction.account_id)
            .where(AccountTransaction.print_out_id.in_(list(by_print_out)))
            .order_by(AccountTransaction.print_out_id, AccountTransaction.id)
        )
        for txn, account in result:
            by_print_out[txn.print_out_id].append((txn, account))
    return [PrintOutRow(po, name, by_print_out[po.id]) for po, name in found]


async def print_out_page(
    session: AsyncSession,
    flt: PrintOutFilter,
    *,
    limit: int,
    after: tuple[dt.datetime, int] | None,
) -> tuple[list[PrintOutRow], str | None]:
    """One page, newest first, and the cursor of the next (None on the last page)."""
    stmt = select(PrintOut, Printer.name).join(Printer, Printer.id == PrintOut.printer_id)
    if flt.delegate is not None:
        stmt = stmt.where(PrintOut.delegate == flt.delegate)
    if flt.printer is not None:
        # A scalar subquery, so the planner filters on printer_id and can walk
        # ix_print_outs_printer_created in order.
        printer_id = select(Printer.id).where(Printer.name == flt.printer).scalar_subquery()
        stmt = stmt.where(PrintOut.printer_id == printer_id)
    if flt.status is not None:
        stmt = stmt.where(PrintOut.status == int(flt.status))
    if flt.since is not None:
        stmt = stmt.where(PrintOut.created_at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(PrintOut.created_at < flt.until)
    if after is not None:
        # Row-value comparison: the bound values take the columns' types.
        stmt = stmt.where(tuple_(PrintOut.created_at, PrintOut.id) < after)
    stmt = stmt.order_by(PrintOut.created_at.desc(), PrintOut.id.desc()).limit(limit + 1)
    found = list(await session.execute(stmt))
    more = len(found) > limit
    found = found[:limit]
    next_cursor = print_out_cursor(found[-1][0]) if more else None
    return await _rows(session, found), next_cursor


async def print_out_detail(
    session: AsyncSession, print_out_id: int
) -> tuple[PrintOutRow, list[Event]] | None:
    row = (
        await session.execute(
            select(PrintOut, Printer.name)
            .join(Printer, Printer.id == PrintOut.printer_id)
            .where(PrintOut.id == print_out_id)
        )
    ).first()
    if row is None:
        return None
    (detail,) = await _rows(session, [row])
    events = (
        await session.scalars(
            select(Event)
            .where(Event.subject_type == "print_out", Event.subject_id == str(print_out_id))
            .order_by(Event.id)
        )
    ).all()
    return detail, list(events)


# --- accounts and their ledger --------------------------------------------------

ACCOUNT_CURSOR = "acct"
LEDGER_CURSOR = "led"


async def account_page(
    session: AsyncSession,
    *,
    type_: AccountType | None,
    user_id: int | None,
    own_only: bool,
    limit: int,
    after_id: int | None,
) -> tuple[list[Account], str | None]:
    """Accounts by id; ``own_only`` keeps just the personal account of ``user_id``."""
    stmt = select(Account)
    if own_only:
        stmt = stmt.where(Account.type == AccountType.USER.value, Account.user_id == user_id)
    if type_ is not None:
        stmt = stmt.where(Account.type == type_.value)
    if after_id is not None:
        stmt = stmt.where(Account.id > after_id)
    found = list((await session.scalars(stmt.order_by(Account.id).limit(limit + 1))).all())
    more = len(found) > limit
    found = found[:limit]
    return found, encode_cursor(ACCOUNT_CURSOR, found[-1].id) if more else None


async def page_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    """Page counters of several accounts in one query (absent = 0)."""
    counts = dict.fromkeys(account_ids, 0)
    if account_ids:
        rows = await session.execute(
            select(LedgerEntry.account_id, func.sum(LedgerEntry.pages))
            .where(LedgerEntry.account_id.in_(account_ids))
            .group_by(LedgerEntry.account_id)
        )
        for account_id, total in rows:
            counts[account_id] = int(total or 0)
    return counts


async def ledger_page(
    session: AsyncSession, account_id: int, *, limit: int, before_id: int | None
) -> tuple[list[LedgerEntry], str | None]:
    """The account's ledger entries, newest first (ix_ledger_entries_account)."""
    stmt = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        stmt = stmt.where(LedgerEntry.id < before_id)
    stmt = stmt.order_by(LedgerEntry.id.desc()).limit(limit + 1)
    found = list((await session.scalars(stmt)).all())
    more = len(found) > limit
    found = found[:limit]
    return found, encode_cursor(LEDGER_CURSOR, found[-1].id) if more else None
