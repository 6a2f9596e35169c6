"""``POST /jobs/{id}/redirect`` in the states a real printer is slow to reach: an aborted
job whose document is still kept (a new print-out), one whose document is gone, a job
being sent right now, a dispatched one, one held for an invalid delegation. The real app
on SQLite and PostgreSQL; the printing itself is in test_e2e_job_control.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import AccountTransaction, Event, PrintIn, PrintOut
from proxy.app import create_app
from proxy.config import build_config
from proxy.pipeline.expiry import expire_tick
from proxy.pipeline.jobs import next_print_out
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
S = PrintStatus


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    return await aiohttp_client(create_app(config, workers=False, intake=False))


async def _post(client: Client, token: str, po_id: int, printer: str) -> tuple[int, Any]:
    async with client.post(
        f"/api/v1/jobs/{po_id}/redirect",
        json={"printer": printer},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        return resp.status, await resp.json()


async def _redirect_events(session: AsyncSession, po_id: int) -> list[Event]:
    rows = await session.scalars(
        select(Event).where(
            Event.subject_type == "print_out",
            Event.subject_id == str(po_id),
            Event.reason == StatusReason.REDIRECTED,
        )
    )
    return list(rows)


async def test_an_aborted_job_still_spooled_gets_a_new_print_out(
    client: Client, sessionmaker: Sessions, tmp_path: Path
) -> None:
    spooled = tmp_path / "kept.pdf"
    spooled.write_bytes(b"%PDF-1.4\n")
    async with sessionmaker() as s, s.begin():
        alice = await f.user(s, "alice")
        bad = await f.printer(s, "pp-bad")
        await f.printer(s, "pp-good", target="ipp://127.0.0.1:8632/ipp/print")
        aborted = await f.print_out(s, bad, "alice", charged_to=[(alice, 2)])
        gone = await f.print_out(s, bad, "alice", charged_to=[(alice, 1)])
        for po in (aborted, gone):
            await f.finish(s, po, S.ABORTED, reason=StatusReason.TARGET_REJECTED)
        pin = await s.get(PrintIn, aborted.print_in_id)
        assert pin is not None
        pin.spool_path = str(spooled)
        token = await f.token(s, "user", user="alice")
    status, body = await _post(client, token, aborted.id, "pp-good")
    assert status == 200, body
    assert body["new_print_out"] is True and body["job"]["status"] == "pending"
    new_id = body["job"]["id"]
    async with sessionmaker() as s:
        old, new = await s.get(PrintOut, aborted.id), await s.get(PrintOut, new_id)
        assert old is not None and new is not None
        assert old.status == S.ABORTED  # an end stays an end
        assert new.reprint_of == old.id and new.print_in_id == old.print_in_id
        assert new.target == "ipp://127.0.0.1:8632/ipp/print" and new.next_action_at is not None
        shares = await s.scalars(
            select(AccountTransaction).where(AccountTransaction.print_out_id == new.id)
        )
        assert [(t.weight, t.amount, t.status) for t in shares] == [(2, 0, int(S.PENDING))]
        for po_id in (old.id, new.id):
            assert len(await _redirect_events(s, po_id)) == 1
    # Once only; and a job whose document went with its end is told to print again.
    status, body = await _post(client, token, aborted.id, "pp-good")
    assert status == 409 and "already" in body["error"]["message"]
    status, body = await _post(client, token, gone.id, "pp-good")
    assert status == 409 and "no longer kept" in body["error"]["message"]


async def test_jobs_that_cannot_move(client: Client, sessionmaker: Sessions) -> None:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        direct = await f.printer(s, "pp-direct")
        await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        sending = await f.print_out(s, direct, "alice")
        sending.claimed_by, sending.claim_until = "other", utcnow() + timedelta(seconds=60)
        sent = await f.print_out(s, direct, "alice")
        sent.target_job_id, sent.dispatched_at = 7, utcnow()
        await f.finish(s, sent, S.PROCESSING)
        invalid = await f.print_out(s, direct, "alice")
        await f.finish(s, invalid, S.HELD, reason=StatusReason.DELEGATION_INVALID)
        charged = await f.print_out(s, direct, "alice")
        await f.charge(s, charged, "0.30")
        admin = await f.token(s, "admin")
    for po, needle in (
        (sending, "being sent"),
        (sent, "at its printer"),
        (invalid, "held because"),
        (charged, "completed"),
    ):
        status, body = await _post(client, admin, po.id, "pp-hold")
        assert status == 409 and needle in body["error"]["message"], (po.id, body)
    # The claim ran out (its instance died): now it moves, to a hold printer's hold.
    async with sessionmaker() as s, s.begin():
        fresh = await s.get(PrintOut, sending.id)
        assert fresh is not None
        fresh.claim_until = utcnow() - timedelta(seconds=1)
    status, body = await _post(client, admin, sending.id, "pp-hold")
    assert status == 200, body
    assert body["job"]["status"] == "held" and body["job"]["hold_until"] is not None
    async with sessionmaker() as s:
        moved = await s.get(PrintOut, sending.id)
        assert moved is not None
        assert moved.claimed_by is None and moved.mode == "hold"
        assert moved.status_reason == StatusReason.HOLD
        events = await _redirect_events(s, sending.id)
        assert [(e.from_status, e.to_status) for e in events] == [("pending", "held")]
        for po in (sent, invalid, charged):
            assert await _redirect_events(s, po.id) == []


async def test_a_rejected_jobs_kept_document_goes_after_keep_rejected_hours(
    client: Client, sessionmaker: Sessions, tmp_path: Path
) -> None:
    jobs = tmp_path / "sp" / "jobs"  # the app's spool (made at start-up)
    files = {name: jobs / f"{name}.pdf" for name in ("old", "recent", "moving")}
    for path in files.values():
        path.write_bytes(b"%PDF-1.4\n")
    ended = {"old": timedelta(hours=25), "recent": timedelta(hours=1), "moving": timedelta(days=2)}
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        bad = await f.printer(s, "pp-bad")
        good = await f.printer(s, "pp-good", target="ipp://127.0.0.1:8632/ipp/print")
        pos = {}
        for name, ago in ended.items():
            po = await f.print_out(s, bad, "alice")
            await f.finish(s, po, S.ABORTED, reason=StatusReason.TARGET_REJECTED)
            po.ended_at = utcnow() - ago
            pin = await s.get(PrintIn, po.print_in_id)
            assert pin is not None
            pin.spool_path = str(files[name])
            pos[name] = po
        # "moving" was redirected: its new print-out is still on its way.
        await next_print_out(s, good, pos["moving"], currency=f.EUR)
    assert await expire_tick(client.app) == 1
    assert [name for name, path in files.items() if path.exists()] == ["recent", "moving"]
    async with sessionmaker() as s:
        pin = await s.get(PrintIn, pos["old"].print_in_id)
        assert pin is not None and pin.spool_path is None and pin.spool_removed_at is not None
    assert await expire_tick(client.app) == 0  # once


async def test_to_a_require_tap_printer_it_waits_for_the_tap_there(
    client: Client, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        hold = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        auth = await f.printer(s, "pp-auth")
        auth.require_tap, auth.tap_window_secs = True, 90
        po = await f.print_out(s, hold, "alice")
        await f.finish(s, po, S.HELD, reason=StatusReason.HOLD)
        token = await f.token(s, "user", user="alice")
    status, body = await _post(client, token, po.id, "pp-auth")
    assert status == 200, body
    job = body["job"]
    assert (job["status"], job["status_reason"], job["mode"]) == ("held", "awaiting-tap", "direct")
    assert job["status_message"] == "tap your card at a card reader of this printer within 90 s"
    assert job["hold_until"] is not None
