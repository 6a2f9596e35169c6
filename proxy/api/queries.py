"""List queries for the API: parameters, keyset cursors, batched loading.

Pagination is keyset only (never OFFSET): a page is "the next ``limit`` rows
after this position" in a total order ending in the primary key, so pages
neither skip nor repeat rows when new ones arrive, and each page costs the
same however deep it is. Print-outs run newest first on ``(created_at, id)``,
which the ``ix_print_outs_*`` indexes cover (alone or after an equality on
delegate, printer, status, delegate+status or printer+status: the query walks
one of them backwards from the cursor and stops after ``limit`` rows, never
sorting); accounts on ``id``; ledger entries newest first on ``(account_id, id)``.

The account filter (print-outs with a transaction on an account) cannot be in
a print_outs index, so it takes one of two plans, chosen by the account's size
(``account_plan``):

- a big account: walk the print-outs in order, as above, and keep those with
  a transaction on the account (a semi-join probing the unique
  ``(print_out_id, account_id)`` index). A page costs ``limit`` divided by
  the share of print-outs on the account, at any depth;
- a small account (at most ``SMALL_ACCOUNT`` transactions): start from its
  transactions (``ix_account_transactions_account_print_out``), fetch those
  print-outs by id and sort them: at most ``SMALL_ACCOUNT`` rows, at any depth
  (the one history plan that sorts, on purpose). The walk would read the
  whole history to fill a page of a rare account.

Everything a page shows is loaded in one query per kind for the whole page.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVarTuple, cast

from sqlalchemy import (
    ColumnElement,
    FunctionElement,
    Select,
    Subquery,
    exists,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler

from billing import ledger
from billing.enums import AccountType, PrintStatus
from billing.models import (
    Account,
    AccountTransaction,
    Event,
    LedgerEntry,
    Printer,
    PrintIn,
    PrintOut,
)

from .errors import InvalidParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_ID = 2**63 - 1  # BIGINT on PostgreSQL; larger values cannot be ids
_ID_RE = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{4,200}", re.ASCII)
_MAX_TIME_CHARS = 64
_Ts = TypeVarTuple("_Ts")


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
        if "\0" in value or not _is_unicode(value):  # no database can look these up
            raise InvalidParameter(f"query parameter {name!r}: not valid UTF-8 text")
        if value != "":
            out[name] = value
    return out


def _is_unicode(value: str) -> bool:
    """False for lone surrogates (yarl decodes a %-escaped surrogate's bytes into one)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def parse_flag(name: str, value: str | None) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false)."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise InvalidParameter(f"{name}: {value[:20]!r} is not true or false")


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
    account_id: int | None = None  # print-outs with a transaction on this account
    printer_id: int | None = None  # ``printer`` resolved (by ``prepare``)
    # Both ``delegate`` and ``account_id`` set: print-outs matching either (the
    # payer's view ``role=any``: what she printed or is charged for), not both.
    either: bool = False


@dataclass(frozen=True, slots=True)
class Counted:
    """How a print-out's document was counted (from its print-in)."""

    pages_estimated: bool = False
    count_method: str | None = None
    color_pages: int | None = None
    document_copies: int = 1


NOT_COUNTED = Counted()
"""A print-out whose print-in is gone (cannot happen: the foreign key), as counted."""


@dataclass(frozen=True, slots=True)
class PrintOutRow:
    """A print-out with what its JSON needs, loaded in batches."""

    print_out: PrintOut
    printer: str
    transactions: list[tuple[AccountTransaction, Account]]
    counted: Counted = NOT_COUNTED
    # Per transaction id: what its reversal gave back (absent: not reversed).
    reversed: dict[int, Decimal] = dataclasses.field(default_factory=dict)


async def counted_of(session: AsyncSession, print_in_ids: Sequence[int]) -> dict[int, Counted]:
    """How each print-in was counted: one query for all of them."""
    if not print_in_ids:
        return {}
    rows = await session.execute(
        select(
            PrintIn.id,
            PrintIn.pages_estimated,
            PrintIn.count_method,
            PrintIn.color_pages,
            PrintIn.document_copies,
        ).where(PrintIn.id.in_(sorted(set(print_in_ids))))
    )
    return {
        id_: Counted(bool(estimated), method, color_pages, copies or 1)
        for id_, estimated, method, color_pages, copies in rows
    }


Position = tuple[dt.datetime, int]


def print_out_cursor(po: PrintOut) -> str:
    return encode_cursor(PRINT_OUT_CURSOR, _micros(po.created_at), po.id)


def print_out_position(cursor: str) -> Position:
    micros, id_ = decode_cursor(PRINT_OUT_CURSOR, cursor, 2)
    return _from_micros(micros), id_


class AccountPlan(Enum):
    """How the account filter is applied (see the module docstring)."""

    WALK = "walk"  # big account: print-outs in index order, semi-join probe
    FROM_ACCOUNT = "from-account"  # small account: its transactions, then sort


# A walk reads about limit x history / account-size rows, the other plan the
# whole account (one primary-key lookup each): they cost the same near
# sqrt(limit x history) x a constant. Measured at 1,000,000 print-outs, a page
# of 50 (benchmarks/bench_history.py prints both sides): even at ~3,000
# transactions on SQLite, between 3,000 and 6,000 on PostgreSQL.
SMALL_ACCOUNT = 3_000


async def prepare(
    session: AsyncSession, flt: PrintOutFilter
) -> tuple[PrintOutFilter, AccountPlan] | None:
    """The filter with its printer's id, and the account plan; None if nothing can match.

    The printer id goes into the statement as a value, not as a subquery: a
    planner that sees the value uses its statistics for it (PostgreSQL takes
    a subquery's result for an average printer and may then sort a bitmap
    scan's rows instead of walking the index of a busy printer).
    """
    if flt.printer is not None:
        printer_id = await session.scalar(select(Printer.id).where(Printer.name == flt.printer))
        if printer_id is None:
            return None
        flt = dataclasses.replace(flt, printer_id=printer_id)
    plan = AccountPlan.WALK
    if flt.account_id is not None and not _either(flt):
        plan = await account_plan(session, flt.account_id)
    return flt, plan


def _either(flt: PrintOutFilter) -> bool:
    return flt.either and flt.account_id is not None and flt.delegate is not None


async def account_plan(session: AsyncSession, account_id: int) -> AccountPlan:
    """FROM_ACCOUNT when the account has at most SMALL_ACCOUNT transactions.

    Counts at most SMALL_ACCOUNT + 1 index entries, whatever the account's size.
    """
    capped = (
        select(AccountTransaction.id)
        .where(AccountTransaction.account_id == account_id)
        .limit(SMALL_ACCOUNT + 1)
        .subquery()
    )
    count = await session.scalar(select(func.count()).select_from(capped))
    return AccountPlan.FROM_ACCOUNT if (count or 0) <= SMALL_ACCOUNT else AccountPlan.WALK


class _Unindexed(FunctionElement[Any]):
    """A column the planner may not use an index for: ``+column`` on SQLite.

    SQLite's documented way to take a term out of index selection (unary
    ``+`` is a no-op on any value); elsewhere the column as it is.
    """

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(_Unindexed)
def _unindexed(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_Unindexed, "sqlite")
def _unindexed_sqlite(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def _as_is(column: Any) -> ColumnElement[Any]:
    return cast("ColumnElement[Any]", column)


def print_out_select(
    flt: PrintOutFilter,
    *,
    limit: int,
    after: Position | None,
    plan: AccountPlan = AccountPlan.WALK,
) -> Select[PrintOut, str]:
    """The statement of one page: ``limit`` rows after ``after``, newest first.

    Built so that every filter combination walks one index in order (the plan
    tests in tests/test_history_scale.py hold it to that): equalities on the
    leading index columns, one lower and one upper bound on ``created_at``.
    """
    base = select(PrintOut, Printer.name).join(Printer, Printer.id == PrintOut.printer_id)
    stmt = _filtered(base, flt, after=after, plan=plan)
    if not _from_account(flt, plan):
        return stmt.order_by(PrintOut.created_at.desc(), PrintOut.id.desc()).limit(limit)
    inner = _fenced(stmt)
    found = aliased(PrintOut, inner)
    return cast(
        "Select[PrintOut, str]",
        select(found, inner.c.name).order_by(found.created_at.desc(), found.id.desc()).limit(limit),
    )


def print_out_columns_select(
    columns: Sequence[Any],
    flt: PrintOutFilter,
    *,
    limit: int,
    after: Position | None,
    plan: AccountPlan = AccountPlan.WALK,
) -> Select[*tuple[Any, ...]]:
    """As ``print_out_select``, for plain rows of ``columns`` (print_outs and printers).

    The rows come back without ORM objects: an export reads many of them.
    ``columns`` must include ``print_outs.id`` and ``print_outs.created_at``.
    """
    base = select(*columns).select_from(PrintOut).join(Printer, Printer.id == PrintOut.printer_id)
    stmt = _filtered(base, flt, after=after, plan=plan)
    if not _from_account(flt, plan):
        return stmt.order_by(PrintOut.created_at.desc(), PrintOut.id.desc()).limit(limit)
    inner = _fenced(stmt)
    return select(*inner.c).order_by(inner.c.created_at.desc(), inner.c.id.desc()).limit(limit)


def _from_account(flt: PrintOutFilter, plan: AccountPlan) -> bool:
    return flt.account_id is not None and plan is AccountPlan.FROM_ACCOUNT and not _either(flt)


def _fenced(stmt: Select[*_Ts]) -> Subquery:
    """The filtered rows as a subquery, to be sorted outside it.

    OFFSET 0 fences it (neither database merges it into the outer query):
    inside, with no ORDER BY ... LIMIT to satisfy, nothing favours walking
    print_outs in order; PostgreSQL otherwise walks ix_print_outs_created
    hoping to meet a small account's rows early, and reads the whole history
    for a rare one.
    """
    return stmt.offset(0).subquery("matching")


def _filtered(
    stmt: Select[*_Ts], flt: PrintOutFilter, *, after: Position | None, plan: AccountPlan
) -> Select[*_Ts]:
    """``stmt`` (from print_outs joined to printers) with the filter and the keyset bound."""
    from_account = _from_account(flt, plan)
    # From a small account, the print_outs indexes must not drive the query:
    # SQLite, without statistics, guesses ~10 rows for any equality and would
    # rather walk ix_print_outs_delegate_created (all of a user's rows) than
    # the account's few.
    col: Callable[[Any], ColumnElement[Any]] = _Unindexed if from_account else _as_is
    if _either(flt):
        # Walked in created order like the other filters, keeping the rows either way.
        stmt = stmt.where(
            or_(
                PrintOut.delegate == flt.delegate,
                exists().where(
                    AccountTransaction.print_out_id == PrintOut.id,
                    AccountTransaction.account_id == flt.account_id,
                ),
            )
        )
    elif flt.account_id is not None:
        if from_account:
            # The account's transactions (at most SMALL_ACCOUNT), then a sort;
            # (print_out_id, account_id) is unique, so no duplicates.
            stmt = stmt.join(
                AccountTransaction,
                (AccountTransaction.print_out_id == PrintOut.id)
                & (AccountTransaction.account_id == flt.account_id),
            )
        else:
            stmt = stmt.where(
                exists().where(
                    AccountTransaction.print_out_id == PrintOut.id,
                    AccountTransaction.account_id == flt.account_id,
                )
            )
    if flt.delegate is not None and not _either(flt):
        stmt = stmt.where(col(PrintOut.delegate) == flt.delegate)
    if flt.printer_id is not None:
        stmt = stmt.where(col(PrintOut.printer_id) == flt.printer_id)
    elif flt.printer is not None:  # not prepared: a subquery (see ``prepare``)
        printer_id = select(Printer.id).where(Printer.name == flt.printer).scalar_subquery()
        stmt = stmt.where(col(PrintOut.printer_id) == printer_id)
    if flt.status is not None:
        stmt = stmt.where(col(PrintOut.status) == int(flt.status))
    if flt.since is not None:
        stmt = stmt.where(col(PrintOut.created_at) >= flt.since)
    # One upper bound only: with both "until" and the cursor, a planner may
    # start the index walk at "until" and filter out every row of the pages
    # before (a cost that grows with depth). Whichever is tighter implies the other.
    until = flt.until
    if after is not None and until is not None:
        if after[0] < until:
            until = None
        else:
            after = None
    if until is not None:
        stmt = stmt.where(col(PrintOut.created_at) < until)
    if after is not None:
        # Row-value comparison: the bound values take the columns' types.
        stmt = stmt.where(tuple_(col(PrintOut.created_at), col(PrintOut.id)) < after)
    return stmt


async def _rows(session: AsyncSession, found: Sequence[tuple[PrintOut, str]]) -> list[PrintOutRow]:
    """Attach transactions and their accounts, and how each was counted: one query
    each for all of ``found``."""
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
    counted = await counted_of(session, [po.print_in_id for po, _ in found])
    reversed_ = await ledger.reversed_by_transaction(
        session, [po.id for po, _ in found if po.reversed_at is not None]
    )
    return [
        PrintOutRow(
            po,
            name,
            by_print_out[po.id],
            counted.get(po.print_in_id, NOT_COUNTED),
            {t.id: reversed_[t.id] for t, _ in by_print_out[po.id] if t.id in reversed_},
        )
        for po, name in found
    ]


async def _page(
    session: AsyncSession, flt: PrintOutFilter, *, limit: int, after: Position | None
) -> tuple[list[PrintOutRow], Position | None]:
    """One page and the position after it (None on the last page)."""
    prepared = await prepare(session, flt)
    if prepared is None:
        return [], None
    flt, plan = prepared
    stmt = print_out_select(flt, limit=limit + 1, after=after, plan=plan)
    found = [(po, name) for po, name in await session.execute(stmt)]
    position = None
    if len(found) > limit:
        found = found[:limit]
        last = found[-1][0]
        position = (last.created_at, last.id)
    return await _rows(session, found), position


async def print_out_page(
    session: AsyncSession,
    flt: PrintOutFilter,
    *,
    limit: int,
    after: Position | None,
) -> tuple[list[PrintOutRow], str | None]:
    """One page, newest first, and the cursor of the next (None on the last page)."""
    rows, position = await _page(session, flt, limit=limit, after=after)
    next_cursor = None
    if position is not None:
        next_cursor = encode_cursor(PRINT_OUT_CURSOR, _micros(position[0]), position[1])
    return rows, next_cursor


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
