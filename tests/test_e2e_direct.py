"""The spine end to end: lp -> private cupsd -> our backend -> intake -> target -> tracker
-> charging, for SavaPage A.3.1 scenarios 1 and 2 (non-secure delegated print)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from billing.enums import PrintStatus
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack, amounts_sum
from proxy.targets.base import IppJobState

pytestmark = pytest.mark.cups

S = PrintStatus


@pytest.fixture
async def stack(
    private_cupsd: PrivateCupsd, short_tmp: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        yield svc


@pytest.fixture
async def api(stack: ServiceStack) -> AsyncIterator[aiohttp.ClientSession]:
    token = await stack.token("admin")
    async with aiohttp.ClientSession(
        stack.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as session:
        yield session


async def _get(api: aiohttp.ClientSession, path: str) -> dict[str, object]:
    async with api.get(path) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, object] = await resp.json()
        return body


async def _setup(stack: ServiceStack, queue: str, target: str) -> None:
    await stack.add_printer(queue, target=target, mode="direct", cost_mono="0.10")
    await stack.add_users("alice", "bob", "carol", delegate=True)  # they delegate
    await stack.add_shared_account("ProjectX")


def _unique(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_delegated_print_to_ipp_printer(
    stack: ServiceStack, api: aiohttp.ClientSession, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-direct")
    await _setup(stack, queue, ippeve_printer.uri)
    pdf = make_pdf(short_tmp / "report.pdf", 3)
    title = _unique("report")
    job = await stack.lp(
        queue,
        pdf,
        user="carol",
        title=title,
        options={"delegators": "alice,bob:2", "shared-accounts": "ProjectX"},
    )
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED, po.status_message

    docs = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, 20.0, where=lambda d: d.title == title
    )
    assert docs[0].read_bytes() == pdf.read_bytes()  # byte-identical
    assert docs[0].copies == 4
    assert docs[0].user == "carol"

    detail = await _get(api, f"/api/v1/printouts/{po.id}")
    assert detail["delegate"] == "carol" and detail["pages"] == 3 and detail["copies"] == 4
    assert detail["cost"] == "1.20"  # 3 pages x 4 copies x 0.10
    txns = detail["transactions"]
    assert isinstance(txns, list)
    by_name = {t["account"]["name"]: t for t in txns}
    assert {n: t["weight"] for n, t in by_name.items()} == {"alice": 1, "bob": 2, "ProjectX": 1}
    assert {n: t["amount"] for n, t in by_name.items()} == {
        "alice": "0.30",
        "bob": "0.60",
        "ProjectX": "0.30",
    }
    assert amounts_sum(t["amount"] for t in txns) == Decimal("1.20")
    assert all(t["status"] == "completed" for t in txns)
    events = detail["events"]
    assert isinstance(events, list)
    # The status changes chain up (each starts where the last ended, processing
    # may be too quick to see): created pending, completed by the tracker, last.
    changes = [(e["from"], e["to"]) for e in events if e["to"] is not None]
    assert changes[0] == (None, "pending") and changes[-1][1] == "completed", changes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(changes)), changes
    done = next(i for i, e in enumerate(events) if e["to"] == "completed")
    assert events[done]["actor"] == "tracker", events[done]
    # Dispatched before it completed; charged once, after it, with the cost.
    assert "dispatched" in [e["reason"] for e in events[:done] if e["to"] is None], events
    after = [(e["reason"], e["message"]) for e in events[done + 1 :]]
    assert after == [("charged", "1.20 EUR over 3 transaction(s)")], events

    # The spool file is gone once the job ended.
    assert not list((stack.root / "spool" / "jobs").iterdir())


async def test_personal_print_is_charged_to_the_printing_user(
    stack: ServiceStack, api: aiohttp.ClientSession, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-personal")
    await _setup(stack, queue, ippeve_printer.uri)
    job = await stack.lp(queue, make_pdf(short_tmp / "one.pdf", 2), user="carol")
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED
    detail = await _get(api, f"/api/v1/printouts/{po.id}")
    assert [(t["account"]["name"], t["weight"], t["amount"]) for t in detail["transactions"]] == [  # type: ignore[union-attr]
        ("carol", 1, "0.20")
    ]


async def test_canceled_on_the_target_cups_queue_charges_nothing(
    stack: ServiceStack,
    api: aiohttp.ClientSession,
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
) -> None:
    target_queue = _unique("target")
    await asyncio.to_thread(private_cupsd.add_queue, target_queue, ippeve_printer.uri)
    queue = _unique("pp-cups")
    await _setup(stack, queue, f"cups://{target_queue}")
    with ippeve_printer.held():
        job = await stack.lp(
            queue,
            make_pdf(short_tmp / "c.pdf", 1),
            user="carol",
            options={"delegators": "alice,bob"},
        )
        po = await stack.wait_print_out(queue, job, {S.PENDING, S.PROCESSING}, timeout=30)
        for _ in range(200):
            po = await stack.print_out_for(queue, job)  # type: ignore[assignment]
            if po.target_job_id is not None:
                break
            await asyncio.sleep(0.05)
        assert po.target_job_id is not None
        # An operator cancels the job on the target queue with `cancel`.
        await asyncio.to_thread(private_cupsd.cancel, po.target_job_id)
        po = await stack.wait_print_out(queue, job)
    assert po.status == S.CANCELED
    detail = await _get(api, f"/api/v1/printouts/{po.id}")
    assert detail["cost"] is None
    assert {t["status"] for t in detail["transactions"]} == {"canceled"}  # type: ignore[union-attr]
    assert {t["amount"] for t in detail["transactions"]} == {"0.00"}  # type: ignore[union-attr]
    accounts = await _get(api, "/api/v1/accounts?type=user")
    assert {a["balance"] for a in accounts["items"]} == {"0.00"}  # type: ignore[union-attr]


async def test_aborted_at_the_printer(
    stack: ServiceStack, api: aiohttp.ClientSession, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-abort")
    await _setup(stack, queue, ippeve_printer.uri)
    title = _unique("jam")  # only this job takes the fault on the shared printer
    ippeve_printer.abort_next(1, title=title)
    job = await stack.lp(queue, make_pdf(short_tmp / "a.pdf", 1), user="carol", title=title)
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.ABORTED
    assert po.cost is None and po.charged_at is None


async def test_reverse_a_charged_print_out(
    stack: ServiceStack, api: aiohttp.ClientSession, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = _unique("pp-rev")
    await _setup(stack, queue, ippeve_printer.uri)
    job = await stack.lp(
        queue, make_pdf(short_tmp / "r.pdf", 2), user="carol", options={"delegators": "alice,bob"}
    )
    po = await stack.wait_print_out(queue, job)
    assert po.status == S.COMPLETED

    async def balances() -> dict[str, str]:
        body = await _get(api, "/api/v1/accounts?type=user")
        return {a["name"]: a["balance"] for a in body["items"]}  # type: ignore[union-attr]

    assert (await balances())["alice"] == "-0.20"
    user_token = await stack.token("user", user="alice")
    async with api.post(
        f"/api/v1/printouts/{po.id}/reverse", headers={"Authorization": f"Bearer {user_token}"}
    ) as resp:
        assert resp.status == 403
    editor = await stack.token("accounts-editor")
    auth = {"Authorization": f"Bearer {editor}"}
    reason = {"reason": "test page"}
    async with api.post(f"/api/v1/printouts/{po.id}/reverse", headers=auth) as resp:
        assert resp.status == 400  # a reversal takes a reason
        assert "reason is required" in (await resp.json())["error"]["message"]
    assert (await balances())["alice"] == "-0.20"  # nothing changed
    async with api.post(f"/api/v1/printouts/{po.id}/reverse", headers=auth, json=reason) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["reversed"] == 2
    assert set((await balances()).values()) == {"0.00"}
    async with api.post(f"/api/v1/printouts/{po.id}/reverse", headers=auth, json=reason) as resp:
        assert resp.status == 200
        assert (await resp.json())["reversed"] == 0
    assert set((await balances()).values()) == {"0.00"}


@pytest.mark.parametrize(
    ("options", "title", "needle"),
    [
        ({"delegators": "alice,mallory"}, None, "mallory"),
        ({"delegators": "alice:-1"}, None, "delegators"),
        ({"delegators": "a" * 10_000}, None, "delegators"),
        ({"shared-accounts": "NoSuchAccount"}, None, "NoSuchAccount"),
        ({"delegator-groups": "nogroup:2"}, None, "nogroup"),
    ],
)
async def test_invalid_delegation_is_held_not_lost(  # noqa: PLR0917 (fixtures + params)
    stack: ServiceStack,
    api: aiohttp.ClientSession,
    ippeve_printer: IppEvePrinter,
    short_tmp: Path,
    options: dict[str, str],
    title: bytes | None,
    needle: str,
) -> None:
    queue = _unique("pp-bad")
    await _setup(stack, queue, ippeve_printer.uri)
    before = len(ippeve_printer.documents())
    job = await stack.lp(
        queue, make_pdf(short_tmp / "b.pdf", 1), user="carol", options=options, title=title
    )
    po = await stack.wait_print_out(queue, job, {S.HELD})
    assert po.status_reason in {"delegation-invalid", "title-invalid"}
    assert po.status_message and needle in po.status_message
    held = await _get(api, f"/api/v1/printouts?status=held&printer={queue}")
    assert [i["id"] for i in held["items"]] == [po.id]  # type: ignore[index]
    # A good job after it on the same queue prints and is charged: the pipeline
    # ran past the held one (and one bad job does not stop the queue).
    good_title = _unique("good")
    good = await stack.lp(queue, make_pdf(short_tmp / "g.pdf", 1), user="carol", title=good_title)
    assert (await stack.wait_print_out(queue, good)).charged_at is not None
    docs = ippeve_printer.documents()
    assert [d.title for d in docs[before:]] == [good_title]  # only the good one printed
    assert (await stack.print_out_for(queue, job)).charged_at is None  # type: ignore[union-attr]
    # The CUPS job itself is done: the job now lives in our spool.
    assert private_state(stack, job) == IppJobState.COMPLETED


def private_state(stack: ServiceStack, job: int) -> IppJobState:
    return stack.cupsd.wait_job(job, {IppJobState.COMPLETED, IppJobState.ABORTED}, 10)


async def test_service_down_then_up_delivers_once(
    private_cupsd: PrivateCupsd, short_tmp: Path, ippeve_printer: IppEvePrinter
) -> None:
    stack = ServiceStack(private_cupsd, short_tmp / "svc")
    await stack.migrate()
    await stack.start()
    queue = _unique("pp-retry")
    await _setup(stack, queue, ippeve_printer.uri)
    await stack.stop()
    title = _unique("retry")
    job = await stack.lp(queue, make_pdf(short_tmp / "d.pdf", 1), user="carol", title=title)
    # The backend cannot reach the intake: CUPS keeps the job and retries.
    await asyncio.sleep(1.5)
    state = await asyncio.to_thread(private_cupsd.job_state, job)
    assert state in {IppJobState.PENDING, IppJobState.PROCESSING, IppJobState.PENDING_HELD}
    await stack.start()
    try:
        po = await stack.wait_print_out(queue, job, timeout=45)
        assert po.status == S.COMPLETED
        docs = ippeve_printer.documents()
        assert len([d for d in docs if d.title == title]) == 1
        await asyncio.to_thread(private_cupsd.wait_job, job, {IppJobState.COMPLETED}, 20)
    finally:
        await stack.stop()


async def _post_intake(
    stack: ServiceStack, meta: dict[str, object], body: bytes = b"hello\n"
) -> tuple[int, dict[str, object]]:
    # json.dumps keeps lone surrogates (non-UTF-8 argv bytes) as \\udcXX escapes,
    # exactly as the backend sends them.
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    connector = aiohttp.UnixConnector(path=stack.intake_socket)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://intake/intake/v1/jobs", data=body, headers={"X-Proxyprint-Meta": header}
        ) as resp,
    ):
        return resp.status, await resp.json()


def _meta(printer: str, **kw: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "printer": printer,
        "job_id": 7,
        "job_uuid": f"urn:uuid:{_unique('u')}",
        "user": "carol",
        "title": "t",
        "copies": 1,
        "options": "",
        "content_type": "text/plain",
        "host": "localhost",
    }
    meta.update(kw)
    return meta


async def test_same_job_uuid_twice_is_recorded_once(stack: ServiceStack) -> None:
    await stack.add_printer("pp-dup", target="ipp://127.0.0.1:9/ipp/print")
    await stack.add_users("carol")
    meta = _meta("pp-dup")
    first = await _post_intake(stack, meta)
    second = await _post_intake(stack, meta)
    assert first[0] == 201 and second[0] == 200
    assert second[1]["duplicate"] is True
    assert first[1]["print_in"] == second[1]["print_in"]


async def test_non_utf8_title_is_held_with_a_reason(stack: ServiceStack) -> None:
    # cupsd itself replaces a non-UTF-8 job-name with "Untitled", so such a title
    # only reaches the intake from another client; it is kept, held, explained.
    await stack.add_printer("pp-title", target="ipp://127.0.0.1:9/ipp/print")
    await stack.add_users("carol")
    raw = b"caf\xe9 \xff report".decode("utf-8", "surrogateescape")
    status, answer = await _post_intake(stack, _meta("pp-title", title=raw))
    assert status == 201
    assert answer["status"] == "held" and answer["reason"] == "title-invalid"
    assert "UTF-8" in str(answer["message"])


async def test_unknown_printer_and_bad_metadata(stack: ServiceStack) -> None:
    status, answer = await _post_intake(stack, _meta("no-such-printer"))
    assert status == 404 and answer["error"]["code"] == "unknown-printer"  # type: ignore[index]
    status, answer = await _post_intake(stack, {"printer": "x"})
    assert status == 400


async def test_a_cut_off_upload_is_discarded(stack: ServiceStack) -> None:
    """SIGTERM in the backend closes the upload before its last chunk: nothing is kept."""
    await stack.add_printer("pp-cut", target="ipp://127.0.0.1:9/ipp/print")
    await stack.add_users("carol")
    token = await stack.token("reader")
    ended_before = await intake_ended(stack, token)
    header = base64.b64encode(json.dumps(_meta("pp-cut")).encode()).decode()
    reader, writer = await asyncio.open_unix_connection(stack.intake_socket)
    writer.write(
        b"POST /intake/v1/jobs HTTP/1.1\r\nHost: intake\r\nTransfer-Encoding: chunked\r\n"
        + f"X-Proxyprint-Meta: {header}\r\n\r\n".encode()
        + b"10000\r\n"
        + b"x" * 0x8000  # half of a 64 KiB chunk, then the connection dies
    )
    await writer.drain()
    incoming = stack.root / "spool" / "incoming"

    async def spooling() -> bool:
        return any(incoming.iterdir())

    async def ended() -> bool:
        return await intake_ended(stack, token) > ended_before

    await _eventually(spooling)  # the intake is writing it to the spool
    writer.close()
    await writer.wait_closed()
    # The intake's handler for it has ended (the intake counts every request it ends).
    await _eventually(ended)
    assert await stack.print_out_for("pp-cut", 7) is None
    assert not list(incoming.iterdir())
    assert not list((stack.root / "spool" / "jobs").iterdir())
    del reader


async def intake_ended(stack: ServiceStack, token: str) -> int:
    """How many intake requests have ended, by the service's /metrics."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(stack.base_url) as session,
        session.get("/metrics", headers=headers) as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "proxyprint_intake_duration_seconds_count"
    )


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Until ``check()`` is true (polled: a sign the work ran), or fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def test_backend_is_answered_before_it_sends_the_document(
    stack: ServiceStack, short_tmp: Path
) -> None:
    """Unknown printer → CANCEL (that job alone) and a duplicate job-uuid → OK, both at
    100-continue time. A hold printer: the backend exits once the job is accepted."""
    import subprocess

    await stack.add_printer("pp-known", target="ipp://127.0.0.1:9/ipp/print", mode="hold")
    await stack.add_users("carol")
    backend = stack.cupsd.serverbin / "backend" / "proxyprint"
    doc = short_tmp / "doc.txt"
    doc.write_text("hello\n")

    def run(printer: str, uuid: str) -> subprocess.CompletedProcess[str]:
        env = {
            "DEVICE_URI": f"proxyprint:{stack.intake_socket}",
            "PRINTER": printer,
            "CONTENT_TYPE": "text/plain",
            "PATH": "/usr/bin:/bin",
        }
        return subprocess.run(
            [str(backend), "9", "carol", "doc", "1", f"job-uuid={uuid}", str(doc)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    unknown = await asyncio.to_thread(
        run, "pp-nosuch", "urn:uuid:00000000-0000-4000-8000-0000000000aa"
    )
    assert unknown.returncode == 5, unknown.stderr
    first = await asyncio.to_thread(
        run, "pp-known", "urn:uuid:00000000-0000-4000-8000-0000000000bb"
    )
    again = await asyncio.to_thread(
        run, "pp-known", "urn:uuid:00000000-0000-4000-8000-0000000000bb"
    )
    assert (first.returncode, again.returncode) == (0, 0), (first.stderr, again.stderr)
    po = await stack.print_out_for("pp-known", 9)
    assert po is not None
