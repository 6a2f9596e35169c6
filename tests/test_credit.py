"""Credit limits and adjustments through the real app factory and intake (SQLite, PostgreSQL).

A restricted account (``credit_limit``) never goes below -limit by a job: a
direct job is held ``insufficient-balance`` at intake, a hold job is refused
at release, each with a message stating balance, cost and limit; a deposit
(``POST /accounts/{id}/adjustments``) then lets it through. PaperCut-managed
jobs are not checked. Concurrent jobs cannot together pass the limit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import directory, ledger
from billing.enums import AccountType, LedgerKind, PrintStatus, StatusReason
from billing.models import AccountTransaction, Event, LedgerEntry, PrintOut
from proxy import nfc_admin, printers
from proxy.app import create_app
from proxy.config import build_config
from proxy.devkit.documents import make_pdf
from proxy.pipeline.intake import META_HEADER
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def kit(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, sessionmaker: Sessions
) -> tuple[Client, Path]:
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(short_tmp / "spool")},
            "intake": {"socket": str(short_tmp / "i.sock"), "follow": False},
        }
    )
    client = await aiohttp_client(create_app(config, workers=False, intake=True))
    return client, short_tmp


async def send_job(root: Path, printer: str, user: str, pages: int, **extra: Any) -> Any:
    pdf = root / f"doc-{pages}.pdf"
    if not pdf.exists():
        make_pdf(pdf, pages)
    meta = {
        "printer": printer,
        "user": user,
        "title": f"{pages} pages",
        "job_uuid": f"urn:uuid:{uuid.uuid4()}",
        "content_type": "application/pdf",
        **extra,
    }
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(root / "i.sock"))) as s,
        s.post(
            "http://intake/intake/v1/jobs", data=pdf.read_bytes(), headers={META_HEADER: header}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def call(
    client: Client, method: str, path: str, token: str, body: Any = None, *, expect: int = 200
) -> Any:
    async with client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer


async def seed(sessionmaker: Sessions) -> dict[str, Any]:
    """carol: at -9.50 with a credit limit of 10.00; printers at 0.10 a page."""
    async with sessionmaker() as s, s.begin():
        carol = await f.user(s, "carol")
        await f.user(s, "dave")
        for name, mode, papercut in (
            ("pp-direct", "direct", False),
            ("pp-hold", "hold", False),
            ("pp-pc", "direct", True),
        ):
            await printers.add_printer(
                s,
                name,
                target="ipp://127.0.0.1:9/ipp/print",
                mode=mode,
                cost_mono="0.10",
                papercut=papercut,
            )
        await f.topup(s, carol, "-9.50", "seed:carol")
        await directory.edit_account(s, carol, {"credit_limit": Decimal("10.00")}, actor="test")
        tokens = {
            "editor": await f.token(s, "accounts-editor"),
            "admin": await f.token(s, "admin"),
            "carol": await f.token(s, "user", user="carol"),
        }
    return {"carol": carol.id, "tokens": tokens}


async def print_out(sessionmaker: Sessions, po_id: int) -> PrintOut:
    async with sessionmaker() as s:
        found = await s.get(PrintOut, po_id)
        assert found is not None
        return found


async def test_a_direct_job_over_the_limit_is_held_until_a_deposit(
    kit: tuple[Client, Path], sessionmaker: Sessions
) -> None:
    client, root = kit
    world = await seed(sessionmaker)
    tokens, carol = world["tokens"], world["carol"]
    answer = await send_job(root, "pp-direct", "carol", 10)  # 1.00
    assert answer["status"] == "held" and answer["reason"] == "insufficient-balance"
    for text in ("balance -9.50", "costs 1.00", "credit limit 10.00", "carol"):
        assert text in answer["message"], answer["message"]
    po_id = answer["print_out"]
    held = await call(client, "GET", "/api/v1/jobs/held", tokens["carol"])
    assert [j["id"] for j in held["items"]] == [po_id]
    # Still short: release is refused with the same figures, nothing changes.
    refused = await call(
        client, "POST", f"/api/v1/jobs/{po_id}/release", tokens["carol"], expect=409
    )
    assert refused["error"]["code"] == "insufficient-balance"
    assert "balance -9.50" in refused["error"]["message"]
    # A deposit; the same key twice is one entry.
    path = f"/api/v1/accounts/{carol}/adjustments"
    body = {"amount": "5.00", "reason": "cash at the desk", "idempotency_key": "desk-1"}
    first = await call(client, "POST", path, tokens["editor"], body, expect=201)
    again = await call(client, "POST", path, tokens["editor"], body, expect=200)
    assert first["entry"]["id"] == again["entry"]["id"] and again["created"] is False
    assert first["account"]["balance"] == "-4.50" == again["account"]["balance"]
    assert first["entry"]["kind"] == "adjustment" and first["entry"]["comment"] == body["reason"]
    other = dict(body, amount="6.00")
    conflict = await call(client, "POST", path, tokens["editor"], other, expect=409)
    assert "desk-1" in conflict["error"]["message"]
    # Now the release passes, and the job is charged as printed.
    released = await call(client, "POST", f"/api/v1/jobs/{po_id}/release", tokens["carol"])
    assert released["released"] is True
    async with sessionmaker() as s, s.begin():
        po = await s.get(PrintOut, po_id)
        assert po is not None and po.status == PrintStatus.PENDING
        reserved = await s.scalar(
            select(AccountTransaction.reserved).where(AccountTransaction.print_out_id == po_id)
        )
        assert reserved == Decimal("1.00")
        await f.charge(s, po, "1.00")
    async with sessionmaker() as s:
        assert await ledger.balance(s, carol) == Decimal("-5.50")
        adjustments = await s.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.kind == LedgerKind.ADJUSTMENT.value)
        )
        assert adjustments == 1
        reasons = list(
            await s.scalars(
                select(Event.reason).where(
                    Event.subject_type == "account", Event.subject_id == str(carol)
                )
            )
        )
    assert reasons == ["updated", "deposit"]


async def test_a_hold_job_is_refused_at_release_and_at_the_reader(
    kit: tuple[Client, Path], sessionmaker: Sessions
) -> None:
    client, root = kit
    world = await seed(sessionmaker)
    tokens, carol = world["tokens"], world["carol"]
    async with sessionmaker() as s, s.begin():
        await nfc_admin.add_card(s, "carol", "04:01:02:03")
        reader = await nfc_admin.add_reader(s, "lobby", ["pp-hold"])
    answer = await send_job(root, "pp-hold", "carol", 10)
    assert answer["status"] == "held" and answer["reason"] == "hold"  # checked at release
    po_id = answer["print_out"]
    refused = await call(
        client, "POST", f"/api/v1/jobs/{po_id}/release", tokens["carol"], expect=409
    )
    assert "credit limit 10.00" in refused["error"]["message"]
    async with client.post(
        "/api/v1/readers/lobby/tap",
        json={"card": "04:01:02:03"},
        headers={"Authorization": f"Bearer {reader}"},
    ) as resp:
        tapped = await resp.json()
        assert resp.status == 200 and tapped["released"] == []
    async with sessionmaker() as s:
        event = await s.scalar(
            select(Event).where(Event.subject_id == str(po_id), Event.reason == "release-refused")
        )
        assert event is not None and "balance -9.50" in (event.message or "")
    assert (await print_out(sessionmaker, po_id)).status == PrintStatus.HELD
    body = {"amount": "0.50", "reason": "top-up", "idempotency_key": "k"}
    await call(client, "POST", f"/api/v1/accounts/{carol}/adjustments", tokens["editor"], body,
               expect=201)  # fmt: skip
    async with client.post(
        "/api/v1/readers/lobby/tap",
        json={"card": "04:01:02:03"},
        headers={"Authorization": f"Bearer {reader}"},
    ) as resp:
        tapped = await resp.json()
        assert resp.status == 200 and [j["id"] for j in tapped["released"]] == [po_id]


async def test_unrestricted_and_papercut_jobs_are_not_checked(
    kit: tuple[Client, Path], sessionmaker: Sessions
) -> None:
    client, root = kit
    world = await seed(sessionmaker)
    papercut = await send_job(root, "pp-pc", "carol", 50)
    assert papercut["status"] == "pending", papercut
    dave = await send_job(root, "pp-direct", "dave", 50)  # no limit: may go negative
    assert dave["status"] == "pending", dave
    # The limit lifted (null) over the API: carol's next job passes.
    limits = await call(
        client,
        "PATCH",
        f"/api/v1/accounts/{world['carol']}",
        world["tokens"]["editor"],
        {"credit_limit": None},
    )
    assert limits["credit_limit"] is None
    assert (await send_job(root, "pp-direct", "carol", 50))["status"] == "pending"
    refused = await call(
        client,
        "PATCH",
        f"/api/v1/accounts/{world['carol']}",
        world["tokens"]["editor"],
        {"credit_limit": "-1"},
        expect=400,
    )
    assert "credit_limit" in refused["error"]["message"]


async def test_concurrent_jobs_cannot_together_pass_the_limit(
    kit: tuple[Client, Path], sessionmaker: Sessions
) -> None:
    """8 jobs of 0.30 at once on an account at 0.00 with a limit of 1.00: 3 pass."""
    _, root = kit
    async with sessionmaker() as s, s.begin():
        erin = await f.user(s, "erin")
        await printers.add_printer(
            s, "pp-direct", target="ipp://127.0.0.1:9/ipp/print", mode="direct", cost_mono="0.10"
        )
        await directory.edit_account(s, erin, {"credit_limit": Decimal("1.00")}, actor="test")
    make_pdf(root / "doc-3.pdf", 3)
    answers = await asyncio.gather(*(send_job(root, "pp-direct", "erin", 3) for _ in range(8)))
    reasons = sorted(a["reason"] or "passed" for a in answers)
    assert reasons == ["insufficient-balance"] * 5 + ["passed"] * 3, reasons
    async with sessionmaker() as s:
        reserved = await s.scalar(
            select(func.sum(AccountTransaction.reserved)).where(
                AccountTransaction.account_id == erin.id
            )
        )
        held = await s.scalar(
            select(func.count())
            .select_from(PrintOut)
            .where(PrintOut.status_reason == StatusReason.INSUFFICIENT_BALANCE.value)
        )
    assert reserved == Decimal("0.90") and held == 5
    # Charged as printed, the account ends at -0.90: within the limit.
    async with sessionmaker() as s, s.begin():
        passed = list(
            await s.scalars(select(PrintOut).where(PrintOut.status == int(PrintStatus.PENDING)))
        )
        for po in passed:
            await f.charge(s, po, "0.30")
    async with sessionmaker() as s:
        assert await ledger.balance(s, erin.id) == Decimal("-0.90")
        account = await directory.get_account(s, "user:erin")
        assert account.type == AccountType.USER.value
