"""PaperCut-managed printing end to end (SavaPage A.3.2 and A.3.3), with the PaperCut
simulator, its CUPS backend in the private cupsd, and the service in-process."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from billing.enums import PrintStatus
from billing.papercut import printlog
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.papercut.simulator import PaperCutSimulator, install_papercut_backend
from proxy.devkit.stack import ServiceStack
from proxy.keys import PRINTLOG, SESSIONS
from proxy.pipeline.papercut import monitor_tick

pytestmark = pytest.mark.cups
S = PrintStatus
SERVER = "papercut"
CLEARING = "proxyprint-clearing"  # [papercut] clearing_account's default


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def sim(short_tmp: Path, private_cupsd: PrivateCupsd) -> AsyncIterator[PaperCutSimulator]:
    db = short_tmp / "papercut.db"
    install_papercut_backend(private_cupsd.serverbin, db)
    async with PaperCutSimulator(db, token="secret-token") as simulator:
        for user in ("alice", "bob", "carol"):
            simulator.add_user(user, balance=Decimal("10.00"))
        simulator.add_shared_account("ProjectX")
        simulator.add_shared_account(CLEARING)
        yield simulator


@pytest.fixture
async def stack(
    private_cupsd: PrivateCupsd, short_tmp: Path, sim: PaperCutSimulator
) -> AsyncIterator[ServiceStack]:
    extra = {"papercut": {"url": sim.url, "token": "secret-token", "db_url": sim.db_url}}
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra=extra) as svc:
        await svc.add_group("sales")
        await svc.add_users("alice", "bob", "carol", delegate=True)  # they delegate
        await svc.add_shared_account("ProjectX")
        yield svc


async def _papercut_queue(
    stack: ServiceStack,
    sim: PaperCutSimulator,
    *,
    hold: bool,
    cost: str = "0.15",
    charge: str | None = CLEARING,
) -> str:
    """A CUPS queue managed by (simulated) PaperCut, charging ``charge`` (None: the
    printing user's personal account); returns its name."""
    queue = _unique("pc-hold" if hold else "pc-direct")
    sim.add_printer(
        SERVER, queue, cost_mono=Decimal(cost), hold_release=hold, charge_account=charge
    )
    await asyncio.to_thread(stack.cupsd.add_queue, queue, sim.device_uri(queue, server=SERVER))
    return queue


async def _api(stack: ServiceStack, path: str, method: str = "GET", json: Any = None) -> Any:
    token = await stack.token("admin")
    async with (
        aiohttp.ClientSession(stack.base_url) as s,
        s.request(method, path, json=json, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status < 300, await r.text()
        return await r.json()


async def _wait_adjustments(sim: PaperCutSimulator, marker_text: str, count: int) -> list[Any]:
    for _ in range(200):
        found = sim.adjustments(comment_contains=marker_text)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(found)} of {count} adjustments for {marker_text!r}")


async def test_delegated_print_to_papercut_hold_queue_completes_and_charges(
    stack: ServiceStack, sim: PaperCutSimulator, short_tmp: Path
) -> None:
    queue = await _papercut_queue(stack, sim, hold=True)
    proxy = _unique("pp-pc")
    await stack.add_printer(proxy, target=f"cups://{queue}", mode="direct", papercut=True)
    job = await stack.lp(
        proxy,
        make_pdf(short_tmp / "pc.pdf", 2),
        user="carol",
        title="budget.pdf",
        options={
            "delegators": "alice,bob:2",
            "delegator-groups": "sales",
            "shared-accounts": "ProjectX",
        },
    )
    po = await stack.wait_print_out(proxy, job, {S.PENDING_EXTERNAL})
    assert po.document_name and po.document_name.startswith("budget.pdf.proxyprint.")
    detail = await _api(stack, f"/api/v1/printouts/{po.id}")
    assert detail["status"] == "pending_external" and detail["cost"] is None
    assert {t["status"] for t in detail["transactions"]} == {"pending_external"}
    assert {t["amount"] for t in detail["transactions"]} == {"0.00"}

    # PaperCut holds it until the operator releases it.
    for _ in range(100):
        if [r for r in sim.held_jobs() if r.document_name == po.document_name]:
            break
        await asyncio.sleep(0.05)
    assert sim.release(po.document_name)
    po = await stack.wait_print_out(proxy, job)
    assert po.status == S.COMPLETED
    detail = await _api(stack, f"/api/v1/printouts/{po.id}")
    # PaperCut's cost: 2 pages x 5 copies x 0.15 = 1.50, split 1:2:1:1.
    assert detail["cost"] == "1.50"
    amounts = {t["account"]["name"]: t["amount"] for t in detail["transactions"]}
    assert amounts == {"alice": "0.30", "bob": "0.60", "sales": "0.30", "ProjectX": "0.30"}
    adjustments = await _wait_adjustments(sim, f"print-out {po.id}:", 5)
    await asyncio.sleep(0.5)  # nothing more arrives
    adjustments = sim.adjustments(comment_contains=f"print-out {po.id}:")
    assert sorted(Decimal(a.amount) for a in adjustments) == [
        Decimal(x) for x in ("-0.60", "-0.30", "-0.30", "-0.30", "1.50")
    ]
    assert sim.balance("alice") == Decimal("9.70")
    assert sim.balance("bob") == Decimal("9.40")
    assert sim.balance("carol") == Decimal("10.00")  # PaperCut charged the clearing account
    assert sim.shared_balance(CLEARING) == 0  # ... and proxyprint credited it back
    assert sim.shared_balance("ProjectX") == Decimal("-0.30")
    assert sim.shared_balance("sales") == Decimal("-0.30")


@pytest.mark.parametrize("how", ["papercut-cancel", "expire", "cups-cancel"])
async def test_canceled_or_expired_papercut_job_charges_nothing(
    stack: ServiceStack, sim: PaperCutSimulator, short_tmp: Path, how: str
) -> None:
    queue = await _papercut_queue(stack, sim, hold=True)
    proxy = _unique("pp-pc")
    await stack.add_printer(proxy, target=f"cups://{queue}", mode="direct", papercut=True)
    if how == "cups-cancel":
        # The PaperCut queue is paused: the job waits in CUPS, where an operator cancels it.
        await asyncio.to_thread(
            subprocess.run, ["cupsdisable", queue], env=stack.cupsd.env(), check=True
        )
    job = await stack.lp(
        proxy, make_pdf(short_tmp / "x.pdf", 1), user="carol", options={"delegators": "alice"}
    )
    po = await stack.wait_print_out(proxy, job, {S.PENDING_EXTERNAL})
    assert po.document_name and po.target_job_id
    if how == "cups-cancel":
        await asyncio.to_thread(stack.cupsd.cancel, po.target_job_id)
    else:
        for _ in range(100):
            if [r for r in sim.held_jobs() if r.document_name == po.document_name]:
                break
            await asyncio.sleep(0.05)
        done = (
            sim.cancel(po.document_name)
            if how == "papercut-cancel"
            else sim.expire(po.document_name)
        )
        assert done
    po = await stack.wait_print_out(proxy, job)
    assert po.status == S.CANCELED
    expected = {
        "papercut-cancel": "canceled-in-papercut",
        "expire": "expired",
        "cups-cancel": "canceled-in-cups",
    }[how]
    assert po.status_reason == expected
    detail = await _api(stack, f"/api/v1/printouts/{po.id}")
    assert detail["cost"] is None
    assert [(t["amount"], t["status"]) for t in detail["transactions"]] == [("0.00", "canceled")]
    await asyncio.sleep(0.3)
    assert sim.adjustments(comment_contains=f"print-out {po.id}:") == []
    assert sim.balance("alice") == Decimal("10.00")


async def test_job_ticket_to_papercut_is_charged_the_ticket_cost(
    stack: ServiceStack, sim: PaperCutSimulator, short_tmp: Path
) -> None:
    queue = await _papercut_queue(stack, sim, hold=False, cost="0.99")
    ticket_printer = _unique("pp-pct")
    await stack.add_printer(
        ticket_printer,
        target=f"cups://{queue}",
        mode="ticket",
        papercut=True,
        cost_mono="0.20",
    )
    job = await stack.lp(
        ticket_printer,
        make_pdf(short_tmp / "t.pdf", 3),
        user="carol",
        options={"delegators": "alice,bob"},
    )
    po = await stack.wait_print_out(ticket_printer, job, {S.HELD})
    operator = await stack.token("ticket-operator")
    async with (
        aiohttp.ClientSession(stack.base_url) as s,
        s.post(
            f"/api/v1/tickets/{po.id}/release", headers={"Authorization": f"Bearer {operator}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
    po = await stack.wait_print_out(ticket_printer, job)
    assert po.status == S.COMPLETED
    detail = await _api(stack, f"/api/v1/printouts/{po.id}")
    assert detail["cost"] == "1.20"  # the ticket cost 3 x 2 x 0.20, not PaperCut's 5.94
    assert [t["amount"] for t in detail["transactions"]] == ["0.60", "0.60"]
    adjustments = await _wait_adjustments(sim, f"print-out {po.id}:", 3)
    # PaperCut charged the clearing account its own 5.94: credited back in full.
    assert sorted(Decimal(a.amount) for a in adjustments) == [
        Decimal("-0.60"),
        Decimal("-0.60"),
        Decimal("5.94"),
    ]
    assert sim.shared_balance(CLEARING) == 0
    assert sim.balance("carol") == Decimal("10.00")


async def test_monitor_reads_the_print_log_once_per_tick_for_many_jobs(
    stack: ServiceStack, sim: PaperCutSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 pending PaperCut jobs cost one print-log query per tick (not one each)."""
    from billing.db import utcnow
    from billing.models import Printer, PrintIn, PrintOut

    await stack.add_printer("pp-many", target="cups://nowhere", papercut=True)
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session, session.begin():
        printer_id = await session.scalar(
            Printer.__table__.select()
            .with_only_columns(Printer.id)
            .where(Printer.name == "pp-many")
        )
        assert printer_id is not None
        pin = PrintIn(
            printer_id=printer_id, delegate="carol", title="t", sha256="0" * 64, size=1, pages=1
        )
        session.add(pin)
        await session.flush()
        now = utcnow()
        session.add_all(
            PrintOut(
                print_in_id=pin.id,
                printer_id=printer_id,
                mode="direct",
                target="cups://nowhere",
                papercut=True,
                status=int(S.PENDING_EXTERNAL),
                delegate="carol",
                title="t",
                pages=1,
                copies=1,
                currency="EUR",
                document_name=f"t.proxyprint.{i:032x}",
                dispatched_at=now,
            )
            for i in range(1000)
        )
    # The service's own monitor loop ticks too: fetches are serialised so the
    # query count taken around this task's fetch is this tick's alone.
    real_fetch = printlog.fetch
    lock = asyncio.Lock()
    me = asyncio.current_task()
    ours: list[tuple[int, int]] = []

    async def serialised(engine: Any, names: Any) -> Any:
        async with lock:
            before = printlog.QUERIES["fetch"]
            rows = await real_fetch(engine, names)
            if asyncio.current_task() is me:
                ours.append((len(names), printlog.QUERIES["fetch"] - before))
            return rows

    monkeypatch.setattr(printlog, "fetch", serialised)
    await monitor_tick(stack.app)
    assert ours == [(1000, 1)]
    assert stack.app[PRINTLOG] is not None


async def test_no_double_charge_check_fix_then_delegated_print(
    stack: ServiceStack, sim: PaperCutSimulator, short_tmp: Path
) -> None:
    """The queue first charges the printing user (PaperCut's default): ``papercut check``
    reports the double charge, ``fix`` points it at the clearing account; then carol
    prints for alice:1 bob:1 (a 1-page document, one copy each: 2 pages at 0.15) and
    only alice and bob pay."""
    from billing.papercut import checks
    from billing.papercut.client import PaperCutClient

    queue = await _papercut_queue(stack, sim, hold=False, charge=None)
    async with PaperCutClient(sim.url, "secret-token") as client:
        problems = await checks.check(client, clearing_account=CLEARING, managed={queue})
        [double] = [p for p in problems if p.kind is checks.ProblemKind.DOUBLE_CHARGE]
        assert double.name == f"{SERVER}\\{queue}" and double.fixable
        assert "personal account" in double.message and "double charge" in double.message
        report = await checks.fix(client, clearing_account=CLEARING, managed={queue})
        assert double in report.fixed and report.clean
        assert await checks.check(client, clearing_account=CLEARING, managed={queue}) == []

    proxy = _unique("pp-pc")
    await stack.add_printer(proxy, target=f"cups://{queue}", mode="direct", papercut=True)
    before = {u: sim.balance(u) for u in ("alice", "bob", "carol")}
    clearing_before = sim.shared_balance(CLEARING)
    total_before = sim.total_balance()
    job = await stack.lp(
        proxy,
        make_pdf(short_tmp / "one.pdf", 1),
        user="carol",
        title="two-pages.pdf",
        options={"delegators": "alice:1,bob:1"},
    )
    po = await stack.wait_print_out(proxy, job)
    assert po.status == S.COMPLETED
    [row] = sim.usage_rows(po.document_name)
    assert row.printed and row.total_pages == 2 and row.usage_cost == Decimal("0.30")
    assert row.charged_to == CLEARING
    await _wait_adjustments(sim, f"print-out {po.id}:", 3)
    await asyncio.sleep(0.5)  # nothing more arrives
    assert len(sim.adjustments(comment_contains=f"print-out {po.id}:")) == 3
    assert sim.balance("carol") == before["carol"]
    assert sim.balance("alice") == before["alice"] - Decimal("0.15")
    assert sim.balance("bob") == before["bob"] - Decimal("0.15")
    assert sim.shared_balance(CLEARING) == clearing_before
    assert sim.total_balance() - total_before == Decimal("-0.30")


async def test_a_long_hold_is_not_flagged_missing_while_papercut_holds_it(
    private_cupsd: PrivateCupsd, short_tmp: Path, sim: PaperCutSimulator
) -> None:
    """With ``missing_after_mins`` 0 a job PaperCut has not logged is flagged at once; a
    job PaperCut holds (its row says so) is waited on, however long the hold."""
    from billing.enums import StatusReason

    extra = {
        "papercut": {
            "url": sim.url,
            "token": "secret-token",
            "db_url": sim.db_url,
            "missing_after_mins": 0,
            # No hold timeout known: a held row is waited on for ever, an unlogged job is
            # missing after missing_after_mins alone (printlog.WAIT_TABLE).
            "hold_timeout_mins": 0,
        }
    }
    async with ServiceStack(private_cupsd, short_tmp / "svc-hold", extra=extra) as stack:
        await stack.add_users("alice", "carol", delegate=True)
        held_queue = await _papercut_queue(stack, sim, hold=True)
        silent_queue = await _papercut_queue(stack, sim, hold=False)
        # The silent queue is paused: its job waits in CUPS, PaperCut never logs it.
        await asyncio.to_thread(
            subprocess.run, ["cupsdisable", silent_queue], env=stack.cupsd.env(), check=True
        )
        for proxy, queue in (("pp-held", held_queue), ("pp-silent", silent_queue)):
            await stack.add_printer(proxy, target=f"cups://{queue}", papercut=True)
        pdf = make_pdf(short_tmp / "h.pdf", 1)
        held_job = await stack.lp("pp-held", pdf, user="carol", options={"delegators": "alice"})
        silent_job = await stack.lp("pp-silent", pdf, user="carol")
        held = await stack.wait_print_out("pp-held", held_job, {S.PENDING_EXTERNAL})
        await stack.wait_print_out("pp-silent", silent_job, {S.PENDING_EXTERNAL})
        for _ in range(200):
            if [r for r in sim.held_jobs() if r.document_name == held.document_name]:
                break
            await asyncio.sleep(0.05)
        assert stack.app is not None
        # The positive sign that the monitor ran with the rule: the unlogged job is flagged.
        for _ in range(200):
            await monitor_tick(stack.app)
            silent = await stack.print_out_for("pp-silent", silent_job)
            if silent is not None and silent.status_reason == StatusReason.NOT_IN_PRINT_LOG:
                break
            await asyncio.sleep(0.05)
        assert silent is not None and silent.status_reason == StatusReason.NOT_IN_PRINT_LOG
        still = await stack.print_out_for("pp-held", held_job)
        assert still is not None and still.status == S.PENDING_EXTERNAL
        assert still.status_reason != StatusReason.NOT_IN_PRINT_LOG
        # The hold ends when PaperCut releases it.
        assert held.document_name and sim.release(held.document_name)
        done = await stack.wait_print_out("pp-held", held_job)
        assert done.status == S.COMPLETED
