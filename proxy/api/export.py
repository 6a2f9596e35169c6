"""Print-out history as CSV (``GET /printouts.csv``): keyset batches → RFC 4180 text.

``batches`` reads the filtered history ``batch`` rows at a time, each batch a
keyset page (``queries.print_out_columns_select``: the list's statement and
plans) in its own short transaction, as plain rows (no ORM objects: an export
reads many), with the batch's transactions in one more query and how its
print-ins were counted (``pages_estimated``, ``count_method``, ``color_pages``,
``document_copies``: the last columns) in another. The rest are
pure functions, like ``serialize``. Quoting (commas, quotes, line breaks) is
the ``csv`` module's; what this module adds is the spreadsheet side:

- CSV injection (formula injection): a text cell a spreadsheet would read as
  a formula (its first non-blank character ``=``, ``+``, ``-``, ``@`` or a
  full-width/compatibility form of one, or a leading tab or line break) gets a
  leading ``'``, which spreadsheets show as text and hide. Spreadsheets skip
  leading blanks and fold compatibility characters, so the check does too.
  Only cells holding free text get it (titles, names, reasons); the numbers,
  times and labels this service writes itself are never altered.
- Transactions share one cell as ``account:type:weight:amount`` joined by
  ``;``; ``\\``, ``:`` and ``;`` inside an account name are escaped with ``\\``.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.enums import PrintStatus
from billing.models import Account, AccountTransaction, Printer, PrintOut
from billing.money import Currency

from . import queries, serialize

COLUMNS = (
    "id", "created_at", "ended_at", "status", "status_reason", "mode", "printer", "delegate",
    "title", "pages", "copies", "cost", "currency", "transactions",
    "pages_estimated", "count_method", "color_pages", "document_copies",
)  # fmt: skip
FORMULA_STARTS = frozenset("=+-@")
CONTENT_TYPE = "text/csv"
CHARSET = "utf-8"


def text_cell(value: str | None) -> str:
    """Free text, made safe to open in a spreadsheet (see the module docstring)."""
    if value is None:
        return ""
    if not value:
        return value
    stripped = value.lstrip()
    if stripped != value and value[0] in "\t\r\n":
        return "'" + value
    if stripped and unicodedata.normalize("NFKC", stripped[0])[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def _part(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace(";", "\\;")


@dataclass(frozen=True, slots=True)
class Share:
    """One transaction as the CSV shows it."""

    account: str
    type: str
    weight: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ExportRow:
    print_out: Any  # a Row of ROW_COLUMNS
    shares: list[Share]
    counted: queries.Counted = queries.NOT_COUNTED


ROW_COLUMNS = (
    PrintOut.id,
    PrintOut.created_at,
    PrintOut.ended_at,
    PrintOut.status,
    PrintOut.status_reason,
    PrintOut.mode,
    Printer.name.label("printer"),
    PrintOut.delegate,
    PrintOut.title,
    PrintOut.pages,
    PrintOut.copies,
    PrintOut.cost,
    PrintOut.currency,
    PrintOut.print_in_id,
)


async def _shares(session: AsyncSession, ids: list[int]) -> dict[int, list[Share]]:
    by_print_out: dict[int, list[Share]] = {id_: [] for id_ in ids}
    if ids:
        rows = await session.execute(
            select(
                AccountTransaction.print_out_id,
                Account.path,
                Account.type,
                AccountTransaction.weight,
                AccountTransaction.amount,
            )
            .join(Account, Account.id == AccountTransaction.account_id)
            .where(AccountTransaction.print_out_id.in_(ids))
            .order_by(AccountTransaction.print_out_id, AccountTransaction.id)
        )
        for print_out_id, path, type_, weight, amount in rows:
            by_print_out[print_out_id].append(Share(path, type_, weight, amount))
    return by_print_out


async def batches(
    sessions: async_sessionmaker[AsyncSession], flt: queries.PrintOutFilter, *, batch: int
) -> AsyncGenerator[list[ExportRow], None]:
    """Every print-out of the filter, newest first, ``batch`` at a time.

    Each batch is a keyset page in its own short transaction, so an export
    holds neither a transaction (on SQLite: the write lock) nor more than one
    batch in memory while the client reads.
    """
    async with sessions() as session, session.begin():
        prepared = await queries.prepare(session, flt)
    if prepared is None:
        return
    flt, plan = prepared
    after: queries.Position | None = None
    while True:
        async with sessions() as session, session.begin():
            stmt = queries.print_out_columns_select(
                ROW_COLUMNS, flt, limit=batch + 1, after=after, plan=plan
            )
            found = list(await session.execute(stmt))
            more = len(found) > batch
            found = found[:batch]
            shares = await _shares(session, [row.id for row in found])
            counted = await queries.counted_of(session, [row.print_in_id for row in found])
        if found:
            yield [
                ExportRow(row, shares[row.id], counted.get(row.print_in_id, queries.NOT_COUNTED))
                for row in found
            ]
        if not more:
            return
        after = (found[-1].created_at, found[-1].id)


def transactions_cell(shares: Sequence[Share], currency: Currency) -> str:
    return ";".join(
        f"{_part(s.account)}:{s.type}:{s.weight}:{serialize.money(s.amount, currency)}"
        for s in shares
    )


def row_cells(row: ExportRow, currency: Currency) -> list[str]:
    po = row.print_out
    return [
        str(po.id),
        serialize.iso(po.created_at) or "",
        serialize.iso(po.ended_at) or "",
        PrintStatus(po.status).label,
        text_cell(po.status_reason),
        text_cell(po.mode),
        text_cell(po.printer),
        text_cell(po.delegate),
        text_cell(po.title),
        str(po.pages),
        str(po.copies),
        serialize.money(po.cost, currency) or "",
        text_cell(po.currency),
        text_cell(transactions_cell(row.shares, currency)),
        "true" if row.counted.pages_estimated else "false",
        row.counted.count_method or "",
        "" if row.counted.color_pages is None else str(row.counted.color_pages),
        str(row.counted.document_copies),
    ]


def encode(lines: Iterable[Sequence[str]]) -> bytes:
    """CSV lines (CRLF-terminated, quoted where needed) as UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(lines)
    return out.getvalue().encode(CHARSET)


def header() -> bytes:
    return encode([COLUMNS])


def rows(batch: Iterable[ExportRow], currency: Currency) -> bytes:
    return encode(row_cells(row, currency) for row in batch)
