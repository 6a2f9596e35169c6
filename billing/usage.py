"""Usage totals (``GET /reports/usage``, the web Usage page): read off the ledger.

Every figure is a sum over the ledger entries of print-outs (kinds ``charge``
and ``reversal``) whose time is in ``[since, until)``, so the totals equal the
ledger by construction: an account's ``cost`` is minus the sum of its
print-out entries, and a reversal counts on the day it was made, negative.
Deposits, adjustments, top-ups and fees are not usage; they are not here.

Counts follow the ledger's page counter: an entry counts its print-out's
pages times its transaction's weight (a reversal the same, negative). Sheets
and colour pages are counted on the same scale from how the print-in was
counted: a duplex copy takes ``(pages + 1) // 2`` sheets, a simplex one
``pages``; a colour job's colour pages are those measured (at most its pages)
or, unmeasured, all of them; a mono job has none.

Grouped by ``user`` (who printed: the delegate), ``account`` (who pays),
``printer`` or ``day`` (the entry's UTC date): the rows of every grouping add
up to the same totals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, String, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .enums import LedgerKind
from .models import Account, AccountTransaction, LedgerEntry, Printer, PrintIn, PrintOut


class GroupBy(StrEnum):
    USER = "user"
    ACCOUNT = "account"
    PRINTER = "printer"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class Totals:
    pages: int = 0
    sheets: int = 0
    color_pages: int = 0
    cost: Decimal = Decimal(0)

    @property
    def mono_pages(self) -> int:
        return self.pages - self.color_pages

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.pages + other.pages,
            self.sheets + other.sheets,
            self.color_pages + other.color_pages,
            self.cost + other.cost,
        )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group: its key (a name, ``type:path`` for accounts, an ISO date) and totals."""

    key: str
    totals: Totals
    account_type: str | None = None  # group_by=account: the account's type
    name: str | None = None  # group_by=account: the account's path


@dataclass(frozen=True, slots=True)
class Usage:
    group_by: GroupBy
    since: dt.datetime | None
    until: dt.datetime | None
    rows: list[UsageRow]

    @property
    def totals(self) -> Totals:
        out = Totals()
        for row in self.rows:
            out = out + row.totals
        return out


class _UtcDate(FunctionElement[str]):
    """The ISO date (``YYYY-MM-DD``) of a stored UTC time, on either database."""

    inherit_cache = True
    name = "utc_date"
    type = String()


@compiles(_UtcDate)
def _utc_date_pg(element: _UtcDate, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"to_char(({arg}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(_UtcDate, "sqlite")
def _utc_date_sqlite(element: _UtcDate, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC times as naive ISO text (billing.db.UTCDateTime).
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


def _key(group_by: GroupBy) -> list[Any]:
    if group_by is GroupBy.USER:
        return [PrintOut.delegate]
    if group_by is GroupBy.PRINTER:
        return [Printer.name]
    if group_by is GroupBy.DAY:
        return [_UtcDate(LedgerEntry.created_at)]
    return [Account.id, Account.type, Account.path]


async def usage(
    session: AsyncSession,
    group_by: GroupBy,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Usage:
    """Totals per group of the print-out ledger entries in ``[since, until)``, by key."""
    sign = case((LedgerEntry.kind == LedgerKind.REVERSAL.value, -1), else_=1)
    weight = func.coalesce(AccountTransaction.weight, 0)
    sheets_per_copy = case(
        (PrintIn.duplex.is_(True), (PrintOut.pages + 1) // 2), else_=PrintOut.pages
    )
    color_per_copy = case(
        (PrintIn.color.is_(False), literal(0, Integer)),
        (PrintIn.color_pages.is_(None), PrintOut.pages),
        (PrintIn.color_pages < PrintOut.pages, PrintIn.color_pages),
        else_=PrintOut.pages,
    )
    keys = _key(group_by)
    stmt = (
        select(
            *keys,
            func.sum(LedgerEntry.pages),
            func.sum(sign * weight * sheets_per_copy),
            func.sum(sign * weight * color_per_copy),
            func.sum(LedgerEntry.amount),
        )
        .select_from(LedgerEntry)
        .join(PrintOut, PrintOut.id == LedgerEntry.print_out_id)
        .join(PrintIn, PrintIn.id == PrintOut.print_in_id)
        .join(Printer, Printer.id == PrintOut.printer_id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .outerjoin(AccountTransaction, AccountTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerEntry.kind.in_([LedgerKind.CHARGE.value, LedgerKind.REVERSAL.value]))
        .group_by(*keys)
        .order_by(*keys)
    )
    if since is not None:
        stmt = stmt.where(LedgerEntry.created_at >= since)
    if until is not None:
        stmt = stmt.where(LedgerEntry.created_at < until)
    rows = []
    for found in await session.execute(stmt):
        *key, pages, sheets, color, amount = found
        # A charge lowers the balance: the cost is minus the entries' sum.
        totals = Totals(int(pages or 0), int(sheets or 0), int(color or 0), -Decimal(amount or 0))
        if group_by is GroupBy.ACCOUNT:
            _id, type_, path = key
            rows.append(UsageRow(f"{type_}:{path}", totals, account_type=type_, name=path))
        else:
            rows.append(UsageRow(str(key[0]), totals))
    return Usage(group_by, since, until, rows)
