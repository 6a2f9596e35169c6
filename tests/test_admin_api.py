"""Administration through the real app factory and intake (SQLite and PostgreSQL).

A printer's settings apply to jobs received afterwards: a held job keeps the
prices and hold expiry it arrived under, the next one gets the new ones. A
deleted printer's jobs are refused (404), a disabled one's wait in CUPS (503).
Every change is an event with its actor, which ``GET /events`` shows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import charging
from billing.models import PrintOut
from proxy import printers
from tests import factories as f
from tests.test_credit import call, kit, send_job  # noqa: F401  (the kit fixture)

Sessions = async_sessionmaker[AsyncSession]
Client = TestClient[Any, Any]


async def _world(sessionmaker: Sessions) -> str:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        await printers.add_printer(
            s, "pp-hold", target="ipp://127.0.0.1:9/ipp/print", mode="hold", cost_mono="0.10"
        )
        return await f.token(s, "admin")


async def test_a_price_change_applies_to_the_next_job_not_to_a_held_one(
    kit: tuple[Client, Path],  # noqa: F811
    sessionmaker: Sessions,
) -> None:
    client, root = kit
    admin = await _world(sessionmaker)
    before = await send_job(root, "pp-hold", "alice", 10)
    assert before["status"] == "held"
    changed = await call(client, "PATCH", "/api/v1/printers/pp-hold", admin,
                         {"cost_mono": "0.20", "hold_expiry_mins": 15})  # fmt: skip
    assert changed["cost_mono"] == "0.20"
    after = await send_job(root, "pp-hold", "alice", 10)
    async with sessionmaker() as s:
        old = await s.get(PrintOut, before["print_out"])
        new = await s.get(PrintOut, after["print_out"])
        assert old is not None and new is not None
        assert old.hold_until is not None and new.hold_until is not None
        # 60 minutes for the one received before, 15 for the one after.
        assert round((old.hold_until - old.created_at) / dt.timedelta(minutes=1)) == 60
        assert round((new.hold_until - new.created_at) / dt.timedelta(minutes=1)) == 15
        old_cost, _ = await charging.cost_for(s, old, f.EUR)
        new_cost, _ = await charging.cost_for(s, new, f.EUR)
    assert (old_cost, new_cost) == (Decimal("1.00"), Decimal("2.00"))
    audit = await call(client, "GET", "/api/v1/events", admin, None)
    mine = [e for e in audit["items"] if e["subject_type"] == "printer"]
    assert mine[0]["reason"] == "updated" and mine[0]["actor"].startswith("api:admin:")
    data = mine[0]["data"]
    assert [Decimal(v) for v in data["cost_mono"]] == [Decimal("0.10"), Decimal("0.20")]
    assert data["hold_expiry_mins"] == [60, 15]
    by_actor = await call(
        client, "GET", f"/api/v1/events?actor={mine[0]['actor']}&subject=printer:pp-hold", admin
    )
    assert [e["id"] for e in by_actor["items"]] == [mine[0]["id"]]


@pytest.mark.parametrize(("action", "status"), [("disable", 503), ("delete", 404)])
async def test_a_disabled_or_deleted_printer_at_intake(
    kit: tuple[Client, Path],  # noqa: F811
    sessionmaker: Sessions,
    action: str,
    status: int,
) -> None:
    import base64
    import json
    import uuid

    import aiohttp

    from proxy.devkit.documents import make_pdf
    from proxy.pipeline.intake import META_HEADER

    client, root = kit
    admin = await _world(sessionmaker)
    assert (await send_job(root, "pp-hold", "alice", 1))["status"] == "held"
    if action == "disable":
        await call(client, "PATCH", "/api/v1/printers/pp-hold", admin, {"enabled": False})
    else:
        async with sessionmaker() as s, s.begin():
            await printers.delete_printer(s, "pp-hold", actor="test")
    pdf = make_pdf(root / "one.pdf", 1).read_bytes()
    meta = {"printer": "pp-hold", "user": "alice", "title": "t", "job_uuid": str(uuid.uuid4())}
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(root / "i.sock"))) as s,
        s.post("http://intake/intake/v1/jobs", data=pdf, headers={META_HEADER: header}) as resp,
    ):
        assert resp.status == status, await resp.text()
