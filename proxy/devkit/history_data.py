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
``deferred`` the secondary indexes of the four bulk tables are dropped first
and rebuilt from the models afterwards (a sort per index instead of a million
random B-tree inserts), and on PostgreSQL their foreign keys too (checked per
row by triggers otherwise; adding them back validates every row in one join
each): for a scratch database only. Ids are assigned
here (so the rows of one print-out can refer to each other without a round
trip); PostgreSQL's sequences are moved past them at the end.

``python -m proxy.devkit.history_data URL ROWS`` fills a database by hand.
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

from sqlalchemy import Dialect, ForeignKeyConstraint, Index, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import AddConstraint, DropConstraint

from billing import accounts, ledger
from billing.db import Base, make_engine, make_sessionmaker
from billing.enums import AccountType, PrinterMode, PrintStatus
from billing.models import (
    Account,
    AccountTransaction,
    LedgerEntry,
    Printer,
    PrintIn,
    PrintOut,
    User,
)

END = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
CURRENCY = "EUR"

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
BULK_TABLES: tuple[Table, ...] = tuple(
    Base.metadata.tables[name]
    for name in ("print_ins", "print_outs", "account_transactions", "ledger_entries")
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
    deferred: bool = False


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


class _Formats:
    """Values as the driver takes them, made once per value (no per-row conversion).

    PostgreSQL's COPY takes the Python values; SQLite takes what the column
    types' bind processors would produce (checked against them in ``check``).
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"

    def time(self, value: dt.datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def money(self, cents: int | None) -> Any:
        if cents is None:
            return None
        return cents * 10_000 if self.sqlite else Decimal(cents).scaleb(-2)

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    def check(self) -> None:
        """The shortcuts agree with the models' own bind processors."""
        if not self.sqlite:
            return
        columns = PrintOut.__table__.c
        samples: list[tuple[Any, Any, Any]] = [
            (columns.created_at, dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC), None),
            (columns.created_at, dt.datetime(2024, 5, 1, 12, 0, 1, 5, tzinfo=dt.UTC), None),
            (columns.cost, Decimal("12.34"), 1234),
            (columns.papercut, True, None),
        ]
        for column, value, cents in samples:
            processor = column.type._cached_bind_processor(self.dialect)
            expected = processor(value) if processor else value
            if isinstance(value, dt.datetime):
                mine = self.time(value)
            elif isinstance(value, bool):
                mine = self.flag(value)
            else:
                mine = self.money(cents)
            if mine != expected:
                raise AssertionError(f"{column}: {mine!r} != {expected!r}")


class _Generator:
    """Builds the rows of each batch; all randomness comes from one seeded RNG."""

    def __init__(
        self, spec: Spec, history: History, printers: list[tuple[int, str]], fmt: _Formats
    ) -> None:
        self.spec = spec
        self.history = history
        self.fmt = fmt
        self.rng = random.Random(spec.seed)
        self.user_cum = _zipf(spec.users, 1.0)
        self.printer_cum = _zipf(spec.printers, 0.8)
        self.shared_cum = _zipf(spec.shared, 1.1)
        self.status_cum = list(itertools.accumulate(share for _, share, _ in STATUSES))
        self.printers = printers
        self.user_ids = list(range(spec.users))
        span_us = spec.days * 86_400_000_000
        self.mean_gap_us = span_us / max(1, spec.rows)
        self.now_us = 0.0  # offset from the start of the span
        self.start = spec.end - dt.timedelta(days=spec.days)

    def batch(self, n: int, ids: _Ids, user_db_ids: list[int]) -> _Batch:
        rng, h, fmt = self.rng, self.history, self.fmt
        out = _Batch()
        users = rng.choices(self.user_ids, cum_weights=self.user_cum, k=n)
        printer_picks = rng.choices(range(len(self.printers)), cum_weights=self.printer_cum, k=n)
        statuses = rng.choices(range(len(STATUSES)), cum_weights=self.status_cum, k=n)
        no, yes = fmt.flag(False), fmt.flag(True)
        for user, printer_index, status_index in zip(users, printer_picks, statuses, strict=True):
            self.now_us += rng.expovariate(1 / self.mean_gap_us)
            created = self.start + dt.timedelta(microseconds=int(self.now_us))
            if ids.print_out == self.first_id:
                h.first_at = created
            h.last_at = created
            at = fmt.time(created)
            status, _, reason = STATUSES[status_index]
            name = h.users[user]
            printer_id, mode = self.printers[printer_index]
            title = rng.choice(TITLES) if rng.random() < 0.3 else f"doc-{ids.print_out}.pdf"
            pages = min(200, int(rng.expovariate(1 / 6)) + 1)
            copies = 1 if rng.random() < 0.8 else rng.randint(2, 10)
            color = rng.random() < 0.25
            pin_id, po_id = ids.print_in, ids.print_out
            ids.print_in += 1
            ids.print_out += 1
            out.print_ins.append((
                pin_id, f"urn:uuid:00000000-0000-4000-8000-{pin_id:012x}", printer_id, name,
                user_db_ids[user], title, "", "application/pdf", copies, "0" * 64,
                pages * 40_000, pages, no, yes if color else no, no, at,
            ))  # fmt: skip
            final = status.is_final
            ended = created + dt.timedelta(seconds=rng.randint(5, 600)) if final else None
            ended_at = fmt.time(ended)
            completed = status is PrintStatus.COMPLETED
            cost = pages * copies * (50 if color else 10) if completed else None
            hold = fmt.time(created + dt.timedelta(hours=1)) if status is PrintStatus.HELD else None
            out.print_outs.append((
                po_id, pin_id, printer_id, mode, f"ipp://printer-{printer_index:02d}/ipp/print",
                no, int(status), reason, name, user_db_ids[user], title, pages, copies,
                fmt.money(cost), CURRENCY, at,
                at if final or status is PrintStatus.PROCESSING else None, ended_at,
                ended_at if completed else None, hold, hold, 0,
            ))  # fmt: skip
            payers = self._payers(name)
            shares = _split(cost, [w for _, w in payers]) if cost is not None else None
            for i, (account_id, weight) in enumerate(payers):
                txn_id = ids.txn
                ids.txn += 1
                share = shares[i] if shares is not None else 0
                out.txns.append((
                    txn_id, po_id, account_id, weight, fmt.money(share), int(status),
                    f"po:{po_id}:acct:{account_id}", at,
                ))  # fmt: skip
                if shares is not None:
                    ledger_id = ids.ledger
                    ids.ledger += 1
                    out.ledger.append((
                        ledger_id, account_id, fmt.money(-share), "charge", pages * weight,
                        f"charge:po:{po_id}:txn:{txn_id}", po_id, txn_id, "tracker",
                        f"print-out {po_id}: {title}", ended_at,
                    ))  # fmt: skip
        return out

    first_id = 0

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


def _split(cents: int, weights: list[int]) -> list[int]:
    """Shares summing to ``cents`` (the first payer takes the rounding)."""
    total = sum(weights)
    shares = [cents * w // total for w in weights]
    shares[0] += cents - sum(shares)
    return shares


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
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
        await conn.exec_driver_sql(sql, rows)


async def _insert_batch(conn: AsyncConnection, batch: _Batch) -> None:
    await _insert(conn, BULK_TABLES[0], PRINT_IN_COLUMNS, batch.print_ins)
    await _insert(conn, BULK_TABLES[1], PRINT_OUT_COLUMNS, batch.print_outs)
    await _insert(conn, BULK_TABLES[2], TXN_COLUMNS, batch.txns)
    await _insert(conn, BULK_TABLES[3], LEDGER_COLUMNS, batch.ledger)


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
    fmt = _Formats(engine.dialect)
    fmt.check()
    gen = _Generator(spec, history, printers, fmt)
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB for the bulk
        ids = await _next_ids(conn)
        gen.first_id = ids.print_out
        indexes = [ix for t in BULK_TABLES for ix in _deferrable(t)] if spec.deferred else []
        keys: list[ForeignKeyConstraint] = []
        if spec.deferred and conn.dialect.name == "postgresql":
            keys = [fk for t in BULK_TABLES for fk in t.foreign_key_constraints]
        for key in keys:
            await conn.execute(DropConstraint(key))
        for index in indexes:
            await conn.run_sync(index.drop)
        # Sequential on purpose: generating the next batch in a thread while
        # the driver writes this one was slower (the writer thread, which
        # gives up the GIL at every row, then waits for it behind the
        # generator: the GIL convoy effect).
        done = 0
        while done < spec.rows:
            n = min(spec.batch, spec.rows - done)
            batch = gen.batch(n, ids, user_db_ids)
            await _insert_batch(conn, batch)
            history.transactions += len(batch.txns)
            history.ledger_entries += len(batch.ledger)
            done += n
            if progress is not None:
                progress(done, time.perf_counter() - start)
        for index in indexes:
            await conn.run_sync(index.create)
        for key in keys:
            await conn.execute(AddConstraint(key))
        await ledger.rebuild_totals(conn)  # the entries went in around billing.ledger
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
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in BULK_TABLES:
            await autocommit.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


async def _main(url: str, rows: int) -> None:
    engine = make_engine(url)
    try:
        history = await generate(
            engine,
            Spec(rows=rows, deferred=True),
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
