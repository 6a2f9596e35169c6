"""Reading PaperCut's print log: batched, bound, and read as end states."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from billing.db import make_engine
from billing.papercut import printlog
from billing.papercut.printlog import (
    CHUNK,
    DENIED_REASONS,
    OUTCOME_TABLE,
    Outcome,
    PrintLogRow,
    outcome,
)
from proxy.devkit.papercut.simdb import SimDatabase

SERVER = "localhost"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimDatabase]:
    db = SimDatabase(tmp_path / "sim.db")
    db.add_printer(SERVER, "direct", cost_mono=Decimal("0.10"))
    db.add_printer(SERVER, "hold", cost_mono=Decimal("0.05"), hold_release=True)
    yield db
    db.close()


@pytest.fixture
async def engine(sim: SimDatabase) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(f"sqlite+aiosqlite:///{sim.path}")
    yield eng
    await eng.dispose()


def count_selects(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return statements


def row(**overrides: Any) -> PrintLogRow:
    values: dict[str, Any] = {
        "document_name": "d",
        "printed": False,
        "cancelled": False,
        "refunded": False,
        "denied_reason": "",
        "usage_cost": Decimal("0.30"),
        "total_pages": 3,
        "total_color_pages": 0,
        "copies": 1,
        "usage_date": None,
    }
    values.update(overrides)
    return PrintLogRow(**values)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, Outcome.PENDING),
        ({"printed": True}, Outcome.PRINTED),
        ({"printed": True, "refunded": True}, Outcome.PRINTED),
        ({"cancelled": True}, Outcome.CANCELED),
        ({"denied_reason": "CANCELLED"}, Outcome.CANCELED),
        ({"denied_reason": "TIMEOUT"}, Outcome.EXPIRED),
        ({"denied_reason": "TIMEOUT", "cancelled": True}, Outcome.EXPIRED),
        ({"denied_reason": "INSUFFICIENT_BALANCE"}, Outcome.DENIED),
        ({"denied_reason": "PRINTER_DISABLED", "cancelled": True}, Outcome.DENIED),
        # denied reasons by substring (DENIED_REASONS)
        ({"denied_reason": "HOLD_RELEASE_TIMEOUT"}, Outcome.EXPIRED),
        ({"denied_reason": "USER_CANCELLED"}, Outcome.CANCELED),
        ({"denied_reason": "CANCELED"}, Outcome.CANCELED),
        ({"denied_reason": "DOCUMENT_TOO_LARGE"}, Outcome.DENIED),
        ({"denied_reason": "document_too_large"}, Outcome.DENIED),
        ({"denied_reason": "FILTER_RULE", "cancelled": True}, Outcome.DENIED),
        ({"printed": True, "denied_reason": "TIMEOUT"}, Outcome.PRINTED),
    ],
)
def test_outcome_mapping(overrides: dict[str, Any], expected: Outcome) -> None:
    assert outcome(row(**overrides)) is expected
    assert row(**overrides).outcome is expected
    assert expected.is_final == (expected is not Outcome.PENDING)


def test_every_row_of_the_outcome_tables_is_what_outcome_does() -> None:
    """The tables are the documentation and the test data: each row, in order."""
    for needle, expected, source in DENIED_REASONS:
        assert source in {"PC", "SP", "PP"}
        reason = needle or "SOME_FILTER"
        assert outcome(row(denied_reason=reason)) is expected, needle
        assert outcome(row(denied_reason=f"X_{reason}_Y", cancelled=True)) is expected, needle
    conditions = {
        "printed='Y' (refunded or not)": {"printed": True, "refunded": True, "cancelled": True},
        "denied_reason not empty": {"denied_reason": "FILTER_RULE", "cancelled": True},
        "cancelled='Y'": {"cancelled": True},
        "otherwise": {},
    }
    assert [c for c, _, _ in OUTCOME_TABLE] == list(conditions)
    for condition, expected, _source in OUTCOME_TABLE:
        assert outcome(row(**conditions[condition])) is expected, condition


async def test_one_query_for_a_thousand_pending_jobs(sim: SimDatabase, engine: AsyncEngine) -> None:
    names = [f"job {n}.proxyprint.{n:08d}" for n in range(CHUNK)]
    for name in names:
        sim.record_job(name, user="amy", printer="hold")
    selects = count_selects(engine)
    before = printlog.QUERIES["fetch"]

    found = await printlog.fetch(engine, names)

    assert len(selects) == 1 == printlog.QUERIES["fetch"] - before
    assert set(found) == set(names)
    assert all(r.outcome is Outcome.PENDING for r in found.values())
    # One more name: a second chunk, a second query; duplicates are asked once.
    selects.clear()
    found = await printlog.fetch(engine, [*names, "missing.proxyprint.x", names[0]])
    assert len(selects) == 2
    assert len(found) == CHUNK
    assert await printlog.fetch(engine, []) == {}
    assert len(selects) == 2  # nothing to ask: no query


async def test_fetch_reads_every_end_state(sim: SimDatabase, engine: AsyncEngine) -> None:
    names = {state: f"{state}.proxyprint.{state}" for state in (
        "printed", "held", "released", "cancelled", "expired", "denied", "refunded"
    )}  # fmt: skip
    sim.record_job(names["printed"], user="Amy", printer="direct", pages=3, copies=2)
    for state in ("held", "released", "cancelled", "expired", "denied"):
        sim.record_job(names[state], user="amy", printer="hold", pages=2)
    sim.record_job(names["refunded"], user="amy", printer="direct")
    sim.release(names["released"])
    sim.cancel(names["cancelled"])
    sim.expire(names["expired"])
    sim.deny(names["denied"], "filter_rule")
    sim.refund(names["refunded"])

    found = await printlog.fetch(engine, [*names.values(), "never.proxyprint.sent"])

    assert "never.proxyprint.sent" not in found
    outcomes = {state: found[name].outcome for state, name in names.items()}
    assert outcomes == {
        "printed": Outcome.PRINTED,
        "held": Outcome.PENDING,
        "released": Outcome.PRINTED,
        "cancelled": Outcome.CANCELED,
        "expired": Outcome.EXPIRED,
        "denied": Outcome.DENIED,
        "refunded": Outcome.PRINTED,
    }
    printed = found[names["printed"]]
    assert printed.usage_cost == Decimal("0.60") and isinstance(printed.usage_cost, Decimal)
    assert (printed.total_pages, printed.copies) == (6, 2)
    assert isinstance(printed.usage_date, dt.datetime) and printed.usage_date.tzinfo is not None
    assert found[names["released"]].usage_cost == Decimal("0.10")
    assert found[names["denied"]].denied_reason == "FILTER_RULE"
    assert found[names["refunded"]].refunded


async def test_the_most_decisive_row_wins(sim: SimDatabase, engine: AsyncEngine) -> None:
    name = "twice.proxyprint.1"
    sim.record_job(name, user="amy", printer="hold")
    sim.cancel(name)
    sim.record_job(name, user="amy", printer="direct")  # delivered again, printed
    sim.record_job(name, user="amy", printer="hold")  # and once more, held
    found = await printlog.fetch(engine, [name])
    assert found[name].outcome is Outcome.PRINTED


async def test_names_are_bound_never_spliced(sim: SimDatabase, engine: AsyncEngine) -> None:
    names = [
        "O'Brien's report.proxyprint.1",
        "100%_done.proxyprint.2",
        "x'); DROP TABLE tbl_printer_usage_log; --.proxyprint.3",
        "naïve ünïcödé.proxyprint.4",
    ]
    for name in names:
        sim.record_job(name, user="amy", printer="direct")
    found = await printlog.fetch(engine, [*names, "100%", "%"])
    assert set(found) == set(names)
    assert len(sim.usage_rows()) == 4


async def test_only_print_jobs_count(sim: SimDatabase, engine: AsyncEngine) -> None:
    sim.record_job("copy.proxyprint.1", user="amy", printer="direct")
    with sqlite3.connect(sim.path) as conn:
        conn.execute("UPDATE tbl_printer_usage_log SET job_type = 'COPY'")
    assert await printlog.fetch(engine, ["copy.proxyprint.1"]) == {}


async def test_adjustment_applied(sim: SimDatabase, engine: AsyncEngine) -> None:
    sim.add_user("amy")
    sim.adjust_user_account_balance("amy", -0.3, "proxyprint print-out 7 [pp:ab_1]")
    before = printlog.QUERIES["adjustment_applied"]
    assert await printlog.adjustment_applied(engine, "[pp:ab_1]")
    assert not await printlog.adjustment_applied(engine, "[pp:ab%1]")  # % is literal
    assert not await printlog.adjustment_applied(engine, "[pp:abx1]")  # so is _
    assert not await printlog.adjustment_applied(engine, "[pp:ab_2]")
    assert printlog.QUERIES["adjustment_applied"] - before == 4
    with pytest.raises(ValueError):
        await printlog.adjustment_applied(engine, "")


async def test_numeric_and_float_costs_read_exactly(tmp_path: Path) -> None:
    """A database that stores usage_cost as a number, not the simulator's text."""
    path = tmp_path / "real.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tbl_printer_usage_log (printer_usage_log_id INTEGER PRIMARY KEY,"
            " usage_date TIMESTAMP, document_name VARCHAR(255), total_pages INT,"
            " total_color_pages INT, copies INT, usage_cost REAL, printed CHAR(1),"
            " cancelled CHAR(1), refunded CHAR(1), denied_reason VARCHAR(30),"
            " job_type VARCHAR(20))"
        )
        conn.execute(
            "INSERT INTO tbl_printer_usage_log VALUES"
            " (1, '2024-05-01 10:00:00', 'a', 2, 0, 1, 0.3, 'y ', 'N', 'N', NULL, 'PRINT')"
        )
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        [found] = (await printlog.fetch(engine, ["a"])).values()
    finally:
        await engine.dispose()
    assert found.usage_cost == Decimal("0.3")
    assert found.printed and found.denied_reason == ""
    assert found.usage_date == dt.datetime(2024, 5, 1, 10, 0)  # naive, as stored


@pytest.mark.pg
async def test_postgresql_numeric_costs_and_like(pg_database: str) -> None:
    """PaperCut on PostgreSQL: NUMERIC costs, CHAR flags, naive timestamps, LIKE ... ESCAPE."""
    admin = make_engine(pg_database)
    try:
        async with admin.begin() as conn:
            for statement in (
                "DROP SCHEMA IF EXISTS papercut_sim CASCADE",
                "CREATE SCHEMA papercut_sim",
                "CREATE TABLE papercut_sim.tbl_printer_usage_log ("
                " printer_usage_log_id BIGINT PRIMARY KEY, usage_date TIMESTAMP,"
                " document_name VARCHAR(255), total_pages INT, total_color_pages INT,"
                " copies INT, usage_cost NUMERIC(19, 6), printed CHAR(1), cancelled CHAR(1),"
                " refunded CHAR(1), denied_reason VARCHAR(30), job_type VARCHAR(20))",
                "CREATE TABLE papercut_sim.tbl_account_transaction ("
                " account_transaction_id BIGINT PRIMARY KEY, txn_comment VARCHAR(255))",
                "INSERT INTO papercut_sim.tbl_printer_usage_log VALUES"
                " (1, '2024-05-01 10:00:00', 'it''s.proxyprint.1', 4, 0, 2, 0.4, 'Y', 'N', 'N',"
                " '', 'PRINT'), (2, '2024-05-01 10:01:00', 'held.proxyprint.2', 1, 0, 1, 0.1,"
                " 'N', 'Y', 'N', 'TIMEOUT', 'PRINT')",
                "INSERT INTO papercut_sim.tbl_account_transaction VALUES (1, 'po 1 [pp:a_1]')",
            ):
                await conn.exec_driver_sql(statement)
        reader = create_async_engine(
            pg_database, connect_args={"server_settings": {"search_path": "papercut_sim"}}
        )
        try:
            found = await printlog.fetch(reader, ["it's.proxyprint.1", "held.proxyprint.2", "x"])
            assert await printlog.adjustment_applied(reader, "[pp:a_1]")
            assert not await printlog.adjustment_applied(reader, "[pp:a%1]")
        finally:
            await reader.dispose()
        printed = found["it's.proxyprint.1"]
        assert printed.outcome is Outcome.PRINTED and printed.usage_cost == Decimal("0.4")
        assert printed.usage_date == dt.datetime(2024, 5, 1, 10, 0)
        assert found["held.proxyprint.2"].outcome is Outcome.EXPIRED
    finally:
        async with admin.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA IF EXISTS papercut_sim CASCADE")
        await admin.dispose()


# --- a job over time: WAIT_TABLE, and the monitor reading the simulator both ways ----------

MINUTE = dt.timedelta(minutes=1)
T, M = 10 * MINUTE, 5 * MINUTE  # hold_timeout_mins, missing_after_mins
WAITING = {Outcome.PENDING, Outcome.NOT_LOGGED, Outcome.MISSING}


@pytest.mark.parametrize(
    ("log_row", "age", "hold_timeout", "expected"),
    [
        # (row or None, age since dispatch, T, decision): every WAIT_TABLE row, both sides
        # of its time limit, with and without a known hold timeout
        (row(printed=True), 0 * MINUTE, T, Outcome.PRINTED),
        (row(printed=True), 99 * MINUTE, T, Outcome.PRINTED),
        (row(cancelled=True), 0 * MINUTE, T, Outcome.CANCELED),
        (row(denied_reason="TIMEOUT", cancelled=True), 1 * MINUTE, T, Outcome.EXPIRED),
        (row(denied_reason="DOCUMENT_TOO_LARGE"), 1 * MINUTE, T, Outcome.DENIED),
        (row(), 14 * MINUTE, T, Outcome.PENDING),  # a long hold: still held
        (row(), 15 * MINUTE, T, Outcome.EXPIRED),  # the rule: T + M passed, never decided
        (row(), 999 * MINUTE, 0 * MINUTE, Outcome.PENDING),  # no hold timeout known
        (None, 0 * MINUTE, T, Outcome.NOT_LOGGED),
        (None, 14 * MINUTE, T, Outcome.NOT_LOGGED),  # may be held, logged at its end
        (None, 15 * MINUTE, T, Outcome.MISSING),
        (None, 4 * MINUTE, 0 * MINUTE, Outcome.NOT_LOGGED),
        (None, 5 * MINUTE, 0 * MINUTE, Outcome.MISSING),
    ],
)
def test_wait_table(
    log_row: PrintLogRow | None, age: dt.timedelta, hold_timeout: dt.timedelta, expected: Outcome
) -> None:
    got = printlog.decide(log_row, age, hold_timeout=hold_timeout, missing_after=M)
    assert got is expected
    assert got.is_final == (expected not in WAITING)
    if log_row is None or log_row.outcome is not expected:  # the time rows of the table
        assert expected.value in {decision for _, decision, _ in printlog.WAIT_TABLE}


@pytest.mark.parametrize("held_rows", ["submission", "end"])
async def test_the_monitor_reads_held_jobs_logged_either_way(
    held_rows: str, sim: SimDatabase, db_url: str, aiohttp_client: Any
) -> None:
    """The simulator logs held jobs at submission or at the end of the hold; the monitor
    ends every documented outcome the same way either way, waits on a long hold without
    flagging it missing, and decides a hold that outlives PaperCut's timeout by the rule."""
    from sqlalchemy import select

    from billing.enums import PrintStatus, StatusReason
    from billing.models import PrintOut
    from proxy.app import create_app
    from proxy.config import build_config
    from proxy.keys import SESSIONS
    from proxy.pipeline.papercut import HOLD_RULE, monitor_tick, papercut_ctx
    from tests import factories as f

    sim.set_held_rows(held_rows)
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(sim.path.parent / "spool")},
            "papercut": {
                "url": "http://127.0.0.1:9/rpc/api/xmlrpc",  # not called: no worker runs
                "token": "t",
                "db_url": f"sqlite+aiosqlite:///{sim.path}",
                "hold_timeout_mins": 10,
                "missing_after_mins": 5,
            },
        }
    )
    app = create_app(config, workers=False, intake=False)
    app.cleanup_ctx.append(papercut_ctx)
    await aiohttp_client(app)
    sessionmaker = app[SESSIONS]  # this file's ``engine`` is PaperCut's
    # name -> (PaperCut printer or "" for no row, minutes since dispatch, PaperCut's action)
    jobs: dict[str, tuple[str, int, str]] = {
        "printed": ("direct", 1, ""),
        "released": ("hold", 1, "release"),
        "cancelled": ("hold", 1, "cancel"),
        "timeout": ("hold", 1, "expire"),
        "too-large": ("hold", 1, "deny"),
        "held-young": ("hold", 1, ""),
        "held-long": ("hold", 12, ""),  # past M, within T + M: not missing, not ended
        "held-stale": ("hold", 16, ""),  # past T + M: the rule decides
        "never-young": ("", 3, ""),  # no row at all
        "never-old": ("", 16, ""),
    }
    now = dt.datetime.now(dt.UTC)
    ids: dict[str, int] = {}
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s, "pp-pc", target="cups://pc-queue")
        for name, (_queue, age, _action) in jobs.items():
            po = await f.print_out(s, printer, "carol")
            po.papercut = True
            po.document_name = f"{name}.proxyprint.{held_rows}"
            po.dispatched_at = now - dt.timedelta(minutes=age)
            await f.finish(s, po, PrintStatus.PENDING_EXTERNAL)
            ids[name] = po.id
    for name, (queue, _age, action) in jobs.items():
        doc = f"{name}.proxyprint.{held_rows}"
        if queue:
            sim.record_job(doc, user="carol", printer=queue, pages=2)
        if action == "deny":
            assert sim.deny(doc, "DOCUMENT_TOO_LARGE")
        elif action:
            assert getattr(sim, action)(doc)
    visible = {r.document_name for r in sim.usage_rows() if r.held and r.job_type == "PRINT"}
    assert (f"held-long.proxyprint.{held_rows}" in visible) == (held_rows == "submission")

    # The work ran: five rows PaperCut decided ended, and (logged at submission) the rule's.
    assert await monitor_tick(app) == (6 if held_rows == "submission" else 5)

    async with sessionmaker() as s:
        query = select(PrintOut).where(PrintOut.id.in_(list(ids.values())))
        found = {po.id: po for po in await s.scalars(query)}
    got = {
        name: (PrintStatus(found[i].status), found[i].status_reason or None)
        for name, i in ids.items()
    }
    waiting = (PrintStatus.PENDING_EXTERNAL, None)
    missing = (PrintStatus.PENDING_EXTERNAL, StatusReason.NOT_IN_PRINT_LOG)
    expired = (PrintStatus.CANCELED, StatusReason.EXPIRED)
    assert got == {
        "printed": (PrintStatus.COMPLETED, StatusReason.PRINTED),
        "released": (PrintStatus.COMPLETED, StatusReason.PRINTED),
        "cancelled": (PrintStatus.CANCELED, StatusReason.CANCELED_IN_PAPERCUT),
        "timeout": expired,
        "too-large": (PrintStatus.CANCELED, StatusReason.denied("DOCUMENT_TOO_LARGE")),
        "held-young": waiting,
        "held-long": waiting,  # a long hold is not flagged missing before it ends
        # held past the timeout: a row says so (the rule), no row (logged at the end): missing
        "held-stale": expired if held_rows == "submission" else missing,
        "never-young": waiting,  # not yet logged
        "never-old": missing,
    }
    if held_rows == "submission":
        assert found[ids["held-stale"]].status_message == HOLD_RULE
        # A flagged job whose row turns up late, still held past the limit: the rule.
        sim.record_job(f"never-old.proxyprint.{held_rows}", user="carol", printer="hold")
        assert await monitor_tick(app) == 1
        async with sessionmaker() as s:
            late = await s.get(PrintOut, ids["never-old"])
            assert late is not None and late.status == PrintStatus.CANCELED
            assert late.status_reason == StatusReason.EXPIRED
        return
    # Logged at the end: the stale job's row appears when the hold ends; late, it counts.
    assert sim.release(f"held-stale.proxyprint.{held_rows}")
    assert await monitor_tick(app) == 1
    async with sessionmaker() as s:
        late = await s.get(PrintOut, ids["held-stale"])
        assert late is not None and late.status == PrintStatus.COMPLETED


# --- PaperCut's other databases: optional drivers, a clear error when one is missing -------


@pytest.mark.parametrize(
    ("url", "needs", "says"),
    [
        ("mssql+aioodbc://ro:pw@pc-db/papercut?driver=ODBC+Driver+18+for+SQL+Server",
         "aioodbc", "pip install 'proxyprint[papercut-mssql]'"),
        ("oracle+oracledb://ro:pw@pc-db:1521/?service_name=papercut",
         "oracledb", "pip install 'proxyprint[papercut-oracle]'"),
        ("mysql://ro:pw@pc-db/papercut",  # the sync default driver, MySQLdb
         "MySQLdb", "use mysql+aiomysql:// and pip install 'proxyprint[papercut-mysql]'"),
    ],
)  # fmt: skip
def test_a_missing_driver_names_the_extra(url: str, needs: str, says: str) -> None:
    import importlib.util

    from billing.exceptions import BillingError
    from billing.papercut.exceptions import PrintLogDriverMissing

    assert importlib.util.find_spec(needs) is None, f"{needs} is installed: pick another"
    with pytest.raises(PrintLogDriverMissing) as caught:
        printlog.log_engine(url)
    assert says in str(caught.value) and repr(needs) in str(caught.value)
    assert isinstance(caught.value, BillingError)  # the CLI prints it and exits 1


async def test_log_engine_opens_the_databases_it_knows(sim: SimDatabase, db_url: str) -> None:
    from sqlalchemy import text

    from billing.papercut.exceptions import PrintLogDriverMissing

    eng = printlog.log_engine(f"sqlite+aiosqlite:///{sim.path}")  # the simulator's log
    try:
        sim.record_job("seen.proxyprint.1", user="carol", printer="direct")
        assert list(await printlog.fetch(eng, ["seen.proxyprint.1"])) == ["seen.proxyprint.1"]
    finally:
        await eng.dispose()
    eng = printlog.log_engine(db_url)  # PostgreSQL (asyncpg) and SQLite: connects
    try:
        async with eng.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await eng.dispose()
    with pytest.raises(PrintLogDriverMissing, match="not a database PaperCut can use"):
        printlog.log_engine("firebird://pc-db/papercut")
    with pytest.raises(PrintLogDriverMissing, match="not a database URL"):
        printlog.log_engine("papercut")
