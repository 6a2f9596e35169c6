"""Job control for users and admins (issue 13): ``POST /jobs/{id}/cancel`` of a job in
any state that has not ended, ``POST /jobs/{id}/redirect`` to another proxy printer, and
``proxyprint job list|cancel|redirect``. Real private cupsd, real ippeveprinter (held:
a slow printer), our backend following direct jobs; a dead printer is a port nobody
listens on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from billing.enums import PrintStatus
from billing.models import Event, PrintOut
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack
from proxy.keys import SESSIONS
from proxy.targets.base import IppJobState
from tests.fixtures_cups import free_tcp_port, unique

pytestmark = pytest.mark.cups

S = PrintStatus
J = IppJobState
ENDED = (J.COMPLETED, J.CANCELED, J.ABORTED)


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        await svc.add_users("alice", "bob", "carol", delegate=True)  # they delegate
        yield svc


@pytest.fixture
def slow_printer(ippeve_printer: IppEvePrinter) -> Iterator[IppEvePrinter]:
    """The session's printer, "printing" every job until ``release()``."""
    ippeve_printer.hold()
    yield ippeve_printer
    ippeve_printer.release()


def dead_printer() -> str:
    """A printer nobody answers for: dispatch keeps retrying, the job stays pending."""
    return f"ipp://127.0.0.1:{free_tcp_port()}/ipp/print"


class Api:
    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack

    async def post(self, path: str, token: str, json: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(self.stack.base_url) as s,
            s.post(f"/api/v1{path}", json=json, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.json()

    async def balances(self) -> dict[str, str]:
        token = await self.stack.token("admin")
        async with (
            aiohttp.ClientSession(self.stack.base_url) as s,
            s.get("/api/v1/accounts?type=user", headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            body = await r.json()
        return {a["name"]: a["balance"] for a in body["items"]}


@pytest.fixture
def api(stack: ServiceStack) -> Api:
    return Api(stack)


async def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _cups_ended(cupsd: PrivateCupsd, job: int) -> J:
    async def check() -> J | None:
        state = J(int((await asyncio.to_thread(cupsd.job_attributes, job))["job-state"]))
        return state if state in ENDED else None

    ended: J = await _wait(check, f"CUPS job {job} ended")
    return ended


async def _retrying(stack: ServiceStack, queue: str, job: int) -> PrintOut:
    """The print-out once dispatch tried its dead printer (a positive sign it ran)."""

    async def check() -> PrintOut | None:
        po = await stack.print_out_for(queue, job)
        retrying = po is not None and "retrying" in (po.status_message or "")
        return po if retrying else None

    po: PrintOut = await _wait(check, f"dispatch of {queue}-{job} to retry")
    assert po.status == S.PENDING and po.dispatched_at is None
    return po


async def _events(stack: ServiceStack, po_id: int) -> list[Event]:
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session:
        rows = await session.scalars(
            select(Event)
            .where(Event.subject_type == "print_out", Event.subject_id == str(po_id))
            .order_by(Event.id)
        )
        return list(rows)


async def _docs_titled(printer: IppEvePrinter, title: str) -> int:
    return sum(1 for d in await asyncio.to_thread(printer.documents) if d.title == title)


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_a_pending_job_at_a_dead_printer(
    stack: ServiceStack, api: Api, private_cupsd: PrivateCupsd, short_tmp: Path
) -> None:
    queue = unique("pp-dead")
    await stack.add_printer(queue, target=dead_printer(), mode="direct", cost_mono="0.10")
    job = await stack.lp(queue, make_pdf(short_tmp / "p.pdf", 2), user="alice")
    po = await _retrying(stack, queue, job)
    alice, bob = await stack.token("user", user="alice"), await stack.token("user", user="bob")
    status, body = await api.post(f"/jobs/{po.id}/cancel", bob)
    assert status == 404, body  # bob's token does not see alice's job
    status, body = await api.post(f"/jobs/{po.id}/cancel", alice)
    assert status == 200, body
    assert body["job"]["status"] == "canceled"
    ended = await stack.wait_print_out(queue, job)
    assert ended.status == S.CANCELED and ended.status_reason == "canceled-by-user"
    assert ended.target_job_id is None and ended.charged_at is None
    # The backend following it tells CUPS: the job did not complete.
    assert await _cups_ended(private_cupsd, job) != J.COMPLETED
    assert set((await api.balances()).values()) == {"0.00"}
    status, body = await api.post(f"/jobs/{po.id}/cancel", alice)
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_cancel_a_held_job(stack: ServiceStack, api: Api, short_tmp: Path) -> None:
    queue = unique("pp-hold")
    await stack.add_printer(queue, target=dead_printer(), mode="hold")
    job = await stack.lp(queue, make_pdf(short_tmp / "h.pdf", 1), user="carol")
    po = await stack.wait_print_out(queue, job, {S.HELD})
    for role in ("ticket-operator", "reader", "accounts-editor"):
        status, _ = await api.post(f"/jobs/{po.id}/cancel", await stack.token(role))
        assert status == 403, role
    status, body = await api.post(f"/jobs/{po.id}/cancel", await stack.token("admin"))
    assert status == 200 and body["job"]["status"] == "canceled", body
    ended = await stack.wait_print_out(queue, job)
    assert ended.status_reason == "canceled-while-held" and ended.charged_at is None


async def test_cancel_a_dispatched_job_cancels_it_at_the_printer(
    stack: ServiceStack,
    api: Api,
    private_cupsd: PrivateCupsd,
    slow_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = unique("pp-slow")
    await stack.add_printer(queue, target=slow_printer.uri, mode="direct", cost_mono="0.10")
    job = await stack.lp(
        queue, make_pdf(short_tmp / "d.pdf", 3), user="carol", options={"delegators": "alice"}
    )
    po = await stack.wait_print_out(queue, job, {S.PROCESSING})
    assert po.target_job_id is not None
    target_job = po.target_job_id
    assert await asyncio.to_thread(slow_printer.job_state, target_job) == J.PROCESSING
    status, body = await api.post(f"/jobs/{po.id}/cancel", await stack.token("user", user="carol"))
    assert status == 200, body
    ended = await stack.wait_print_out(queue, job)
    assert ended.status == S.CANCELED and ended.status_reason == "canceled-by-user"
    slow_printer.release()  # its current page comes out; then the printer ends the job

    async def canceled_there() -> bool:
        return await asyncio.to_thread(slow_printer.job_state, target_job) == J.CANCELED

    await _wait(canceled_there, "the printer's job canceled")
    assert await _cups_ended(private_cupsd, job) != J.COMPLETED
    # The tracker had its ticks since: the print-out stays canceled, nothing charged.
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session:
        after = await session.get(PrintOut, po.id)
    assert after is not None and after.status == S.CANCELED
    assert after.cost is None and after.charged_at is None
    assert set((await api.balances()).values()) == {"0.00"}


# --- redirect ----------------------------------------------------------------------------


async def test_redirect_a_pending_job_to_another_printer(
    stack: ServiceStack,
    api: Api,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    dead, alive = unique("pp-dead"), unique("pp-alive")
    await stack.add_printer(dead, target=dead_printer(), mode="direct", cost_mono="0.10")
    await stack.add_printer(alive, target=ippeve_printer.uri, mode="direct", cost_mono="0.25")
    title = unique("moved")
    job = await stack.lp(dead, make_pdf(short_tmp / "r.pdf", 2), user="alice", title=title)
    po = await _retrying(stack, dead, job)
    alice = await stack.token("user", user="alice")
    status, body = await api.post(f"/jobs/{po.id}/redirect", alice, {"printer": alive})
    assert status == 200, body
    assert body["new_print_out"] is False and body["job"]["printer"] == alive
    ended = await stack.wait_print_out(dead, job, timeout=60)
    assert ended.status == S.COMPLETED, (ended.status, ended.status_message)
    assert ended.id == po.id and ended.target == ippeve_printer.uri
    assert ended.cost == Decimal("0.50")  # the new printer's rules: 2 pages at 0.25
    redirected = [e for e in await _events(stack, po.id) if e.reason == "redirected"]
    assert len(redirected) == 1 and alive in (redirected[0].message or "")

    async def printed() -> bool:
        return await _docs_titled(ippeve_printer, title) == 1

    await _wait(printed, f"{title!r} printed at {alive}")
    assert (await api.balances())["alice"] == "-0.50"
    # The backend followed the print-out to its new printer: CUPS says completed.
    assert await _cups_ended(private_cupsd, job) == J.COMPLETED


async def test_redirect_a_held_job_to_another_printer(
    stack: ServiceStack, api: Api, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    hold, other_hold, direct = unique("pp-hold"), unique("pp-hold2"), unique("pp-direct")
    await stack.add_printer(hold, target=dead_printer(), mode="hold", cost_mono="0.10")
    await stack.add_printer(other_hold, target=ippeve_printer.uri, mode="hold")
    await stack.add_printer(direct, target=ippeve_printer.uri, mode="direct", cost_mono="0.25")
    title = unique("held-moved")
    job = await stack.lp(hold, make_pdf(short_tmp / "h.pdf", 2), user="bob", title=title)
    po = await stack.wait_print_out(hold, job, {S.HELD})
    bob, admin = await stack.token("user", user="bob"), await stack.token("admin")
    # To another hold printer: still held, for a tap there (its expiry).
    status, body = await api.post(f"/jobs/{po.id}/redirect", bob, {"printer": other_hold})
    assert status == 200, body
    assert body["job"]["status"] == "held" and body["job"]["status_reason"] == "hold"
    # Then by an admin to a direct printer: it prints there at once.
    status, body = await api.post(f"/jobs/{po.id}/redirect", admin, {"printer": direct})
    assert status == 200 and body["job"]["status"] == "pending", body
    ended = await stack.wait_print_out(hold, job, timeout=60)
    assert ended.status == S.COMPLETED and ended.target == ippeve_printer.uri
    assert ended.cost == Decimal("0.50")
    redirected = [e for e in await _events(stack, po.id) if e.reason == "redirected"]
    assert [e.to_status for e in redirected] == ["held", "pending"]
    assert (await api.balances())["bob"] == "-0.50"
    # Ended: no more redirects.
    status, body = await api.post(f"/jobs/{po.id}/redirect", admin, {"printer": hold})
    assert status == 409, body


async def test_redirect_refusals(stack: ServiceStack, api: Api, short_tmp: Path) -> None:
    hold, ticket = unique("pp-hold"), unique("pp-ticket")
    await stack.add_printer(hold, target=dead_printer(), mode="hold")
    await stack.add_printer(ticket, target=dead_printer(), mode="ticket")
    job = await stack.lp(hold, make_pdf(short_tmp / "x.pdf", 1), user="carol")
    po = await stack.wait_print_out(hold, job, {S.HELD})
    carol, bob = await stack.token("user", user="carol"), await stack.token("user", user="bob")
    cases = [
        (bob, {"printer": ticket}, 404),  # not bob's job
        (carol, {"printer": "pp-nowhere"}, 404),
        (carol, {"printer": ticket}, 409),  # tickets are made when a job arrives
        (carol, {"printer": hold}, 409),  # there already
        (carol, {}, 400),
        (carol, {"printer": hold, "x": 1}, 400),
        (await stack.token("ticket-operator"), {"printer": hold}, 403),
    ]
    for token, body, expected in cases:
        status, answer = await api.post(f"/jobs/{po.id}/redirect", token, body)
        assert status == expected, (body, answer)
    after = await stack.wait_print_out(hold, job, {S.HELD})
    assert after.target == po.target and after.printer_id == po.printer_id
    assert [e.reason for e in await _events(stack, po.id) if e.reason == "redirected"] == []


async def test_redirect_a_job_its_printer_rejected(
    stack: ServiceStack,
    api: Api,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    bad, good = unique("pp-bad"), unique("pp-good")
    rejecting = ippeve_printer.uri.replace("/ipp/print", "/ipp/no-such-printer")
    await stack.add_printer(bad, target=rejecting, mode="direct", cost_mono="0.10")
    await stack.add_printer(good, target=ippeve_printer.uri, mode="direct", cost_mono="0.25")
    title = unique("rejected")
    job = await stack.lp(bad, make_pdf(short_tmp / "j.pdf", 2), user="carol", title=title)
    po = await stack.wait_print_out(bad, job)
    assert po.status == S.ABORTED and po.status_reason == "target-rejected", po.status_message
    assert await _cups_ended(private_cupsd, job) == J.ABORTED
    kept = list((stack.root / "spool" / "jobs").iterdir())
    assert len(kept) == 1  # kept for a redirect ([spool] keep_rejected_hours)
    admin = await stack.token("admin")
    status, body = await api.post(f"/jobs/{po.id}/redirect", admin, {"printer": good})
    assert status == 200 and body["new_print_out"] is True, body
    new_id = body["job"]["id"]
    assert stack.app is not None

    async def new_ended() -> PrintOut | None:
        assert stack.app is not None
        async with stack.app[SESSIONS]() as session:
            new = await session.get(PrintOut, new_id)
        return new if new is not None and PrintStatus(new.status).is_final else None

    new = await _wait(new_ended, "the redirected print-out's end", timeout=60)
    assert new.status == S.COMPLETED and new.reprint_of == po.id and new.cost == Decimal("0.50")
    assert await _docs_titled(ippeve_printer, title) == 1
    assert not any(p.exists() for p in kept)  # gone with the end of the new print-out
    async with stack.app[SESSIONS]() as session:
        old = await session.get(PrintOut, po.id)
    assert old is not None and old.status == S.ABORTED and old.charged_at is None
    assert (await api.balances())["carol"] == "-0.50"


# --- the command line ------------------------------------------------------------------------


def _cli(stack: ServiceStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    (stack.root / "cli.toml").write_text("")  # all from the environment
    env.update(
        PROXYPRINT_CONFIG=str(stack.root / "cli.toml"),
        PROXYPRINT_DATABASE_URL=stack.db_url,
        PROXYPRINT_SPOOL_DIR=stack.config.spool.dir,
        PROXYPRINT_CUPS_SERVER=stack.config.cups.server,
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_job_commands(
    stack: ServiceStack,
    api: Api,
    slow_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    dead, slow = unique("pp-dead"), unique("pp-slow")
    await stack.add_printer(dead, target=dead_printer(), mode="direct")
    await stack.add_printer(slow, target=slow_printer.uri, mode="direct", cost_mono="0.25")
    pending_job = await stack.lp(dead, make_pdf(short_tmp / "a.pdf", 2), user="alice")
    pending = await _retrying(stack, dead, pending_job)
    printing_job = await stack.lp(slow, make_pdf(short_tmp / "b.pdf", 1), user="bob")
    printing = await stack.wait_print_out(slow, printing_job, {S.PROCESSING})
    assert printing.target_job_id is not None

    listed = await asyncio.to_thread(_cli, stack, "job", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line for line in listed.stdout.splitlines() if "\t" in line}
    assert "pending" in rows[str(pending.id)] and "processing" in rows[str(printing.id)]
    mine = await asyncio.to_thread(_cli, stack, "job", "list", "--user", "bob")
    assert str(pending.id) not in {line.split("\t")[0] for line in mine.stdout.splitlines()}

    canceled = await asyncio.to_thread(_cli, stack, "job", "cancel", str(printing.id))
    assert canceled.returncode == 0, canceled.stderr
    ended = await stack.wait_print_out(slow, printing_job)
    assert ended.status == S.CANCELED and ended.charged_at is None
    assert ended.status_reason == "canceled-by-user"
    target_job = printing.target_job_id
    slow_printer.release()

    async def canceled_there() -> bool:
        return await asyncio.to_thread(slow_printer.job_state, target_job) == J.CANCELED

    await _wait(canceled_there, "the printer's job canceled by the CLI")

    moved = await asyncio.to_thread(
        _cli, stack, "job", "redirect", str(pending.id), "--printer", slow
    )
    assert moved.returncode == 0, moved.stderr
    done = await stack.wait_print_out(dead, pending_job, timeout=60)
    assert done.status == S.COMPLETED and done.target == slow_printer.uri
    assert done.cost == Decimal("0.50")

    again = await asyncio.to_thread(_cli, stack, "job", "cancel", str(done.id))
    assert again.returncode == 2 and "already ended" in again.stderr
    bad = await asyncio.to_thread(_cli, stack, "job", "list", "--status", "nope")
    assert bad.returncode == 2 and "unknown status" in bad.stderr


# --- authenticated direct print (--require-tap) -------------------------------------------


async def _tap(stack: ServiceStack, reader: str, token: str, card: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(stack.base_url) as s,
        s.post(
            f"/api/v1/readers/{reader}/tap",
            json={"card": card},
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        return r.status, await r.json()


async def _cups_message(cupsd: PrivateCupsd, job: int, needle: str) -> str:
    async def check() -> str | None:
        attrs = await asyncio.to_thread(cupsd.job_attributes, job)
        message = str(attrs.get("job-printer-state-message", ""))
        return message if needle in message else None

    found: str = await _wait(check, f"{needle!r} in CUPS job {job}'s state message")
    return found


async def test_require_tap_prints_when_its_owner_taps(
    stack: ServiceStack,
    api: Api,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue, reader = unique("pp-auth"), unique("lobby")
    await stack.add_printer(
        queue, target=ippeve_printer.uri, mode="direct", cost_mono="0.10", require_tap=True
    )
    token = await stack.add_reader(reader, [queue])
    await stack.add_card("carol", "04:c4:c4:c4")
    await stack.add_card("bob", "04:b0:b0:b0")
    title = unique("tapped")
    job = await stack.lp(queue, make_pdf(short_tmp / "t.pdf", 2), user="carol", title=title)
    po = await stack.wait_print_out(queue, job, {S.HELD})
    assert po.status_reason == "awaiting-tap" and po.mode == "direct"
    assert po.status_message == f"tap your card at {reader} within 60 s"
    assert po.hold_until is not None and po.target_job_id is None
    # The backend stays with the job and tells the user what it waits for.
    await _cups_message(private_cupsd, job, f"Tap your card at {reader} within 60 s")
    assert J(int((await asyncio.to_thread(private_cupsd.job_attributes, job))["job-state"])) in (
        J.PROCESSING,
        J.PENDING,
    )
    # Another user's tap releases nothing of carol's.
    status, body = await _tap(stack, reader, token, "04b0b0b0")
    assert status == 200 and body["released"] == [], body
    status, body = await _tap(stack, reader, token, "04c4c4c4")
    assert status == 200 and [r["id"] for r in body["released"]] == [po.id], body
    ended = await stack.wait_print_out(queue, job, timeout=60)
    assert ended.status == S.COMPLETED and ended.cost == Decimal("0.20")
    assert await _cups_ended(private_cupsd, job) == J.COMPLETED
    assert await _docs_titled(ippeve_printer, title) == 1


async def test_require_tap_cancels_when_nobody_taps(
    stack: ServiceStack,
    api: Api,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = unique("pp-auth")
    await stack.add_printer(
        queue,
        target=ippeve_printer.uri,
        mode="direct",
        cost_mono="0.10",
        require_tap=True,
        tap_window_secs=2,
    )
    title = unique("untapped")
    job = await stack.lp(queue, make_pdf(short_tmp / "u.pdf", 1), user="alice", title=title)
    po = await stack.wait_print_out(queue, job, {S.HELD})
    assert po.status_message == "tap your card at a card reader of this printer within 2 s"
    ended = await stack.wait_print_out(queue, job, timeout=30)
    assert ended.status == S.CANCELED and ended.status_reason == "not-authenticated"
    assert ended.charged_at is None and ended.target_job_id is None
    assert await _cups_ended(private_cupsd, job) == J.CANCELED
    assert await _docs_titled(ippeve_printer, title) == 0
    assert set((await api.balances()).values()) == {"0.00"}


async def test_require_tap_is_for_direct_printers(stack: ServiceStack) -> None:
    from proxy.exceptions import BadRequest

    with pytest.raises(BadRequest, match="direct printers"):
        await stack.add_printer(
            unique("pp-x"), target=dead_printer(), mode="hold", require_tap=True
        )
    with pytest.raises(BadRequest, match="tap window"):
        await stack.add_printer(unique("pp-y"), target=dead_printer(), tap_window_secs=0)
