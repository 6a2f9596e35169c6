"""CUPS sees the truth (issue 13): the backend follows direct jobs to their end, a cancel
in CUPS cancels at the printer, one refused job never stops the queue, a full spool is a
retry. Real private cupsd, real ippeveprinter (held: a slow printer), our backend."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from billing.enums import PrintStatus
from billing.models import Event, Printer, PrintIn, PrintOut
from proxy import cupsadmin
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack
from proxy.exceptions import TargetError
from proxy.keys import SESSIONS
from proxy.targets.base import IppJobState, PrintRequest
from proxy.targets.errors import TargetRequestError
from proxy.targets.ipp import IppTarget
from tests.fixtures_cups import unavailable, unique

pytestmark = pytest.mark.cups

S = PrintStatus
J = IppJobState


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        yield svc


async def _direct(stack: ServiceStack, target: str, **kw: Any) -> str:
    queue = unique("pp-follow")
    await stack.add_printer(queue, target=target, mode="direct", cost_mono="0.10", **kw)
    await stack.add_users("alice", "bob", "carol", delegate=True)  # they delegate
    return queue


def _job(cupsd: PrivateCupsd, job: int) -> dict[str, Any]:
    return cupsd.job_attributes(job)


async def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _cups_state(cupsd: PrivateCupsd, job: int, *states: IppJobState) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        attrs = _job(cupsd, job)
        return attrs if J(int(attrs["job-state"])) in states else None

    try:
        result: dict[str, Any] = await _wait(check, f"CUPS job {job} in {states}")
    except AssertionError:
        raise AssertionError(f"{_job(cupsd, job)}\n{cupsd.error_log[-4000:]}") from None
    return result


def _queue_running(cupsd: PrivateCupsd, queue: str) -> None:
    attrs = cupsadmin.printer_attributes(queue, cups_server=cupsd.server)
    assert attrs["printer-state"] in (3, 4), attrs["printer-state"]  # idle or processing
    reasons = attrs["printer-state-reasons"]
    reasons = reasons if isinstance(reasons, list) else [reasons]
    assert "paused" not in reasons, reasons
    assert attrs["printer-is-accepting-jobs"]


@pytest.fixture
def slow_printer(ippeve_printer: IppEvePrinter) -> Iterator[IppEvePrinter]:
    """The session's printer, "printing" every job until ``release()``."""
    ippeve_printer.hold()
    yield ippeve_printer
    ippeve_printer.release()


async def _balances(stack: ServiceStack) -> dict[str, str]:
    token = await stack.token("admin")
    async with (
        aiohttp.ClientSession(stack.base_url, headers={"Authorization": f"Bearer {token}"}) as api,
        api.get("/api/v1/accounts?type=user") as resp,
    ):
        body = await resp.json()
    return {a["name"]: a["balance"] for a in body["items"]}


async def test_cups_job_processing_until_the_print_out_completes(
    stack: ServiceStack,
    private_cupsd: PrivateCupsd,
    slow_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = await _direct(stack, slow_printer.uri)
    job = await stack.lp(queue, make_pdf(short_tmp / "a.pdf", 2), user="carol")
    po = await stack.wait_print_out(queue, job, {S.PROCESSING}, timeout=30)
    # The printer is printing: CUPS says so too, and shows where.
    await _cups_state(private_cupsd, job, J.PROCESSING)

    def printing() -> bool:
        return "Printing on" in str(_job(private_cupsd, job).get("job-printer-state-message"))

    await _wait(printing, "the backend's INFO 'Printing on ...'")
    await asyncio.sleep(1.0)
    assert J(int(_job(private_cupsd, job)["job-state"])) == J.PROCESSING
    slow_printer.release()
    attrs = await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED
    assert J(int(attrs["job-state"])) == J.COMPLETED
    # Completed in CUPS only once the print-out was.
    assert po.ended_at is not None


async def test_job_aborted_at_the_printer_ends_aborted_in_cups_with_our_reason(
    stack: ServiceStack,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = await _direct(stack, ippeve_printer.uri)
    title = unique("jam")  # only this job takes the fault on the shared printer
    ippeve_printer.abort_next(1, title=title)
    job = await stack.lp(queue, make_pdf(short_tmp / "a.pdf", 1), user="carol", title=title)
    attrs = await _cups_state(private_cupsd, job, J.ABORTED, J.COMPLETED, J.CANCELED)
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.ABORTED
    assert J(int(attrs["job-state"])) == J.ABORTED
    message = str(attrs.get("job-printer-state-message"))
    assert message.startswith("Not printed") and str(po.status_reason) in message, message
    _queue_running(private_cupsd, queue)
    # The next job on the same queue prints.
    nxt = await stack.lp(queue, make_pdf(short_tmp / "b.pdf", 1), user="bob")
    attrs = await _cups_state(private_cupsd, nxt, J.COMPLETED, J.ABORTED, J.CANCELED)
    assert J(int(attrs["job-state"])) == J.COMPLETED


async def test_cancel_in_cups_cancels_at_the_printer_and_charges_nothing(
    stack: ServiceStack,
    private_cupsd: PrivateCupsd,
    slow_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = await _direct(stack, slow_printer.uri)
    job = await stack.lp(
        queue, make_pdf(short_tmp / "c.pdf", 3), user="carol", options={"delegators": "alice"}
    )
    po = await stack.wait_print_out(queue, job, {S.PROCESSING}, timeout=30)
    assert po.target_job_id is not None
    await _cups_state(private_cupsd, job, J.PROCESSING)
    await asyncio.to_thread(private_cupsd.cancel, job)  # `cancel JOBID`
    po = await stack.wait_print_out(queue, job, {S.CANCELED, S.COMPLETED, S.ABORTED})
    assert po.status == S.CANCELED
    assert po.status_reason == "canceled-in-cups"
    # The printer was told: its job ends canceled once its current page is out.
    slow_printer.release()
    target_job = po.target_job_id

    def canceled_there() -> bool:
        return slow_printer.job_state(target_job) == J.CANCELED

    await _wait(canceled_there, "the printer's job canceled")
    assert J(int(_job(private_cupsd, job)["job-state"])) == J.CANCELED
    assert po.cost is None and po.charged_at is None
    assert set((await _balances(stack)).values()) == {"0.00"}
    _queue_running(private_cupsd, queue)


async def test_oversize_job_fails_alone_and_the_next_one_prints(
    private_cupsd: PrivateCupsd, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    extra = {"spool": {"max_job_bytes": 200_000}}
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra=extra) as stack:
        queue = await _direct(stack, ippeve_printer.uri)
        big = short_tmp / "big.txt"
        big.write_bytes(b"x" * 1_000_000)
        first = await stack.lp(queue, big, user="alice")
        attrs = await _cups_state(private_cupsd, first, J.CANCELED, J.ABORTED, J.COMPLETED)
        assert J(int(attrs["job-state"])) == J.CANCELED
        assert "too-large" in str(attrs.get("job-printer-state-message")), attrs
        _queue_running(private_cupsd, queue)
        # The next user's job on the same queue prints at once.
        second = await stack.lp(queue, make_pdf(short_tmp / "ok.pdf", 1), user="bob")
        attrs = await _cups_state(private_cupsd, second, J.COMPLETED, J.ABORTED, J.CANCELED)
        assert J(int(attrs["job-state"])) == J.COMPLETED
        po = await stack.wait_print_out(queue, second)
        assert po.status == S.COMPLETED
        assert await stack.print_out_for(queue, first) is None
        _queue_running(private_cupsd, queue)


@pytest.fixture
def tiny_tmpfs(short_tmp: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a spool disk that really fills up (ENOSPC)."""
    mount = short_tmp / "tiny"
    mount.mkdir()
    if shutil.which("mount") is None:
        unavailable("mount is not installed")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_spool_is_a_retry_and_the_job_prints_once_space_is_freed(
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
    tiny_tmpfs: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    extra = {"spool": {"dir": str(tiny_tmpfs / "spool")}}
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra=extra) as stack:
        queue = await _direct(stack, ippeve_printer.uri)
        filler = tiny_tmpfs / "filler"
        with filler.open("wb") as fh:  # leave less than the job needs
            fh.write(b"\0" * (4 * 1024 * 1024 - 256 * 1024))
        doc = short_tmp / "doc.txt"
        doc.write_bytes(b"hello spool\n" * 100_000)  # 1.2 MB
        caplog.set_level(logging.INFO)

        # The intake's own answer: a JSON 507.
        meta = json.dumps({"printer": queue, "user": "carol", "job_uuid": f"urn:{unique('u')}"})
        conn = aiohttp.UnixConnector(path=stack.intake_socket)
        async with (
            aiohttp.ClientSession(connector=conn) as http,
            http.post(
                "http://intake/intake/v1/jobs",
                data=io.BytesIO(doc.read_bytes()),
                headers={"X-Proxyprint-Meta": base64.b64encode(meta.encode()).decode()},
            ) as resp,
        ):
            assert resp.status == 507
            body = await resp.json()
        assert body["error"]["code"] == "spool-full"
        assert "spool is full" in body["error"]["message"]

        title = unique("full")
        job = await stack.lp(queue, doc, user="carol", title=title)

        def said_full() -> bool:
            message = str(_job(private_cupsd, job).get("job-printer-state-message"))
            return "spool is full" in message

        await _wait(said_full, "CUPS showing 'spool is full'")
        attrs = _job(private_cupsd, job)
        # RETRY: CUPS keeps the job (held until the retry) and the queue runs.
        assert J(int(attrs["job-state"])) in (J.PENDING, J.PENDING_HELD, J.PROCESSING)
        _queue_running(private_cupsd, queue)
        assert await stack.print_out_for(queue, job) is None
        filler.unlink()
        attrs = await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
        assert J(int(attrs["job-state"])) == J.COMPLETED
        po = await stack.wait_print_out(queue, job)
        assert po.status == S.COMPLETED
        docs = ippeve_printer.wait_for_documents(1, 10.0, where=lambda d: d.title == title)
        await asyncio.sleep(0.5)
        assert len([d for d in ippeve_printer.documents() if d.title == title]) == len(docs) == 1
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("proxy")]
    assert not tracebacks, tracebacks
    assert any("spool is full" in r.getMessage() for r in caplog.records)


async def _print_outs_of(stack: ServiceStack, queue: str, cups_job: int) -> list[PrintOut]:
    async with stack.app[SESSIONS]() as session:  # type: ignore[index]
        rows = await session.scalars(
            select(PrintOut)
            .join(PrintIn, PrintIn.id == PrintOut.print_in_id)
            .join(Printer, Printer.id == PrintIn.printer_id)
            .where(Printer.name == queue, PrintIn.cups_job_id == cups_job)
            .order_by(PrintOut.id)
        )
        return list(rows)


async def _events_of(stack: ServiceStack, po_id: int) -> list[Event]:
    async with stack.app[SESSIONS]() as session:  # type: ignore[index]
        rows = await session.scalars(
            select(Event)
            .where(Event.subject_type == "print_out", Event.subject_id == str(po_id))
            .order_by(Event.id)
        )
        return list(rows)


async def test_cups_restart_of_an_ended_job_is_a_reprint_charged_again(
    stack: ServiceStack,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    queue = await _direct(stack, ippeve_printer.uri)
    title = unique("again")
    job = await stack.lp(
        queue, make_pdf(short_tmp / "r.pdf", 2), user="carol", title=title,
        options={"delegators": "alice"},
    )  # fmt: skip
    await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
    assert (await _balances(stack))["alice"] == "-0.20"
    # `lp -i N -H restart`: CUPS sends the kept job again, with its job-uuid.
    restart = await asyncio.to_thread(
        subprocess.run,
        ["lp", "-i", str(job), "-H", "restart"],
        capture_output=True,
        env=private_cupsd.env(),
        timeout=30,
        check=False,
    )
    assert restart.returncode == 0, restart.stderr

    async def two() -> list[PrintOut]:
        outs = await _print_outs_of(stack, queue, job)
        return outs if len(outs) == 2 and PrintStatus(outs[1].status).is_final else []

    deadline = time.monotonic() + 30
    while not (outs := await two()):
        assert time.monotonic() < deadline, await _print_outs_of(stack, queue, job)
        await asyncio.sleep(0.1)
    first, second = outs
    assert first.print_in_id == second.print_in_id
    assert second.reprint_of == first.id
    assert (first.status, second.status) == (S.COMPLETED, S.COMPLETED)
    assert (first.cost, second.cost) == (Decimal("0.20"), Decimal("0.20"))
    assert (await _balances(stack))["alice"] == "-0.40"  # charged again
    assert any(e.reason == "reprinted" for e in await _events_of(stack, first.id))
    assert any(e.reason == "reprint" for e in await _events_of(stack, second.id))
    attrs = await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
    assert J(int(attrs["job-state"])) == J.COMPLETED
    docs = ippeve_printer.wait_for_documents(2, 10.0, where=lambda d: d.title == title)
    assert len(docs) == 2


def _backend_run(
    stack: ServiceStack, queue: str, job_id: int, job_uuid: str, doc: Path
) -> tuple[list[str], dict[str, str]]:
    """The installed backend's command line and environment as cupsd makes them
    for one job of ``queue`` (a raw queue: the file as argv[6]; TMPDIR is
    cupsd's TempDir, where the backend leaves its sent-mark)."""
    backend = stack.cupsd.serverbin / "backend" / "proxyprint"
    args = [str(backend), str(job_id), "carol", "hand-off", "1", f"job-uuid={job_uuid}", str(doc)]
    env = {
        "DEVICE_URI": f"proxyprint:{stack.intake_socket}",
        "PRINTER": queue,
        "CONTENT_TYPE": "application/pdf",
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(doc.parent),
    }
    return args, env


async def test_a_retried_hand_off_is_the_same_print_out(
    stack: ServiceStack, slow_printer: IppEvePrinter, short_tmp: Path
) -> None:
    """The same job-uuid again before its print-out ended (the backend was killed after
    the upload, CUPS retried): nothing new is printed, the backend follows the one job."""
    queue = await _direct(stack, slow_printer.uri)
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    args, env = _backend_run(stack, queue, 77, job_uuid, make_pdf(short_tmp / "h.pdf", 1))
    first = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    po = await stack.wait_print_out(queue, 77, {S.PROCESSING}, timeout=30)
    first.kill()  # SIGKILL: no cancel reaches the service
    first.wait()
    again = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)  # noqa: ASYNC220
    await asyncio.sleep(1.0)
    slow_printer.release()
    _, err = await asyncio.to_thread(again.communicate, timeout=60)
    assert again.returncode == 0, err
    assert "already received" in err
    outs = await _print_outs_of(stack, queue, 77)
    assert [o.id for o in outs] == [po.id]
    assert outs[0].status == S.COMPLETED


async def test_a_hand_off_resent_after_its_print_out_ended_is_not_printed_again(
    stack: ServiceStack, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    """The service recorded a job and died before answering; the other instance
    printed it; CUPS retried the job. The backend's mark (its last attempt got no
    answer) makes the retry a duplicate: printed once. Without the mark, the same
    job-uuid after its end is a reprint (``lp -H restart``)."""
    queue = await _direct(stack, ippeve_printer.uri)
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    args, env = _backend_run(stack, queue, 78, job_uuid, make_pdf(short_tmp / "m.pdf", 1))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    first = await asyncio.to_thread(run)
    assert first.returncode == 0, first.stderr
    [printed] = await _print_outs_of(stack, queue, 78)
    assert printed.status == S.COMPLETED
    mark = Path(env["TMPDIR"]) / f"proxyprint-sent-{job_uuid.rpartition(':')[2]}"
    assert not mark.exists()  # answered: no mark
    mark.touch()  # what a run whose answer never came leaves
    resent = await asyncio.to_thread(run)
    assert resent.returncode == 0, resent.stderr
    assert "already received" in resent.stderr
    assert [o.id for o in await _print_outs_of(stack, queue, 78)] == [printed.id]
    assert not mark.exists()
    restarted = await asyncio.to_thread(run)  # the mark is gone: a reprint
    assert restarted.returncode == 0, restarted.stderr
    outs = await _print_outs_of(stack, queue, 78)
    assert len(outs) == 2 and outs[1].reprint_of == printed.id


@pytest.mark.parametrize(
    "case",
    [("hold", "Held until released at a card reader"), ("ticket", "waiting for an operator")],
)
async def test_hold_and_ticket_jobs_tell_cups_what_they_wait_for(
    stack: ServiceStack,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
    case: tuple[str, str],
) -> None:
    mode, says = case
    queue = unique(f"pp-{mode}")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode=mode)
    await stack.add_users("carol")
    job = await stack.lp(queue, make_pdf(short_tmp / "h.pdf", 1), user="carol")
    attrs = await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
    assert J(int(attrs["job-state"])) == J.COMPLETED  # the backend's part is done
    po = await stack.wait_print_out(queue, job, {S.HELD})
    log = private_cupsd.error_log
    lines = [ln for ln in log.splitlines() if f"[Job {job}]" in ln and says in ln]
    assert lines, log[-3000:]
    if mode == "ticket":
        assert f"Job ticket {po.ticket_number} waiting for an operator" in lines[0]
    # (cupsd 2.4 clears job-printer-state-message once the CUPS job is completed: the
    # job's log keeps the sentence.)


@pytest.fixture
def own_printer() -> Iterator[IppEvePrinter]:
    """A printer of this test alone: it is killed and restarted."""
    if shutil.which("ippeveprinter") is None:
        unavailable("ippeveprinter is not installed (Debian package cups-ipp-utils)")
    printer = IppEvePrinter()
    try:
        printer.start()
    except (TargetError, OSError) as exc:
        unavailable(f"ippeveprinter did not start: {exc}")
    yield printer
    printer.stop()


async def test_printer_restart_reusing_job_ids_never_completes_a_stale_print_out(
    private_cupsd: PrivateCupsd, own_printer: IppEvePrinter, short_tmp: Path
) -> None:
    extra = {"tracker": {"lost_after_secs": 3}}
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra=extra) as stack:
        queue = await _direct(stack, own_printer.uri)
        own_printer.hold()
        job = await stack.lp(
            queue, make_pdf(short_tmp / "l.pdf", 2), user="carol", options={"delegators": "alice"}
        )
        po = await stack.wait_print_out(queue, job, {S.PROCESSING}, timeout=30)
        assert po.target_job_id is not None
        ours = po.target_job_id
        # The printer dies mid-job and comes back knowing nothing.
        await asyncio.to_thread(own_printer.crash_and_restart)
        own_printer.release()
        # Other jobs, straight to the printer, until its job ids pass ours.
        direct = IppTarget.for_printer(own_printer.uri, timeout=10)
        try:
            for i in range(ours + 1):
                other = make_pdf(short_tmp / f"o{i}.pdf", 1)
                req = PrintRequest(other, "application/pdf", f"other-{i}", "mallory")
                while True:
                    try:
                        submitted = await direct.submit(req)
                        break
                    except TargetRequestError as exc:  # busy: one job at a time
                        assert exc.retryable, exc
                        await asyncio.sleep(0.2)
                assert submitted.job_id == i + 1
        finally:
            await direct.close()
        po = await stack.wait_print_out(queue, job, timeout=30)
        assert po.status == S.ABORTED, (po.status, po.status_reason)
        assert po.status_reason == "lost-at-target"
        assert po.cost is None and po.charged_at is None
        assert set((await _balances(stack)).values()) == {"0.00"}
        events = await _events_of(stack, po.id)
        assert events[-1].reason == "lost-at-target" and events[-1].to_status == "aborted"
        # CUPS shows the truth too: the job aborted, with our reason; the queue runs.
        attrs = await _cups_state(private_cupsd, job, J.ABORTED, J.COMPLETED, J.CANCELED)
        assert J(int(attrs["job-state"])) == J.ABORTED
        assert "lost-at-target" in str(attrs.get("job-printer-state-message"))
        _queue_running(private_cupsd, queue)


async def test_a_direct_job_ends_in_cups_without_waiting_for_the_tracker_tick(
    private_cupsd: PrivateCupsd, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    """Issue #18: the periodic tick is a minute apart here, yet the CUPS job ends as
    soon as the printer is done: the tracker follows a job it just sent on its own,
    and the committed end wakes the backend's long poll."""
    extra = {"tracker": {"interval_secs": 60.0}}
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra=extra) as stack:
        queue = await _direct(stack, ippeve_printer.uri)
        await asyncio.sleep(0.5)  # past the tracker's first (start-up) tick
        started = time.monotonic()
        jobs = [
            await stack.lp(queue, make_pdf(short_tmp / f"e{i}.pdf", 1), user="carol")
            for i in range(3)
        ]  # one queue: cupsd runs them one after another, each backend following its job
        for job in jobs:
            attrs = await _cups_state(private_cupsd, job, J.COMPLETED, J.ABORTED, J.CANCELED)
            assert J(int(attrs["job-state"])) == J.COMPLETED
        elapsed = time.monotonic() - started
        assert elapsed < 30, f"three jobs took {elapsed:.1f} s: the tick, not the follower"
        for job in jobs:
            po = await stack.print_out_for(queue, job)
            assert po is not None and po.status == S.COMPLETED
            events = await _events_of(stack, po.id)
            done = [e for e in events if e.to_status == "completed"]
            assert [e.actor for e in done] == ["tracker"], done
