"""Hold/release, expiry, job tickets and registered delegations through the private cupsd
(SavaPage A.3.1 scenarios 3-5)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from billing.db import utcnow
from billing.enums import PrintStatus
from billing.models import PrintOut
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack, amounts_sum
from proxy.keys import SESSIONS, WAKE

pytestmark = pytest.mark.cups
S = PrintStatus


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        await svc.add_users("alice", "bob", "carol", "dave", delegate=True)  # they delegate
        await svc.add_shared_account("ProjectX")
        yield svc


class Api:
    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack

    async def call(self, method: str, path: str, token: str, json: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(self.stack.base_url) as s,
            s.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.json()


@pytest.fixture
def api(stack: ServiceStack) -> Api:
    return Api(stack)


async def _docs_named(printer: IppEvePrinter, title: str) -> int:
    return len([d for d in printer.documents() if d.title == title])


async def test_hold_then_web_release_prints_and_charges(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-hold")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold", cost_mono="0.25")
    title = _unique("held")
    pdf = make_pdf(short_tmp / "h.pdf", 2)
    job = await stack.lp(queue, pdf, user="carol", title=title, options={"delegators": "alice,bob"})
    po = await stack.wait_print_out(queue, job, {S.HELD})
    await asyncio.sleep(0.5)
    assert await _docs_named(ippeve_printer, title) == 0  # nothing reaches the target

    carol = await stack.token("user", user="carol")
    dave = await stack.token("user", user="dave")
    status, body = await api.call("GET", "/api/v1/jobs/held", carol)
    assert status == 200 and [i["id"] for i in body["items"]] == [po.id]
    status, body = await api.call("GET", "/api/v1/jobs/held", dave)
    assert status == 200 and body["items"] == []
    status, _ = await api.call("POST", f"/api/v1/jobs/{po.id}/release", dave)
    assert status == 404  # another user's job is not revealed

    status, body = await api.call("POST", f"/api/v1/jobs/{po.id}/release", carol)
    assert status == 200, body
    status, _ = await api.call("POST", f"/api/v1/jobs/{po.id}/release", carol)
    assert status == 409  # released once
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED
    docs = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, 20.0, where=lambda d: d.title == title
    )
    assert docs[0].read_bytes() == pdf.read_bytes() and docs[0].copies == 2
    admin = await stack.token("admin")
    status, detail = await api.call("GET", f"/api/v1/printouts/{po.id}", admin)
    assert detail["cost"] == "1.00"  # 2 pages x 2 copies x 0.25
    assert [t["amount"] for t in detail["transactions"]] == ["0.50", "0.50"]


async def test_unreleased_hold_expires_without_charge(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-exp")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold", hold_expiry_mins=1)
    job = await stack.lp(queue, make_pdf(short_tmp / "e.pdf", 1), user="carol")
    po = await stack.wait_print_out(queue, job, {S.HELD})
    assert po.hold_until is not None
    assert timedelta(seconds=50) < po.hold_until - po.created_at <= timedelta(minutes=1, seconds=1)
    spool_files = list((stack.root / "spool" / "jobs").iterdir())
    assert spool_files
    # Drive the clock: the hold ran out a second ago.
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(PrintOut)
            .where(PrintOut.id == po.id)
            .values(hold_until=utcnow() - timedelta(seconds=1))
        )
    stack.app[WAKE].wake()
    po = await stack.wait_print_out(queue, job, timeout=20)
    assert po.status == S.CANCELED and po.status_reason == "expired"
    assert po.charged_at is None
    assert not any(p.exists() for p in spool_files)


async def test_cancel_held_job_by_owner(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-hc")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold")
    job = await stack.lp(queue, make_pdf(short_tmp / "c.pdf", 1), user="carol")
    po = await stack.wait_print_out(queue, job, {S.HELD})
    carol = await stack.token("user", user="carol")
    status, body = await api.call("POST", f"/api/v1/jobs/{po.id}/cancel", carol)
    assert status == 200 and body["job"]["status"] == "canceled"
    status, _ = await api.call("POST", f"/api/v1/jobs/{po.id}/cancel", carol)
    assert status == 409


async def test_ticket_released_to_another_printer_charges_ticket_cost(
    stack: ServiceStack,
    api: Api,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    ticket_queue = _unique("pp-ticket")
    other = _unique("pp-other")
    # The ticket printer's target is unreachable: only the release target prints.
    await stack.add_printer(
        ticket_queue, target="ipp://127.0.0.1:9/ipp/print", mode="ticket", cost_mono="0.50"
    )
    await stack.add_printer(other, target=ippeve_printer.uri, mode="direct", cost_mono="0.01")
    title = _unique("ticket")
    job = await stack.lp(
        ticket_queue,
        make_pdf(short_tmp / "t.pdf", 3),
        user="carol",
        title=title,
        options={"delegators": "alice:2", "shared-accounts": "ProjectX"},
    )
    po = await stack.wait_print_out(ticket_queue, job, {S.HELD})
    operator = await stack.token("ticket-operator")
    carol = await stack.token("user", user="carol")

    status, body = await api.call("GET", "/api/v1/tickets", operator)
    assert status == 200
    [ticket] = [t for t in body["items"] if t["id"] == po.id]
    assert ticket["number"].startswith("T-") and ticket["cost"] == "4.50"  # 3 x 3 x 0.50
    status, _ = await api.call("GET", "/api/v1/tickets", carol)
    assert status == 403
    status, _ = await api.call(
        "POST", f"/api/v1/tickets/{po.id}/release", carol, json={"printer": other}
    )
    assert status == 403
    status, body = await api.call(
        "POST", f"/api/v1/tickets/{po.id}/release", operator, json={"printer": other}
    )
    assert status == 200, body
    po = await stack.wait_print_out(ticket_queue, job)
    assert po.status == S.COMPLETED and po.target == ippeve_printer.uri
    assert await _docs_named(ippeve_printer, title) == 1
    admin = await stack.token("admin")
    _, detail = await api.call("GET", f"/api/v1/printouts/{po.id}", admin)
    assert detail["cost"] == "4.50"  # the ticket cost, not the other printer's rules
    amounts = {t["account"]["name"]: t["amount"] for t in detail["transactions"]}
    assert amounts == {"alice": "3.00", "ProjectX": "1.50"}
    assert amounts_sum(amounts.values()) == Decimal("4.50")


async def test_ticket_canceled_by_delegate_is_removed(
    stack: ServiceStack, api: Api, short_tmp: Path
) -> None:
    queue = _unique("pp-tc")
    await stack.add_printer(queue, target="ipp://127.0.0.1:9/ipp/print", mode="ticket")
    job = await stack.lp(queue, make_pdf(short_tmp / "x.pdf", 1), user="carol")
    po = await stack.wait_print_out(queue, job, {S.HELD})
    dave = await stack.token("user", user="dave")
    carol = await stack.token("user", user="carol")
    status, _ = await api.call("POST", f"/api/v1/tickets/{po.id}/cancel", dave)
    assert status == 404
    status, body = await api.call("POST", f"/api/v1/tickets/{po.id}/cancel", carol)
    assert status == 200 and body["ticket"]["status"] == "canceled"
    operator = await stack.token("ticket-operator")
    _, body = await api.call("GET", "/api/v1/tickets", operator)
    assert po.id not in [t["id"] for t in body["items"]]
    assert not list((stack.root / "spool" / "jobs").iterdir())
    admin = await stack.token("admin")
    _, detail = await api.call("GET", f"/api/v1/printouts/{po.id}", admin)
    assert detail["events"][-1]["reason"] == "ticket-canceled"


async def test_registered_delegation_is_used_once(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-deleg")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="direct", cost_mono="0.10")
    carol = await stack.token("user", user="carol")
    status, body = await api.call(
        "POST",
        "/api/v1/delegations",
        carol,
        json={"printer": queue, "delegators": "alice,bob:2"},
    )
    assert status == 201, body
    status, body = await api.call(
        "POST", "/api/v1/delegations", carol, json={"printer": queue, "delegators": "nobody"}
    )
    assert status == 400 and "nobody" in body["error"]["message"]

    first = await stack.lp(queue, make_pdf(short_tmp / "1.pdf", 1), user="carol")
    po1 = await stack.wait_print_out(queue, first)
    second = await stack.lp(queue, make_pdf(short_tmp / "2.pdf", 1), user="carol")
    po2 = await stack.wait_print_out(queue, second)
    admin = await stack.token("admin")
    _, d1 = await api.call("GET", f"/api/v1/printouts/{po1.id}", admin)
    _, d2 = await api.call("GET", f"/api/v1/printouts/{po2.id}", admin)
    assert {t["account"]["name"]: t["weight"] for t in d1["transactions"]} == {"alice": 1, "bob": 2}
    assert [t["account"]["name"] for t in d2["transactions"]] == ["carol"]  # personal print


async def test_nfc_tap_releases_held_jobs_once(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-tap")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold", cost_mono="0.10")
    other = _unique("pp-tap2")
    await stack.add_printer(other, target=ippeve_printer.uri, mode="hold")
    await stack.add_card("carol", "04:A1:B2:C3")
    await stack.add_card("dave", "04:D4:D4:D4")
    reader = _unique("lobby")
    token = await stack.add_reader(reader, [queue])
    token_other = await stack.add_reader(_unique("annex"), [other])
    title = _unique("tap")
    pdf = make_pdf(short_tmp / "tap.pdf", 3)
    job = await stack.lp(
        queue, pdf, user="carol", title=title, options={"delegators": "alice,carol:2"}
    )
    po = await stack.wait_print_out(queue, job, {S.HELD})
    await asyncio.sleep(0.3)
    assert await _docs_named(ippeve_printer, title) == 0

    tap = f"/api/v1/readers/{reader}/tap"
    status, _ = await api.call("POST", tap, token, json={"card": "04d4d4d4"})  # dave's card
    assert status == 200 and _ == {"reader": reader, "card": "04d4d4d4", "released": []}
    status, _ = await api.call("POST", tap, token, json={"card": "01020304"})
    assert status == 404
    status, _ = await api.call("POST", tap, token_other, json={"card": "04a1b2c3"})
    assert status == 403
    async with aiohttp.ClientSession(stack.base_url) as s, s.post(tap, json={"card": "x"}) as r:
        assert r.status == 401
    assert (await stack.print_out_for(queue, job)).status == S.HELD  # type: ignore[union-attr]

    status, body = await api.call("POST", tap, token, json={"card": "04 a1 b2 c3"})
    assert status == 200 and [r["id"] for r in body["released"]] == [po.id]
    status, body = await api.call("POST", tap, token, json={"card": "04A1B2C3"})
    assert status == 200 and body["released"] == []  # nothing new
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED
    docs = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, 20.0, where=lambda d: d.title == title
    )
    assert docs[0].read_bytes() == pdf.read_bytes() and docs[0].copies == 3
    admin = await stack.token("admin")
    _, detail = await api.call("GET", f"/api/v1/printouts/{po.id}", admin)
    assert detail["cost"] == "0.90"
    assert {t["account"]["name"]: t["amount"] for t in detail["transactions"]} == {
        "alice": "0.30",
        "carol": "0.60",
    }
