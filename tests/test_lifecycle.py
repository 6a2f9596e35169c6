"""The one way a print-out ends (proxy/pipeline/lifecycle.py) on SQLite and PostgreSQL:
one cost choice, the charge, and spool files removed only after the commit."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import charging
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import PrintIn, PrintOut
from billing.money import Currency
from proxy.app import CONFIG, SESSIONS, SPOOL
from proxy.config import build_config
from proxy.pipeline import lifecycle
from proxy.spool import Spool
from tests import factories as f

EUR = Currency("EUR", 2)
Sessions = async_sessionmaker[AsyncSession]


async def test_cost_for_ticket_then_logged_then_rules(session: AsyncSession) -> None:
    await f.user(session, "alice")
    direct = await f.printer(session)  # 0.10 a page
    ticket = await f.printer(session, "pp-ticket", mode=PrinterMode.TICKET)
    po = await f.print_out(session, direct, "alice", pages=3, copies=2)
    cost, detail = await charging.cost_for(session, po, EUR)
    assert cost == Decimal("0.60") and sum(Decimal(str(d["amount"])) for d in detail) == cost
    logged, detail = await charging.cost_for(session, po, EUR, logged=Decimal("0.7"))
    assert (logged, detail) == (
        Decimal("0.7"),
        [{"description": "PaperCut usage cost", "amount": "0.70"}],
    )
    held = await f.print_out(session, ticket, "alice")
    held.ticket_cost = Decimal("1.5")
    # The ticket's cost wins, whoever logged what; one format for its detail.
    for source in (None, Decimal("9.99")):
        assert await charging.cost_for(session, held, EUR, logged=source) == (
            Decimal("1.5"),
            [{"description": "job ticket cost", "amount": "1.50"}],
        )


def _app(db_url: str, sessions: Sessions, spool_dir: Path) -> web.Application:
    app = web.Application()
    app[CONFIG] = build_config({"database": {"url": db_url}, "spool": {"dir": str(spool_dir)}})
    app[SESSIONS] = sessions
    spool = Spool(spool_dir)
    spool.prepare()
    app[SPOOL] = spool
    return app


async def _spooled(sessions: Sessions, spool: Spool) -> tuple[int, Path]:
    async with sessions() as s, s.begin():
        alice = await f.user(s, "alice")
        printer = await f.printer(s)
        po = await f.print_out(s, printer, "alice", charged_to=[(alice, 1)], pages=2)
        await f.finish(s, po, PrintStatus.PROCESSING)
        path = spool.jobs / f"job-{po.id}"
        path.write_bytes(b"%PDF-1.4")
        pin = await s.get(PrintIn, po.print_in_id)
        assert pin is not None
        pin.spool_path = str(path)
    return po.id, path


async def test_ending_charges_commits_then_removes(
    db_url: str, sessionmaker: Sessions, tmp_path: Path
) -> None:
    app = _app(db_url, sessionmaker, tmp_path / "spool")
    po_id, path = await _spooled(sessionmaker, app[SPOOL])
    async with lifecycle.ending(app) as ends:
        po = await ends.session.get(PrintOut, po_id)
        assert po is not None
        assert await ends.apply(po, lifecycle.Change(PrintStatus.COMPLETED), actor="tracker")
        assert not await ends.apply(po, lifecycle.Change(PrintStatus.CANCELED), actor="x")
        assert path.exists()  # nothing removed before the commit
    assert not path.exists()
    async with sessionmaker() as s:
        po = await s.get(PrintOut, po_id)
        assert po is not None and po.status == PrintStatus.COMPLETED
        assert po.cost == Decimal("0.20") and po.charged_at is not None
        pin = await s.scalar(select(PrintIn).where(PrintIn.id == po.print_in_id))
        assert pin is not None and pin.spool_path is None


async def test_a_failed_ending_changes_nothing_and_keeps_the_file(
    db_url: str, sessionmaker: Sessions, tmp_path: Path
) -> None:
    app = _app(db_url, sessionmaker, tmp_path / "spool")
    po_id, path = await _spooled(sessionmaker, app[SPOOL])
    change = lifecycle.Change(PrintStatus.CANCELED, StatusReason.CANCELED_IN_CUPS)
    with pytest.raises(RuntimeError):
        async with lifecycle.ending(app) as ends:
            po = await ends.session.get(PrintOut, po_id)
            assert po is not None
            assert await ends.apply(po, change, actor="tracker")
            raise RuntimeError("the handler failed after the change")
    assert path.exists()
    async with sessionmaker() as s:
        po = await s.get(PrintOut, po_id)
        assert po is not None and po.status == PrintStatus.PROCESSING
        assert po.status_reason is None
