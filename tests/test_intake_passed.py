"""The local hand-off by descriptor (issue #18): the backend passes cupsd's spool
file (argv[6]) over the Unix socket, the service copies it in the kernel; a
filter's pipe (stdin) still streams. The real service (``ServiceStack``), the
installed backend run as cupsd runs it, and a real cupsd for the last two."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from billing.enums import PrintStatus
from billing.models import PrintIn
from proxy import printers
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack
from proxy.keys import SESSIONS
from tests.test_e2e_direct import intake_ended

pytestmark = pytest.mark.cups

PASSED = "Sending job to proxyprint (its spool file passed)"
STREAMED = "Sending job to proxyprint (streamed)"
DESCRIPTOR_SENT = "DEBUG: Passed the document's descriptor"
HOLD_QUEUE = "pp-passed"


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        # A hold printer: the job stays (and its spool file with it) to be looked at.
        await svc.add_printer(HOLD_QUEUE, target="ipp://127.0.0.1:9/ipp/print", mode="hold")
        await svc.add_users("carol")
        yield svc


def _backend(stack: ServiceStack, job_uuid: str, file: Path | None) -> subprocess.Popen[bytes]:
    """The installed backend, started as cupsd starts it (argv[6] only for ``file``)."""
    backend = stack.cupsd.serverbin / "backend" / "proxyprint"
    args = [str(backend), "9", "carol", "doc", "1", f"job-uuid={job_uuid}"]
    env = {
        "DEVICE_URI": printers.device_uri(stack.intake_socket),
        "PRINTER": HOLD_QUEUE,
        "CONTENT_TYPE": "application/octet-stream",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.Popen(
        [*args, *([str(file)] if file is not None else [])],
        env=env,
        stdin=subprocess.PIPE if file is None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _run(
    stack: ServiceStack, job_uuid: str, file: Path | None, *, stdin: bytes = b""
) -> tuple[int, str]:
    proc = _backend(stack, job_uuid, file)
    _, err = await asyncio.to_thread(proc.communicate, stdin if file is None else None, 60)
    return proc.returncode, err.decode()


async def _print_in(stack: ServiceStack, job_uuid: str) -> PrintIn | None:
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session:
        return await session.scalar(select(PrintIn).where(PrintIn.job_uuid == job_uuid))


def _spool(stack: ServiceStack) -> tuple[list[Path], list[Path]]:
    root = stack.root / "spool"
    return list((root / "incoming").iterdir()), list((root / "jobs").iterdir())


@pytest.mark.parametrize("via", ["descriptor", "stream"])
async def test_the_spool_file_is_byte_identical_with_its_sha256(
    stack: ServiceStack, short_tmp: Path, via: str
) -> None:
    data = os.urandom((3 << 20) + 12345)  # more than one block either way
    document = short_tmp / "doc.bin"
    document.write_bytes(data)
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    if via == "descriptor":
        code, err = await _run(stack, job_uuid, document)
    else:
        code, err = await _run(stack, job_uuid, None, stdin=data)
    assert code == 0, err
    assert (PASSED if via == "descriptor" else STREAMED) in err
    assert (DESCRIPTOR_SENT in err) == (via == "descriptor")
    print_in = await _print_in(stack, job_uuid)
    assert print_in is not None and print_in.spool_path is not None
    spooled = Path(print_in.spool_path)
    assert spooled.read_bytes() == data
    assert print_in.sha256 == hashlib.sha256(data).hexdigest()
    assert print_in.size == len(data)
    assert spooled.stat().st_mode & 0o777 == 0o600
    assert _spool(stack) == ([], [spooled])


DSC_COPIES = b"""%!PS-Adobe-3.0
%%Pages: 2
%%EndComments
<< /NumCopies 3 >> setpagedevice
%%Page: 1 1
showpage
%%Page: 2 2
showpage
%%EOF
"""


@pytest.mark.parametrize("via", ["descriptor", "stream"])
@pytest.mark.parametrize("kind", ["pdf", "postscript"])
async def test_pages_are_counted_alike_on_both_paths(
    stack: ServiceStack, short_tmp: Path, via: str, kind: str
) -> None:
    """The descriptor path counts cupsd's file while it is copied; the count
    (and Ghostscript's look at a PostScript that sets its own copies) is the
    one the streamed path gets from the spool copy."""
    if kind == "pdf":
        document, expected = make_pdf(short_tmp / "three.pdf", 3), (3, "pdf-page-tree", 1)
    else:
        document = short_tmp / "copies.ps"
        document.write_bytes(DSC_COPIES)
        expected = (2, "ghostscript", 3)
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    if via == "descriptor":
        code, err = await _run(stack, job_uuid, document)
    else:
        code, err = await _run(stack, job_uuid, None, stdin=document.read_bytes())
    assert code == 0 and (DESCRIPTOR_SENT in err) == (via == "descriptor"), err
    print_in = await _print_in(stack, job_uuid)
    assert print_in is not None
    assert (print_in.pages, print_in.count_method, print_in.document_copies) == expected
    assert not print_in.pages_estimated


async def test_an_empty_file_passed_is_an_empty_job(stack: ServiceStack, short_tmp: Path) -> None:
    document = short_tmp / "empty.bin"
    document.write_bytes(b"")
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    code, err = await _run(stack, job_uuid, document)
    assert code == 0 and DESCRIPTOR_SENT in err, err
    print_in = await _print_in(stack, job_uuid)
    assert print_in is not None and print_in.sha256 == hashlib.sha256(b"").hexdigest()


async def test_a_duplicate_job_uuid_is_answered_without_a_second_copy(
    stack: ServiceStack, short_tmp: Path
) -> None:
    document = short_tmp / "doc.bin"
    document.write_bytes(os.urandom(1 << 20))
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    first = await _run(stack, job_uuid, document)
    again = await _run(stack, job_uuid, document)
    assert first[0] == 0 and DESCRIPTOR_SENT in first[1], first
    assert again[0] == 0 and "(already received)" in again[1], again
    assert DESCRIPTOR_SENT not in again[1]  # answered at 100-continue: nothing passed
    print_in = await _print_in(stack, job_uuid)
    assert print_in is not None
    assert _spool(stack) == ([], [Path(str(print_in.spool_path))])


async def test_sigterm_while_the_file_is_copied_leaves_nothing(
    stack: ServiceStack, short_tmp: Path
) -> None:
    big = short_tmp / "big.bin"
    with big.open("wb") as fh:  # sparse: the copy still writes (and hashes) every byte
        fh.truncate(2 << 30)
    token = await stack.token("reader")
    ended_before = await intake_ended(stack, token)
    job_uuid = f"urn:uuid:{uuid.uuid4()}"
    proc = _backend(stack, job_uuid, big)
    try:
        deadline = time.monotonic() + 30
        while not _spool(stack)[0]:  # the service is copying it into incoming/
            assert proc.poll() is None, "the backend ended before the copy began"
            assert time.monotonic() < deadline, "no copy began"
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 6 and DESCRIPTOR_SENT in err, err  # RETRY: cupsd ignores it (canceled)
    deadline = time.monotonic() + 30
    while await intake_ended(stack, token) <= ended_before:  # the intake's handler ended
        assert time.monotonic() < deadline, "the intake never ended the request"
        await asyncio.sleep(0.05)
    assert _spool(stack) == ([], [])
    assert await _print_in(stack, job_uuid) is None


# --- through a real cupsd ------------------------------------------------------------

FILTERED_PPD = """*PPD-Adobe: "4.3"
*FormatVersion: "4.3"
*FileVersion: "1.0"
*LanguageVersion: English
*LanguageEncoding: ISOLatin1
*PCFileName: "PPFILTER.PPD"
*Manufacturer: "proxyprint"
*Product: "(proxyprint filtered test queue)"
*ModelName: "proxyprint filtered"
*ShortNickName: "proxyprint filtered"
*NickName: "proxyprint filtered"
*PSVersion: "(3010.000) 0"
*LanguageLevel: "3"
*ColorDevice: False
*DefaultColorSpace: Gray
*FileSystem: False
*Throughput: "1"
*LandscapeOrientation: Plus90
*TTRasterizer: Type42
*cupsFilter2: "application/vnd.cups-pdf application/pdf 0 -"
*OpenUI *PageSize: PickOne
*DefaultPageSize: A4
*PageSize A4/A4: "<</PageSize[595 842]>>setpagedevice"
*CloseUI: *PageSize
*DefaultImageableArea: A4
*ImageableArea A4: "0 0 595 842"
*DefaultPaperDimension: A4
*PaperDimension A4: "595 842"
"""


def _job_lines(cupsd: PrivateCupsd, job: int) -> str:
    return "\n".join(line for line in cupsd.error_log.splitlines() if f"[Job {job}]" in line)


async def test_through_cupsd_a_raw_queue_passes_its_spool_file_and_a_filtered_one_streams(
    stack: ServiceStack, private_cupsd: PrivateCupsd, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    raw_queue, filtered_queue = (f"pp-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("raw", "flt"))
    await stack.add_printer(raw_queue, target=ippeve_printer.uri, mode="direct")
    await stack.add_printer(filtered_queue, target=ippeve_printer.uri, mode="direct")
    ppd = short_tmp / "filtered.ppd"
    ppd.write_text(FILTERED_PPD)
    await asyncio.to_thread(
        subprocess.run,
        ["lpadmin", "-p", filtered_queue, "-P", str(ppd)],
        env=private_cupsd.env(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    pdf = make_pdf(short_tmp / "report.pdf", 2)
    for queue, how in ((raw_queue, PASSED), (filtered_queue, STREAMED)):
        title = f"passed-{uuid.uuid4().hex[:8]}"
        job = await stack.lp(queue, pdf, user="carol", title=title)
        po = await stack.wait_print_out(queue, job, timeout=60)
        assert po.status == PrintStatus.COMPLETED, (queue, po.status_message)
        assert how in _job_lines(private_cupsd, job), _job_lines(private_cupsd, job)[-3000:]
        docs = await asyncio.to_thread(
            ippeve_printer.wait_for_documents, 1, 20.0, where=lambda d, t=title: d.title == t
        )
        if queue == raw_queue:  # the raw queue's document arrives as sent
            assert docs[0].read_bytes() == pdf.read_bytes()
        else:  # pdftopdf rewrote it on the way: still a PDF of the same pages
            assert docs[0].read_bytes().startswith(b"%PDF-")
        assert po.pages == 2


async def test_the_byte_without_a_descriptor_is_refused_and_nothing_kept(
    stack: ServiceStack,
) -> None:
    """A sender that announces a descriptor and sends only the byte is told so (400)."""
    import base64
    import json

    meta = {"printer": HOLD_QUEUE, "job_id": 3, "job_uuid": f"urn:uuid:{uuid.uuid4()}"}
    meta |= {"user": "carol", "title": "t", "copies": 1, "options": ""}
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    reader, writer = await asyncio.open_unix_connection(stack.intake_socket)
    writer.write(
        b"POST /intake/v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nX-Proxyprint-Document: fd\r\n"
        + f"X-Proxyprint-Meta: {header}\r\n\r\n".encode()
    )
    await writer.drain()
    interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100") and b"X-Proxyprint-Fd: send" in interim
    writer.write(b"F")  # a plain write: no descriptor travels with it
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"one document descriptor" in answer
    assert _spool(stack) == ([], [])
    assert await _print_in(stack, str(meta["job_uuid"])) is None
