"""Generate a print-out history at scale (not a benchmark: no ``bench_`` prefix).

``generate(engine, rows)`` adds ``rows`` print-outs, each with its print-in,
1–3 transactions and, when completed, the ledger charges, to a migrated
database (SQLite or PostgreSQL). The spread is meant to look like a real site:

- users and printers are Zipf-distributed (a few heavy users and busy printers,
  a long tail), statuses mostly ``completed``;
- 70 % of the print-outs are charged to the delegate alone, the rest split
  with a group, a shared account (Zipf as well: a few busy projects, many small
  ones) or another user;
- creation times are a Poisson process over ``days`` days, so ids grow with
  time as they do in production.

Speed: the handful of users, groups, accounts and printers go through the
domain functions; the bulk goes in as Core ``executemany`` batches on SQLite
and ``COPY`` (asyncpg ``copy_records_to_table``) on PostgreSQL. With
``defer_indexes`` the secondary indexes of the four bulk tables are dropped
first and rebuilt from the models afterwards (a sort per index instead of a
million random B-tree inserts): for a scratch database only. Ids are assigned
here (so the rows of one print-out can refer to each other without a round
trip); PostgreSQL's sequences are moved past them at the end.

``python -m benchmarks.history_data URL ROWS`` fills a database by hand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Index, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import accounts
from billing.db import make_engine, make_sessionmaker
from billing.enums import AccountType, PrinterMode, PrintStatus
from billing.models import (
    Account,
    AccountTransaction,
    LedgerEntry,
    Printer,
    PrintIn,
    PrintOut,
)

END = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
CURRENCY = "EUR"
_CENT = Decimal("0.01")

# (status, share of all print-outs, reason)
STATUSES: tuple[tuple[PrintStatus, float, str | None], ...] = (
    (PrintStatus.COMPLETED, 0.84, None),
    (PrintStatus.CANCELED, 0.07, "expired"),
    (PrintStatus.ABORTED, 0.02, "target-error"),
    (PrintStatus.HELD, 0.03, None),
    (PrintStatus.PENDING, 0.02, None),
    (PrintStatus.PROCESSING, 0.01, None),
    (PrintStatus.PENDING_EXTERNAL, 0.01, None),
)
TITLES = (
    "report.pdf", "Quarterly report, final.pdf", 'Invoice "draft" 2024.docx', "slides.pptx",
    "boarding-pass.pdf", "thesis chapter 3.pdf", "=budget.xlsx", "minutes\nmeeting.txt",
    "poster A3.pdf", "contract (signed).pdf", "timesheet.xlsx", "@mentions.txt",
    "-notes.md", "+plan.pdf", "Résumé.pdf", "photo.jpg",
)  # fmt: skip
BULK_TABLES: tuple[Table, ...] = (
    PrintIn.__table__,  # type: ignore[assignment]
    PrintOut.__table__,  # type: ignore[assignment]
    AccountTransaction.__table__,  # type: ignore[assignment]
    LedgerEntry.__table__,  # type: ignore[assignment]
)


def _zipf(n: int, s: float) -> list[float]:
    """Cumulative Zipf weights for ``rng.choices(..., cum_weights=...)``."""
    return list(itertools.accumulate(1 / (k + 1) ** s for k in range(n)))


@dataclass
class History:
    """What was generated: sizes, time, and names/ids a benchmark filters on."""

    rows: int = 0
    transactions: int = 0
    ledger_entries: int = 0
    seconds: float = 0.0
    first_at: dt.datetime = END
    last_at: dt.datetime = END
    users: list[str] = field(default_factory=list)  # busiest first
    printers: list[str] = field(default_factory=list)  # busiest first
    user_accounts: dict[str, int] = field(default_factory=dict)
    shared_accounts: list[int] = field(default_factory=list)  # busiest first
    group_accounts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Spec:
    rows: int
    users: int = 200
    groups: int = 10
    printers: int = 20
    shared: int = 60
    days: int = 730
    end: dt.datetime = END
    seed: int = 20_240_501
    batch: int = 20_000
    defer_indexes: bool = False


@dataclass
class _Ids:
    print_in: int
    print_out: int
    txn: int
    ledger: int


@dataclass
class _Batch:
    print_ins: list[tuple[Any, ...]] = field(default_factory=list)
    print_outs: list[tuple[Any, ...]] = field(default_factory=list)
    txns: list[tuple[Any, ...]] = field(default_factory=list)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)


PRINT_IN_COLUMNS = (
    "id", "job_uuid", "printer_id", "delegate", "delegate_user_id", "title", "options",
    "content_type", "copies_requested", "sha256", "size", "pages", "pages_estimated", "color",
    "duplex", "created_at",
)  # fmt: skip
PRINT_OUT_COLUMNS = (
    "id", "print_in_id", "printer_id", "mode", "target", "papercut", "status", "status_reason",
    "delegate", "delegate_user_id", "title", "pages", "copies", "cost", "currency", "created_at",
    "dispatched_at", "ended_at", "charged_at", "hold_until", "next_action_at", "attempts",
)  # fmt: skip
TXN_COLUMNS = (
    "id", "print_out_id", "account_id", "weight", "amount", "status", "idempotency_key",
    "created_at",
)  # fmt: skip
LEDGER_COLUMNS = (
    "id", "account_id", "amount", "kind", "pages", "idempotency_key", "print_out_id",
    "transaction_id", "actor", "comment", "created_at",
)  # fmt: skip


async def _setup(conn: AsyncConnection, spec: Spec, history: History) -> list[tuple[int, str]]:
    """Users, groups, shared accounts, printers through the domain functions."""
    session = make_sessionmaker(conn.engine)(bind=conn)
    groups = [f"team-{g:02d}" for g in range(spec.groups)]
    for name in groups:
        await accounts.create_group(session, name)
        group = await accounts.find_account(session, AccountType.GROUP, name)
        assert group is not None
        history.group_accounts.append(group.id)
    for u in range(spec.users):
        name = f"user{u:04d}"
        await accounts.create_user(session, name, groups=[groups[u % len(groups)]])
        history.users.append(name)
    for s in range(spec.shared):
        path = f"Projects/P{s:03d}"
        history.shared_accounts.append((await accounts.create_shared_account(session, path)).id)
    rows = await session.execute(
        select(Account.path, Account.id).where(Account.type == AccountType.USER.value)
    )
    history.user_accounts = {path: id_ for path, id_ in rows}
    printers: list[tuple[int, str]] = []
    for p in range(spec.printers):
        mode = PrinterMode.HOLD if p % 4 == 1 else PrinterMode.DIRECT
        if p == spec.printers - 1:
            mode = PrinterMode.TICKET
        printer = Printer(
            name=f"pp-{p:02d}",
            mode=mode.value,
            target=f"ipp://printer-{p:02d}.example.net/ipp/print",
            cost_mono=Decimal("0.10"),
            cost_color=Decimal("0.50"),
        )
        session.add(printer)
        await session.flush()
        printers.append((printer.id, mode.value))
        history.printers.append(printer.name)
    await session.close()
    return printers


class _Generator:
    """Builds the rows of each batch; all randomness comes from one seeded RNG."""

    def __init__(self, spec: Spec, history: History, printers: list[tuple[int, str]]) -> None:
        self.spec = spec
        self.history = history
        self.rng = random.Random(spec.seed)
        self.user_cum = _zipf(spec.users, 1.0)
        self.printer_cum = _zipf(spec.printers, 0.8)
        self.shared_cum = _zipf(spec.shared, 1.1)
        self.status_cum = list(itertools.accumulate(share for _, share, _ in STATUSES))
        self.printers = printers
        self.user_ids = list(range(spec.users))
        self.span_us = spec.days * 86_400_000_000
        self.mean_gap_us = self.span_us / max(1, spec.rows)
        self.now_us = 0.0  # offset from the start of the span
        self.start = spec.end - dt.timedelta(days=spec.days)

    def batch(self, n: int, ids: _Ids, user_db_ids: list[int]) -> _Batch:
        rng, spec, h = self.rng, self.spec, self.history
        out = _Batch()
        users = rng.choices(self.user_ids, cum_weights=self.user_cum, k=n)
        printer_picks = rng.choices(range(len(self.printers)), cum_weights=self.printer_cum, k=n)
        statuses = rng.choices(range(len(STATUSES)), cum_weights=self.status_cum, k=n)
        for user, printer_index, status_index in zip(users, printer_picks, statuses, strict=True):
            self.now_us += rng.expovariate(1 / self.mean_gap_us)
            created = self.start + dt.timedelta(microseconds=int(self.now_us))
            status, _, reason = STATUSES[status_index]
            name = h.users[user]
            printer_id, mode = self.printers[printer_index]
            title = f"{rng.choice(TITLES)}" if rng.random() < 0.3 else f"doc-{ids.print_out}.pdf"
            pages = min(200, int(rng.expovariate(1 / 6)) + 1)
            copies = 1 if rng.random() < 0.8 else rng.randint(2, 10)
            color = rng.random() < 0.25
            pin_id, po_id = ids.print_in, ids.print_out
            ids.print_in += 1
            ids.print_out += 1
            out.print_ins.append((
                pin_id, f"urn:uuid:00000000-0000-4000-8000-{pin_id:012x}", printer_id, name,
                user_db_ids[user], title, "", "application/pdf", copies, "0" * 64,
                pages * 40_000, pages, False, color, False, created,
            ))  # fmt: skip
            final = status.is_final
            ended = created + dt.timedelta(seconds=rng.randint(5, 600)) if final else None
            completed = status is PrintStatus.COMPLETED
            cost_cents = pages * copies * (50 if color else 10) if completed else None
            held = status is PrintStatus.HELD
            out.print_outs.append((
                po_id, pin_id, printer_id, mode, f"ipp://printer-{printer_index:02d}/ipp/print",
                False, int(status), reason, name, user_db_ids[user], title, pages, copies,
                None if cost_cents is None else Decimal(cost_cents) * _CENT, CURRENCY, created,
                created if final or status is PrintStatus.PROCESSING else None, ended,
                ended if completed else None,
                created + dt.timedelta(hours=1) if held else None,
                created + dt.timedelta(hours=1) if held else None, 0,
            ))  # fmt: skip
            for account_id, weight in self._payers(name):
                txn_id = ids.txn
                ids.txn += 1
                out.txns.append(
                    (txn_id, po_id, account_id, weight, Decimal(0), int(status),
                     f"po:{po_id}:acct:{account_id}", created)
                )  # fmt: skip
            if cost_cents is not None:
                self._charge(out, po_id, pages, cost_cents, title, ended, ids)
        return out

    def _payers(self, delegate: str) -> list[tuple[int, int]]:
        """1–3 distinct accounts with weights; the delegate's own account first."""
        rng, h = self.rng, self.history
        payers = {h.user_accounts[delegate]: rng.randint(1, 3) if rng.random() < 0.2 else 1}
        extra = 0 if (r := rng.random()) < 0.7 else 1 if r < 0.92 else 2
        while len(payers) < 1 + extra:
            kind = rng.random()
            if kind < 0.5:
                account = rng.choices(h.shared_accounts, cum_weights=self.shared_cum)[0]
            elif kind < 0.7:
                account = rng.choice(h.group_accounts)
            else:
                account = h.user_accounts[rng.choice(h.users)]
            payers.setdefault(account, rng.randint(1, 3))
        return list(payers.items())

    def _charge(
        self,
        out: _Batch,
        po_id: int,
        pages: int,
        cost_cents: int,
        title: str,
        ended: dt.datetime | None,
        ids: _Ids,
    ) -> None:
        """Split the cost over this print-out's transactions (largest remainder, in cents)."""
        first = len(out.txns) - 1
        while first > 0 and out.txns[first - 1][1] == po_id:
            first -= 1
        txns = out.txns[first:]
        total_weight = sum(t[3] for t in txns)
        shares = [cost_cents * t[3] // total_weight for t in txns]
        shares[0] += cost_cents - sum(shares)
        for i, (txn, share) in enumerate(zip(txns, shares, strict=True)):
            amount = Decimal(share) * _CENT
            out.txns[first + i] = (*txn[:4], amount, *txn[5:])
            ledger_id = ids.ledger
            ids.ledger += 1
            out.ledger.append((
                ledger_id, txn[2], -amount, "charge", pages * txn[3],
                f"charge:po:{po_id}:txn:{txn[0]}", po_id, txn[0], "tracker",
                f"print-out {po_id}: {title}", ended,
            ))  # fmt: skip


async def _next_ids(conn: AsyncConnection) -> _Ids:
    async def next_id(column: Any) -> int:
        return int(await conn.scalar(select(func.coalesce(func.max(column), 0))) or 0) + 1

    return _Ids(
        await next_id(PrintIn.id),
        await next_id(PrintOut.id),
        await next_id(AccountTransaction.id),
        await next_id(LedgerEntry.id),
    )


async def _insert(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
    else:
        await conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def _deferrable(table: Table) -> list[Index]:
    return [ix for ix in table.indexes if not ix.unique]


async def generate(
    engine: AsyncEngine,
    spec: Spec,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> History:
    """Add ``spec.rows`` print-outs (and their rows) to a migrated database."""
    history = History(rows=spec.rows)
    start = time.perf_counter()
    async with engine.begin() as conn:
        printers = await _setup(conn, spec, history)
    user_db_ids = await _user_ids(engine, history.users)
    gen = _Generator(spec, history, printers)
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB for the bulk
        ids = await _next_ids(conn)
        if spec.defer_indexes:
            for table in BULK_TABLES:
                for index in _deferrable(table):
                    await conn.run_sync(lambda c, ix=index: ix.drop(c))
        done = 0
        while done < spec.rows:
            n = min(spec.batch, spec.rows - done)
            batch = gen.batch(n, ids, user_db_ids)
            if done == 0:
                history.first_at = batch.print_outs[0][15]
            history.last_at = batch.print_outs[-1][15]
            await _insert(conn, BULK_TABLES[0], PRINT_IN_COLUMNS, batch.print_ins)
            await _insert(conn, BULK_TABLES[1], PRINT_OUT_COLUMNS, batch.print_outs)
            await _insert(conn, BULK_TABLES[2], TXN_COLUMNS, batch.txns)
            await _insert(conn, BULK_TABLES[3], LEDGER_COLUMNS, batch.ledger)
            history.transactions += len(batch.txns)
            history.ledger_entries += len(batch.ledger)
            done += n
            if progress is not None:
                progress(done, time.perf_counter() - start)
        if spec.defer_indexes:
            for table in BULK_TABLES:
                for index in _deferrable(table):
                    await conn.run_sync(lambda c, ix=index: ix.create(c))
        if conn.dialect.name == "postgresql":
            for table in BULK_TABLES:
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )
    history.seconds = time.perf_counter() - start
    return history


async def _user_ids(engine: AsyncEngine, names: list[str]) -> list[int]:
    from billing.models import User

    async with engine.connect() as conn:
        rows = dict((await conn.execute(select(User.name, User.id))).all())
    return [int(rows[name]) for name in names]


async def analyze(engine: AsyncEngine) -> None:
    """PostgreSQL: VACUUM ANALYZE the bulk tables (what autovacuum would do by itself).

    SQLite is left without ``sqlite_stat1``, as the service leaves it.
    """
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in BULK_TABLES:
            await conn.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


async def _main(url: str, rows: int) -> None:
    engine = make_engine(url)
    try:
        history = await generate(
            engine,
            Spec(rows=rows, defer_indexes=True),
            progress=lambda done, secs: print(f"  {done:,} rows, {secs:.1f} s", file=sys.stderr),
        )
        await analyze(engine)
    finally:
        await engine.dispose()
    print(
        f"{history.rows:,} print-outs, {history.transactions:,} transactions, "
        f"{history.ledger_entries:,} ledger entries in {history.seconds:.1f} s"
    )


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
