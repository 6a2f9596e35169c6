"""PaperCut's print log: what happened to the jobs proxyprint sent (SPEC §8).

PaperCut writes one ``tbl_printer_usage_log`` row per job it tracks; proxyprint
finds its jobs there by their unique document name
(``<title>.proxyprint.<uuid>``). This module reads that table, and
``tbl_account_transaction`` for the outbox, with SQLAlchemy Core and bound
parameters only (the names come from users' titles: never built into SQL).
The tables are declared here, not created: they are PaperCut's (or the
simulator's, which uses the same names).

Cost: ``fetch`` runs one query per ``CHUNK`` (1,000) names, so the tracker's
tick over up to 1,000 pending jobs is one query; 1,001 to 2,000 cost two.
1,000 is the largest list every database PaperCut supports takes in one
``IN (...)`` with bound parameters: Oracle allows at most 1,000 expressions
in a list (ORA-01795) and SQL Server 2,100 parameters per statement;
PostgreSQL, MySQL, Derby and SQLite (>= 3.32: 32,766 variables) take more.

``QUERIES`` counts the queries run, by function, for the metrics and the
"at most one query per tick" acceptance test.

Databases: PaperCut's print log can be shared only from an external database
(its internal Derby/H2 one cannot). ``log_engine`` opens ``[papercut] db_url``
on any of them through SQLAlchemy's async dialects; the drivers other than
PostgreSQL's are optional extras (``DRIVERS``), and a missing one is a
``PrintLogDriverMissing`` naming the extra to install.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Dialect, Integer, MetaData, String, Table, bindparam, literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from billing.papercut.exceptions import PrintLogDriverMissing

__all__ = [
    "CHUNK",
    "DENIED_REASONS",
    "DRIVERS",
    "OUTCOME_TABLE",
    "QUERIES",
    "TIMEOUT_REASON",
    "WAIT_TABLE",
    "Outcome",
    "PrintLogRow",
    "adjustment_applied",
    "decide",
    "fetch",
    "log_engine",
    "outcome",
]

CHUNK = 1000
TIMEOUT_REASON = "TIMEOUT"

# PaperCut's external databases -> (the db_url scheme to use, its async driver, the
# extra that installs it: "" = installed with proxyprint). SQLite: the simulator.
DRIVERS: dict[str, tuple[str, str, str]] = {
    "postgresql": ("postgresql+asyncpg", "asyncpg", ""),
    "mssql": ("mssql+aioodbc", "aioodbc", "papercut-mssql"),
    "mysql": ("mysql+aiomysql", "aiomysql", "papercut-mysql"),
    "mariadb": ("mariadb+aiomysql", "aiomysql", "papercut-mysql"),
    "oracle": ("oracle+oracledb", "oracledb", "papercut-oracle"),
    "sqlite": ("sqlite+aiosqlite", "aiosqlite", ""),
}

QUERIES: Counter[str] = Counter()


class _LoggedDecimal(TypeDecorator[Decimal]):
    """An amount whatever the driver returns: Decimal (NUMERIC), str (the
    simulator's TEXT) or float (SQLite REAL: read back as its shortest text)."""

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal:
        if value is None:
            return Decimal(0)
        if isinstance(value, Decimal):
            return value
        if isinstance(value, float):
            return Decimal(repr(value))
        try:
            return Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"usage_cost {value!r} is not a number") from None


class _LoggedTime(TypeDecorator[dt.datetime]):
    """A time as the database keeps it: a datetime, or the simulator's ISO text.

    PaperCut itself stores the server's local time without a zone: such
    values come back naive, as stored.
    """

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None or isinstance(value, dt.datetime):
            return value
        try:
            return dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None


_metadata = MetaData()

usage_log = Table(
    "tbl_printer_usage_log",
    _metadata,
    Column("printer_usage_log_id", Integer, primary_key=True),
    Column("usage_date", _LoggedTime),
    Column("document_name", String),
    Column("total_pages", Integer),
    Column("total_color_pages", Integer),
    Column("copies", Integer),
    Column("usage_cost", _LoggedDecimal),
    Column("printed", String),
    Column("cancelled", String),
    Column("refunded", String),
    Column("denied_reason", String),
    Column("job_type", String),
)

account_transaction = Table(
    "tbl_account_transaction",
    _metadata,
    Column("account_transaction_id", Integer, primary_key=True),
    Column("txn_comment", String),
)

_FETCH = (
    select(
        usage_log.c.printer_usage_log_id,
        usage_log.c.document_name,
        usage_log.c.printed,
        usage_log.c.cancelled,
        usage_log.c.refunded,
        usage_log.c.denied_reason,
        usage_log.c.usage_cost,
        usage_log.c.total_pages,
        usage_log.c.total_color_pages,
        usage_log.c.copies,
        usage_log.c.usage_date,
    )
    .where(
        usage_log.c.document_name.in_(bindparam("names", expanding=True)),
        usage_log.c.job_type == "PRINT",
    )
    .order_by(usage_log.c.printer_usage_log_id)
)

_APPLIED = (
    select(literal(1))
    .select_from(account_transaction)
    .where(account_transaction.c.txn_comment.like(bindparam("pattern"), escape="\\"))
    .limit(1)
)


class Outcome(StrEnum):
    """A print-log row read as a job's end state (SPEC §8)."""

    PRINTED = "printed"  # completed, cost = usage_cost
    CANCELED = "canceled"  # cancelled in PaperCut (or CUPS)
    EXPIRED = "expired"  # a hold/release job never released (denied_reason TIMEOUT)
    DENIED = "denied"  # refused by PaperCut (denied_reason says why)
    PENDING = "pending"  # held, or not decided yet
    # Only from ``decide`` (a job over time), never a row's own outcome:
    NOT_LOGGED = "not-logged"  # no row yet: waited on
    MISSING = "missing"  # still no row long after it should have one: flagged, waited on

    @property
    def is_final(self) -> bool:
        return self not in _WAITING

    @property
    def rank(self) -> int:
        """How decisive: a printed row beats an ended one, which beats a pending one."""
        return 3 if self is Outcome.PRINTED else (1 if self in _WAITING else 2)


_WAITING = frozenset({Outcome.PENDING, Outcome.NOT_LOGGED, Outcome.MISSING})


@dataclass(frozen=True, slots=True)
class PrintLogRow:
    document_name: str
    printed: bool
    cancelled: bool
    refunded: bool
    denied_reason: str  # "" or a code, upper-case
    usage_cost: Decimal
    total_pages: int  # printed pages: pages x copies
    total_color_pages: int
    copies: int
    usage_date: dt.datetime | None
    printer_usage_log_id: int = 0

    @property
    def outcome(self) -> Outcome:
        return outcome(self)


# --- the one table of outcomes ------------------------------------------------------------
#
# How a tbl_printer_usage_log row ends a job, first match wins. Sources, per row:
# [PC] PaperCut's print-log columns (printed/cancelled/refunded 'Y'/'N',
#      denied_reason a code) as its example report SQL reads them;
# [SP] SavaPage's PaperCut integration, the only other public reader of the log,
#      as issue #14 reports it: every non-printed row is final, and denied
#      reasons are matched by substring (TIMEOUT = expired, DOCUMENT_TOO_LARGE...);
# [PP] proxyprint's own rule where neither settles it.
#
# denied_reason, upper-cased, matched by substring, first match wins:
DENIED_REASONS: tuple[tuple[str, Outcome, str], ...] = (
    # [SP] a hold/release job not released before the hold timeout (e.g. "TIMEOUT",
    # "HOLD_RELEASE_TIMEOUT"): PaperCut deletes it.
    ("TIMEOUT", Outcome.EXPIRED, "SP"),
    # [PP] a person cancelled it ("CANCELLED", "CANCELED", "USER_CANCELLED"...).
    ("CANCEL", Outcome.CANCELED, "PP"),
    # [SP] refused: the document is larger than the printer's or the filter's limit.
    ("DOCUMENT_TOO_LARGE", Outcome.DENIED, "SP"),
    # [PC] refused by a filter or restriction (balance, printer disabled, rules...):
    # any other non-empty reason.
    ("", Outcome.DENIED, "PC"),
)

OUTCOME_TABLE: tuple[tuple[str, Outcome, str], ...] = (
    # (condition, outcome, source); ``outcome`` implements exactly these rows, in order.
    # [PC] printed: completed, cost = usage_cost. A refunded row stays printed: the refund
    # went back to the charged account in PaperCut; proxyprint reverses by an admin only.
    ("printed='Y' (refunded or not)", Outcome.PRINTED, "PC"),
    # [SP] a denied reason decides by DENIED_REASONS (cancelled or not).
    ("denied_reason not empty", Outcome.DENIED, "SP"),
    # [PC] cancelled by a person in PaperCut (or at a release station).
    ("cancelled='Y'", Outcome.CANCELED, "PC"),
    # [PP] none of these: held in a hold/release queue or not yet processed. Waited on
    # until PaperCut decides (the hold timeout then writes TIMEOUT).
    ("otherwise", Outcome.PENDING, "PP"),
)


# How the monitor reads a job over time: its row (or none) and its age since it was sent
# to PaperCut. T = ``[papercut] hold_timeout_mins`` (PaperCut's "Delete held jobs if not
# released after", Options > General > Hold/Release Queues: 2 h in education installs,
# 4 h in commercial ones, per PaperCut's KB "ChangingJobTimeoutOnReleaseStation"; 0 =
# no hold timeout known), M = ``missing_after_mins``. Whether PaperCut writes a held
# job's row at submission or only when the hold ends is not in the documents found, so
# both are read the same way. First match wins:
WAIT_TABLE: tuple[tuple[str, str, str], ...] = (
    # [PC]/[SP] the row decided: OUTCOME_TABLE and DENIED_REASONS.
    ("a final row", "its outcome", "PC"),
    # [PP] PaperCut deletes a held job at its hold timeout (and logs it TIMEOUT): a row
    # still undecided M after that never printed. Read as expired, not waited on for
    # ever (SavaPage reads every non-printed row as final).
    ("a pending row, T > 0, age >= T + M", Outcome.EXPIRED.value, "PP"),
    # [PC] held in a hold/release queue (a row written at submission): waited on.
    ("a pending row", Outcome.PENDING.value, "PC"),
    # [PP] no row yet: PaperCut may write a held job's row only when the hold ends, so a
    # job is "not yet logged", not missing, until M after the longest hold.
    ("no row, age < T + M", Outcome.NOT_LOGGED.value, "PP"),
    # [PP] flagged for an admin (nothing charged); still waited on: a late row counts.
    ("no row", Outcome.MISSING.value, "PP"),
)


def decide(
    row: PrintLogRow | None,
    age: dt.timedelta,
    *,
    hold_timeout: dt.timedelta,
    missing_after: dt.timedelta,
) -> Outcome:
    """What the monitor does with a job sent ``age`` ago (``WAIT_TABLE``, in order)."""
    if row is not None:
        found = row.outcome
        if found.is_final:
            return found
        if hold_timeout > dt.timedelta(0) and age >= hold_timeout + missing_after:
            return Outcome.EXPIRED
        return Outcome.PENDING
    if age < hold_timeout + missing_after:
        return Outcome.NOT_LOGGED
    return Outcome.MISSING


def denied_outcome(reason: str) -> Outcome:
    """The outcome a non-empty ``denied_reason`` records (``DENIED_REASONS``)."""
    code = reason.strip().upper()
    for needle, result, _source in DENIED_REASONS:
        if needle in code:
            return result
    return Outcome.DENIED  # pragma: no cover - the table ends with a catch-all


def outcome(row: PrintLogRow) -> Outcome:
    """The end state a row records: ``OUTCOME_TABLE``, then ``DENIED_REASONS``.

    EXPIRED, DENIED and CANCELED all end a print-out as ``canceled``; they
    differ in the reason it records.
    """
    if row.printed:
        return Outcome.PRINTED
    if row.denied_reason:
        return denied_outcome(row.denied_reason)
    if row.cancelled:
        return Outcome.CANCELED
    return Outcome.PENDING


def _yes(value: object) -> bool:
    return isinstance(value, str) and value.strip().upper() == "Y"


def _row(values: Any) -> PrintLogRow:
    return PrintLogRow(
        document_name=str(values.document_name),
        printed=_yes(values.printed),
        cancelled=_yes(values.cancelled),
        refunded=_yes(values.refunded),
        denied_reason=(values.denied_reason or "").strip().upper(),
        usage_cost=values.usage_cost,
        total_pages=int(values.total_pages or 0),
        total_color_pages=int(values.total_color_pages or 0),
        copies=int(values.copies or 1),
        usage_date=values.usage_date,
        printer_usage_log_id=int(values.printer_usage_log_id),
    )


async def fetch(engine: AsyncEngine, document_names: Sequence[str]) -> dict[str, PrintLogRow]:
    """The print-log row of each document name that has one (print jobs only).

    One query per ``CHUNK`` names (duplicates are asked once). A name with
    several rows (CUPS delivered the job twice, say) gets its most decisive
    row: printed over ended over pending, then the latest.
    """
    names = list(dict.fromkeys(document_names))
    found: dict[str, PrintLogRow] = {}
    if not names:
        return found
    async with engine.connect() as conn:
        for start in range(0, len(names), CHUNK):
            QUERIES["fetch"] += 1
            result = await conn.execute(_FETCH, {"names": names[start : start + CHUNK]})
            for values in result:
                row = _row(values)
                known = found.get(row.document_name)
                if known is None or row.outcome.rank >= known.outcome.rank:
                    found[row.document_name] = row
    return found


def log_engine(url: str) -> AsyncEngine:
    """An engine on PaperCut's database (read only: never ours to lock or migrate).

    ``PrintLogDriverMissing`` when the URL's driver is not installed or is not an
    async one, naming the scheme and the ``pip install`` that fixes it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise PrintLogDriverMissing(f"[papercut] db_url {url!r} is not a database URL") from exc
    backend = parsed.get_backend_name()
    scheme, driver, extra = DRIVERS.get(backend, ("", "", ""))
    if not scheme:
        known = ", ".join(f"{s}://" for s, _, _ in DRIVERS.values())
        raise PrintLogDriverMissing(
            f"[papercut] db_url: {backend!r} is not a database PaperCut can use ({known})"
        )
    install = f"pip install 'proxyprint[{extra}]'" if extra else f"pip install {driver}"
    try:
        if backend == "sqlite":
            return create_async_engine(parsed)
        return create_async_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2)
    except ImportError as exc:
        missing = exc.name or driver
        raise PrintLogDriverMissing(
            f"[papercut] db_url uses {parsed.drivername}, whose driver {missing!r} is not"
            f" installed: use {scheme}:// and {install}"
        ) from exc
    except InvalidRequestError as exc:  # an installed driver that is not async
        raise PrintLogDriverMissing(
            f"[papercut] db_url uses {parsed.drivername}, not an async driver:"
            f" use {scheme}:// ({install})"
        ) from exc


def _like_pattern(marker: str) -> str:
    escaped = marker.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def adjustment_applied(engine: AsyncEngine, comment_marker: str) -> bool:
    """Whether PaperCut holds an account transaction whose comment contains the marker.

    The outbox puts a unique marker in every adjustment's comment; after a
    write whose answer was lost it asks here before sending it again. The
    marker is matched literally (``%`` and ``_`` escaped) anywhere in the
    comment, so it must not be a part of another marker: end it with a
    delimiter (e.g. ``[pp:<uuid>]``). The table has no index on comments:
    this scans it, so call it for uncertain deliveries only.
    """
    if not comment_marker:
        raise ValueError("an empty marker matches every transaction")
    QUERIES["adjustment_applied"] += 1
    async with engine.connect() as conn:
        result = await conn.execute(_APPLIED, {"pattern": _like_pattern(comment_marker)})
        return result.first() is not None
