"""Targets: the IPP codec on real captured bytes, and IppTarget against a real
ippeveprinter and a real private cupsd (the fixtures of tests/fixtures_cups.py).

The byte fixtures in tests/data/ipp/ were recorded from CUPS 2.4.2 and
ippeveprinter by tests/data/ipp/capture.py (see its docstring).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.exceptions import TargetError
from proxy.targets import ipp
from proxy.targets import ipp_codec as codec
from proxy.targets.base import (
    IppJobState,
    JobState,
    PrintRequest,
    SubmittedJob,
    Target,
)
from proxy.targets.errors import TargetRequestError, http_status_retryable, ipp_status_retryable
from proxy.targets.ipp import IppTarget
from proxy.targets.ipp_codec import Attribute, GroupTag, IntRange, OutOfBand, StatusCode, ValueTag
from proxy.targets.open import open_target
from tests.fixtures_cups import unique

DATA = Path(__file__).parent / "data" / "ipp"
FIXTURES = sorted(p.name for p in DATA.glob("*.bin"))
FINAL = {IppJobState.CANCELED, IppJobState.ABORTED, IppJobState.COMPLETED}


def fixture_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- codec on real bytes ------------------------------------------------------


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 16


@pytest.mark.parametrize("name", FIXTURES)
def test_decode_then_encode_gives_the_captured_bytes(name: str) -> None:
    raw = fixture_bytes(name)
    message, end = codec.decode_with_offset(raw)
    assert codec.encode(message) == raw[:end]
    if "print-job" in name and name.endswith("request.bin"):
        assert raw[end:].startswith(b"%PDF-")  # the document follows the end tag
    else:
        assert end == len(raw)


def test_cupsd_get_jobs_response_keeps_each_job_group() -> None:
    response = codec.decode(fixture_bytes("cupsd-get-jobs-all.response.bin"))
    assert response.code == StatusCode.SUCCESSFUL_OK
    jobs = list(response.groups_of(GroupTag.JOB))
    assert [g.first("job-id") for g in jobs] == list(range(1, 9))
    users = [g.first("job-originating-user-name") for g in jobs]
    assert users == ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    states = [g.first("job-state") for g in jobs]
    assert states == [9, 9, 9, 9, 4, 9, 9, 7]
    held = jobs[4]
    assert held.first("job-state-reasons") == "job-hold-until-specified"
    sheets = held.get("job-sheets")
    assert sheets is not None and sheets.values == ("none", "none")  # 1setOf
    assert held.first("date-time-at-completed") == OutOfBand(ValueTag.NO_VALUE)
    created = held.first("date-time-at-creation")
    assert isinstance(created, datetime) and created.tzinfo is not None
    assert created.astimezone(UTC).year >= 2024
    assert jobs[5].first("copies") == 2


def test_ippeveprinter_attributes_with_collections_ranges_resolutions() -> None:
    response = codec.decode(fixture_bytes("ippeve-get-printer-attributes.response.bin"))
    printer = response.group(GroupTag.PRINTER)
    assert printer is not None
    assert printer.first("copies-supported") == IntRange(1, 999)
    resolution = printer.first("printer-resolution-supported")
    assert isinstance(resolution, codec.Resolution) and resolution.x == 600
    media = printer.first("media-col-default")
    assert isinstance(media, dict)
    size = media["media-size"].value
    assert isinstance(size, dict)
    assert size["x-dimension"].value == 21590 and size["y-dimension"].value == 27940
    formats = printer.get("document-format-supported")
    assert formats is not None and "application/pdf" in formats.values


def test_error_responses_name_the_unsupported_attribute() -> None:
    cups = codec.decode(fixture_bytes("cupsd-print-job-bad-format.response.bin"))
    assert cups.code == StatusCode.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED
    assert cups.status_message == 'Unsupported document-format "application/x-unknown".'
    unsupported = cups.group(GroupTag.UNSUPPORTED)
    assert unsupported is not None and "document-format" in unsupported
    gone = codec.decode(fixture_bytes("cupsd-get-jobs-not-found.response.bin"))
    assert gone.code == StatusCode.CLIENT_ERROR_NOT_FOUND
    assert gone.status_message == "Job #999 does not exist."


def test_our_encoder_matches_libcups_byte_for_byte() -> None:
    """The Get-Jobs and Print-Job requests ipptool (libcups) sent, rebuilt by us."""
    sent = fixture_bytes("cupsd-get-jobs-job-ids.request.bin")
    theirs = codec.decode(sent)
    uri = theirs.operation_attributes.first("printer-uri")
    assert isinstance(uri, str)
    ours = codec.request(
        codec.Operation.GET_JOBS,
        theirs.request_id,
        uri,
        [
            Attribute.name_("requesting-user-name", "carol"),
            Attribute.integer("job-ids", 2, 3, 5, 7),
            codec.make_attribute(
                "requested-attributes",
                ["job-id", "job-state", "job-state-reasons", "job-impressions-completed"],
            ),
        ],
    )
    ours.version = (1, 1)
    assert ours.encode() == sent

    sent = fixture_bytes("ippeve-print-job.request.bin")
    theirs, end = codec.decode_with_offset(sent)
    uri = theirs.operation_attributes.first("printer-uri")
    assert isinstance(uri, str)
    ours = codec.request(
        codec.Operation.PRINT_JOB,
        theirs.request_id,
        uri,
        [
            codec.make_attribute("requesting-user-name", "carol"),
            codec.make_attribute("job-name", "fixture-print"),
            codec.make_attribute("document-format", "application/pdf"),
        ],
        [codec.make_attribute("copies", 4), codec.make_attribute("sides", "two-sided-long-edge")],
    )
    ours.version = (1, 1)
    assert ours.encode() == sent[:end]


def test_make_attribute_infers_tags_and_encodes_collections() -> None:
    assert codec.make_attribute("sides", "one-sided").tag == ValueTag.KEYWORD
    assert codec.make_attribute("job-name", "x").tag == ValueTag.NAME
    assert codec.make_attribute("orientation-requested", 4).tag == ValueTag.ENUM
    assert codec.make_attribute("number-up", 2).tag == ValueTag.INTEGER
    assert codec.make_attribute("page-ranges", IntRange(1, 3)).tag == ValueTag.RANGE
    assert codec.make_attribute("job-ids", [1, 2]).values == (1, 2)
    media_col = codec.make_attribute(
        "media-col", {"media-size": {"x-dimension": 21000, "y-dimension": 29700}}
    )
    assert media_col.tag == ValueTag.BEGIN_COLLECTION
    message = codec.request(codec.Operation.PRINT_JOB, 7, "ipp://h/p", [], [media_col])
    again = codec.decode(message.encode())
    job = again.group(GroupTag.JOB)
    assert job is not None
    value = job.first("media-col")
    assert isinstance(value, dict)
    size = value["media-size"].value
    assert isinstance(size, dict) and size["y-dimension"].values == (29700,)
    with pytest.raises(TypeError):
        codec.make_attribute("x", 1.5)  # type: ignore[arg-type]
    too_big = codec.request(
        codec.Operation.PRINT_JOB, 1, "ipp://h/p", [], [Attribute.integer("copies", 2**40)]
    )
    with pytest.raises(ValueError, match="cannot encode"):
        too_big.encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02\x00\x00\x00\x00\x00\x00\x01",  # no end tag
        b"\x02\x00\x00\x00\x00\x00\x00\x01\x21\x00\x01a\x00\x04\x00\x00\x00\x01\x03",  # no group
        b"\x02\x00\x00\x00\x00\x00\x00\x01\x01\x21\x00\x05job-i",  # truncated name
        b"\x02\x00\x00\x00\x00\x00\x00\x01\x01\x21\x00\x00\x00\x04\x00\x00\x00\x01\x03",
    ],
)
def test_malformed_messages_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(raw)


def test_retry_classification() -> None:
    assert ipp_status_retryable(StatusCode.SERVER_ERROR_BUSY)
    assert ipp_status_retryable(StatusCode.SERVER_ERROR_SERVICE_UNAVAILABLE)
    assert ipp_status_retryable(StatusCode.SERVER_ERROR_NOT_ACCEPTING_JOBS)
    assert not ipp_status_retryable(StatusCode.SERVER_ERROR_OPERATION_NOT_SUPPORTED)
    assert not ipp_status_retryable(StatusCode.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED)
    assert not ipp_status_retryable(StatusCode.CLIENT_ERROR_NOT_POSSIBLE)
    assert http_status_retryable(503) and http_status_retryable(500)
    assert not http_status_retryable(401) and not http_status_retryable(404)


# --- open_target ----------------------------------------------------------------


async def test_open_target_builds_endpoints() -> None:
    eve = open_target("ipp://printer.example:8631/ipp/print", cups_server="", timeout=3)
    assert isinstance(eve, IppTarget) and isinstance(eve, Target)
    assert str(eve.endpoint) == "http://printer.example:8631/ipp/print"
    assert eve.poll_strategy == "which-jobs"
    secure = open_target("ipps://printer.example/ipp/print", cups_server="", timeout=3)
    assert isinstance(secure, IppTarget)
    assert str(secure.endpoint) == "https://printer.example:631/ipp/print"
    local = open_target("cups://Office_1", cups_server="/run/cups/cups.sock", timeout=3)
    assert isinstance(local, IppTarget)
    assert local.unix_socket == "/run/cups/cups.sock"
    assert local.printer_uri == "ipp://localhost/printers/Office_1"
    assert local.poll_strategy == "job-ids"
    remote = open_target("cups://Office_1", cups_server="10.0.0.5:8631", timeout=3)
    assert isinstance(remote, IppTarget)
    assert str(remote.endpoint) == "http://10.0.0.5:8631/printers/Office_1"
    v6 = open_target("cups://q", cups_server="[::1]:8631", timeout=3)
    assert isinstance(v6, IppTarget) and v6.endpoint.port == 8631
    for target in (eve, secure, local, remote, v6):
        assert target.requests_made == 0
        await target.close()
    for bad in ("lpd://host/queue", "cups://", "ipp:///nohost", "cups://a%2Fb"):
        with pytest.raises(TargetRequestError) as info:
            open_target(bad, cups_server="/run/cups/cups.sock", timeout=3)
        assert info.value.retryable is False


# --- real printers ----------------------------------------------------------------


@pytest.fixture
async def eve(ippeve_printer: IppEvePrinter) -> AsyncIterator[Target]:
    target = open_target(ippeve_printer.uri, cups_server="", timeout=10)
    yield target
    await target.close()


@pytest.fixture(scope="module")
def cups_queue(private_cupsd: PrivateCupsd) -> Iterator[str]:
    """A raw queue printing to /dev/null (what arrives is what we sent)."""
    name = unique("targets")
    private_cupsd.add_queue(name, "file:///dev/null")
    yield name


@pytest.fixture
async def cups(private_cupsd: PrivateCupsd, cups_queue: str) -> AsyncIterator[Target]:
    target = open_target(f"cups://{cups_queue}", cups_server=private_cupsd.server, timeout=10)
    yield target
    await target.close()


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "doc.pdf", 2)


async def wait_states(
    target: Target, job_ids: Collection[int], states: Collection[IppJobState], timeout: float = 20
) -> dict[int, JobState]:
    """Poll until every job is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await target.poll(job_ids)
        if all(j in found and found[j].state in states for j in job_ids):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs {sorted(job_ids)} not in {states}: {found}")
        await asyncio.sleep(0.1)


def pdf_request(path: Path, name: str, *, user: str = "carol", copies: int = 1) -> PrintRequest:
    return PrintRequest(
        path=path,
        document_format="application/pdf",
        job_name=name,
        requesting_user=user,
        copies=copies,
    )


async def test_ippeve_receives_identical_document_with_copies(
    eve: Target, ippeve_printer: IppEvePrinter, pdf: Path
) -> None:
    name = unique("identical").replace("-", "_")
    job = await submit_when_idle(eve, pdf_request(pdf, name, user="carol", copies=4))
    assert job.job_id > 0 and job.job_uri is not None and job.job_uri.endswith(f"/{job.job_id}")
    (doc,) = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, where=lambda d: d.job_id == job.job_id
    )
    assert doc.read_bytes() == pdf.read_bytes()
    assert doc.copies == 4
    assert doc.job_name == name
    assert doc.user == "carol"
    assert doc.document_format == "application/pdf"
    states = await wait_states(eve, [job.job_id], {IppJobState.COMPLETED})
    assert states[job.job_id].reasons == ("job-completed-successfully",)


async def test_extra_job_attributes_reach_the_printer(
    eve: Target, ippeve_printer: IppEvePrinter, pdf: Path
) -> None:
    req = PrintRequest(
        path=pdf,
        document_format="application/pdf",
        job_name=unique("extra"),
        requesting_user="dave",
        job_attributes={"sides": "two-sided-long-edge", "media": "iso_a4_210x297mm"},
    )
    job = await submit_when_idle(eve, req)
    (doc,) = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, where=lambda d: d.job_id == job.job_id
    )
    assert doc.attributes["IPP_SIDES"] == "two-sided-long-edge"
    assert doc.attributes["IPP_MEDIA"] == "iso_a4_210x297mm"


async def test_cups_queue_job_belongs_to_the_delegate_and_completes(
    cups: Target, private_cupsd: PrivateCupsd, pdf: Path
) -> None:
    name = unique("delegate")
    job = await cups.submit(pdf_request(pdf, name, user="erin", copies=3))
    attrs = await asyncio.to_thread(private_cupsd.job_attributes, job.job_id)
    assert attrs["job-originating-user-name"] == "erin"
    assert attrs["job-name"] == name
    assert attrs["copies"] == 3
    states = await wait_states(cups, [job.job_id], {IppJobState.COMPLETED})
    assert states[job.job_id].state is IppJobState.COMPLETED


async def test_poll_of_fifty_jobs_is_one_request(
    eve: Target, cups: Target, ippeve_printer: IppEvePrinter, tmp_path: Path
) -> None:
    small = tmp_path / "small.txt"
    small.write_text("hello\n")
    for target in (cups, eve):
        req = PrintRequest(small, "text/plain", unique("fifty"), "frank")
        ids = [(await submit_when_idle(target, req)).job_id for _ in range(50)]
        assert len(set(ids)) == 50
        before = target.requests_made
        states = await target.poll(ids)
        assert target.requests_made == before + 1, target.uri
        assert set(states) == set(ids)
        await wait_states(target, ids, {IppJobState.COMPLETED}, timeout=40)
    # An id the printer does not know is simply absent, still in one request.
    before = eve.requests_made
    states = await eve.poll([*ids, 987654])
    assert eve.requests_made == before + 1
    assert 987654 not in states and set(ids) <= set(states)


async def submit_when_idle(target: Target, req: PrintRequest, timeout: float = 20) -> SubmittedJob:
    """Submit, retrying while the printer is busy (ippeveprinter takes one job at a time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await target.submit(req)
        except TargetRequestError as exc:
            if exc.ipp_status != StatusCode.SERVER_ERROR_BUSY or time.monotonic() > deadline:
                raise
            assert exc.retryable and exc.retry_after is not None
        await asyncio.sleep(0.02)


def with_uuid(req: PrintRequest, job_uuid: str) -> PrintRequest:
    return dataclasses.replace(req, job_uuid=job_uuid)


async def test_cupsd_keeps_our_job_uuid_and_find_walks_its_history_in_pages(
    cups: Target, private_cupsd: PrivateCupsd, pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("found")
    reqs = [with_uuid(pdf_request(pdf, f"{name}-{i}"), str(uuid.uuid4())) for i in range(5)]
    jobs = [await cups.submit(req) for req in reqs]
    attrs = await asyncio.to_thread(private_cupsd.job_attributes, jobs[-1].job_id)
    assert attrs["job-uuid"] == f"urn:uuid:{reqs[-1].job_uuid}"
    assert attrs["job-name"] == f"{name}-4"  # cupsd keeps it: the name stays the user's title
    # Three jobs per page: the last one is found on a later page, never missed.
    monkeypatch.setattr(ipp, "FIND_PAGE", 3)
    for req, job in zip(reqs, jobs, strict=True):
        found = await cups.find(req)
        assert found is not None and found.job_id == job.job_id
    before = cups.requests_made
    assert await cups.find(with_uuid(reqs[0], str(uuid.uuid4()))) is None
    assert cups.requests_made - before >= 2  # walked to the end of the history
    assert await cups.find(dataclasses.replace(reqs[0], job_uuid=None)) is None


async def test_ippeve_replaces_our_uuid_so_the_job_name_carries_a_marker(
    eve: Target, ippeve_printer: IppEvePrinter, pdf: Path
) -> None:
    job_uuid = str(uuid.uuid4())
    title = "Quarterly report " + "é" * 200  # longer than 255 octets with the marker
    req = with_uuid(pdf_request(pdf, title), job_uuid)
    job = await submit_when_idle(eve, req)
    (doc,) = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, where=lambda d: d.job_id == job.job_id
    )
    marker = f" (pp-{job_uuid.replace('-', '')[:12]})"
    assert doc.job_name.endswith(marker) and title.startswith(doc.job_name[: -len(marker)])
    assert len(doc.job_name.encode()) <= 255
    found = await eve.find(req)
    assert found is not None and found.job_id == job.job_id
    assert await eve.find(with_uuid(req, str(uuid.uuid4()))) is None


async def test_cups_poll_skips_a_purged_job(cups: Target, pdf: Path) -> None:
    job = await cups.submit(pdf_request(pdf, unique("purged")))
    before = cups.requests_made
    states = await cups.poll([job.job_id, 987654])
    # cupsd fails the whole Get-Jobs for an unknown id: dropped, asked again.
    assert cups.requests_made == before + 2
    assert set(states) == {job.job_id}
    assert await cups.poll([987654]) == {}


def set_enabled(cupsd: PrivateCupsd, queue: str, enabled: bool) -> None:
    command = "cupsenable" if enabled else "cupsdisable"
    subprocess.run([command, queue], env=cupsd.env(), check=True, capture_output=True)


async def test_cancel_by_target_and_by_operator(
    cups: Target, private_cupsd: PrivateCupsd, cups_queue: str, pdf: Path
) -> None:
    set_enabled(private_cupsd, cups_queue, False)  # jobs stay pending
    try:
        first = await cups.submit(pdf_request(pdf, unique("cancel-me")))
        second = await cups.submit(pdf_request(pdf, unique("operator")))
        pending = await cups.poll([first.job_id, second.job_id])
        assert {s.state for s in pending.values()} == {IppJobState.PENDING}
        await cups.cancel(first.job_id)
        await asyncio.to_thread(private_cupsd.cancel, second.job_id)
        states = await wait_states(cups, [first.job_id, second.job_id], {IppJobState.CANCELED})
        assert states[first.job_id].is_final
    finally:
        set_enabled(private_cupsd, cups_queue, True)
    # Cancelling a job that already ended is not possible, and says so.
    with pytest.raises(TargetRequestError) as info:
        await cups.cancel(first.job_id)
    assert info.value.ipp_status == StatusCode.CLIENT_ERROR_NOT_POSSIBLE
    assert info.value.retryable is False


async def test_cancel_on_ippeveprinter(
    eve: Target, ippeve_printer: IppEvePrinter, pdf: Path
) -> None:
    with ippeve_printer.held():
        job = await submit_when_idle(eve, pdf_request(pdf, unique("eve-cancel")))
        await wait_states(eve, [job.job_id], {IppJobState.PROCESSING, IppJobState.PENDING})
        await eve.cancel(job.job_id)
        # ippeveprinter lets the running command end, then cancels the job; released
        # before it took the cancel in (a loaded machine), the job would just complete.
        deadline = time.monotonic() + 20
        while True:
            seen = (await eve.poll([job.job_id]))[job.job_id]
            if seen.state is IppJobState.CANCELED or "processing-to-stop-point" in seen.reasons:
                break
            assert time.monotonic() < deadline, f"the printer never took the cancel in: {seen}"
            await asyncio.sleep(0.05)
    states = await wait_states(eve, [job.job_id], {IppJobState.CANCELED})
    assert states[job.job_id].state is IppJobState.CANCELED


async def test_unsupported_format_is_permanent(eve: Target, cups: Target, pdf: Path) -> None:
    expected = {
        # ippeveprinter checks document-format like any attribute; cupsd has its own code.
        eve: StatusCode.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
        cups: StatusCode.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED,
    }
    req = PrintRequest(pdf, "application/x-proxyprint-unknown", unique("fmt"), "carol")
    for target, status in expected.items():
        with pytest.raises(TargetRequestError) as info:
            await submit_when_idle(target, req)
        assert info.value.retryable is False
        assert info.value.ipp_status == status
        assert "document-format" in str(info.value)


async def test_unreachable_targets_are_retryable(tmp_path: Path, pdf: Path) -> None:
    targets = [
        open_target(f"ipp://127.0.0.1:{free_port()}/ipp/print", cups_server="", timeout=3),
        open_target("cups://nowhere", cups_server=str(tmp_path / "no.sock"), timeout=3),
    ]
    for target in targets:
        with pytest.raises(TargetRequestError) as info:
            await target.submit(pdf_request(pdf, "x"))
        assert info.value.retryable is True
        assert "cannot connect" in str(info.value)
        assert isinstance(info.value.__cause__, Exception)
        with pytest.raises(TargetError):
            await target.poll([1])
        with pytest.raises(TargetError):
            await target.cancel(1)
        await target.close()


async def test_silent_target_times_out_retryably(pdf: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep the connection open, never answer

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = open_target(f"ipp://127.0.0.1:{port}/ipp/print", cups_server="", timeout=0.5)
    try:
        with pytest.raises(TargetRequestError) as info:
            await target.poll([1])
        assert info.value.retryable is True and "no answer" in str(info.value)
    finally:
        await target.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_bad_input_and_wrong_printer_path_are_permanent(
    eve: Target, ippeve_printer: IppEvePrinter, tmp_path: Path
) -> None:
    before = eve.requests_made
    with pytest.raises(TargetRequestError) as info:
        await eve.submit(pdf_request(tmp_path / "gone.pdf", "gone"))
    assert info.value.retryable is False
    bad = PrintRequest(tmp_path, "application/pdf", "bad", "carol", job_attributes={"x": 1.5})  # type: ignore[dict-item]
    with pytest.raises(TargetRequestError, match="bad job attribute") as info:
        await eve.submit(bad)
    assert info.value.retryable is False
    assert eve.requests_made == before  # refused before sending anything
    wrong = open_target(
        ippeve_printer.uri.replace("/ipp/print", "/ipp/nothing"), cups_server="", timeout=5
    )
    try:
        with pytest.raises(TargetRequestError) as info:
            await wrong.poll([1])
        assert info.value.retryable is False
        assert info.value.ipp_status == StatusCode.CLIENT_ERROR_NOT_FOUND
    finally:
        await wrong.close()


# --- a scripted IPP server for the unhappy paths real printers will not show ----


class Scripted:
    """Answers each IPP request with ``answer(request)``; keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[codec.Message] = []
        self.http_status = 200

    async def handle(self, http: web.Request) -> web.Response:
        message = codec.decode(await http.read())
        self.requests.append(message)
        if self.http_status != 200:
            return web.Response(status=self.http_status, text="busy", headers={"Retry-After": "7"})
        return web.Response(body=self.answer(message).encode(), content_type="application/ipp")

    def answer(self, req: codec.Message) -> codec.Message:
        op = codec.Group(GroupTag.OPERATION)
        op.add(Attribute.charset("attributes-charset", "utf-8"))
        op.add(Attribute.language("attributes-natural-language", "en"))
        which = req.operation_attributes.first("which-jobs")
        if which == "all":  # an RFC 8011-only printer
            unsupported = codec.Group(GroupTag.UNSUPPORTED).add(
                Attribute.keyword("which-jobs", "all")
            )
            return codec.Message(
                StatusCode.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                req.request_id,
                [op, unsupported],
            )
        jobs = {"not-completed": [(1, 5)], "completed": [(2, 9), (3, 8)]}[str(which)]
        groups = [op]
        for job_id, state in jobs:
            groups.append(
                codec.Group(GroupTag.JOB)
                .add(Attribute.integer("job-id", job_id))
                .add(Attribute.enum("job-state", state))
                .add(Attribute.keyword("job-state-reasons", "none", "job-printing"))
            )
        return codec.Message(StatusCode.SUCCESSFUL_OK, req.request_id, groups)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, Target]]:
    fake = Scripted()
    app = web.Application()
    app.router.add_post("/ipp/print", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target = open_target(f"ipp://127.0.0.1:{port}/ipp/print", cups_server="", timeout=5)
    yield fake, target
    await target.close()
    await runner.cleanup()


async def test_printer_without_which_jobs_all_is_asked_twice(
    scripted: tuple[Scripted, Target],
) -> None:
    fake, target = scripted
    states = await target.poll([1, 2, 3, 4])
    assert {j: s.state for j, s in states.items()} == {1: 5, 2: 9, 3: 8}
    assert states[1].reasons == ("none", "job-printing")
    states = await target.poll([2, 3])
    assert set(states) == {2, 3}
    # which-jobs=all once, then not-completed + completed for each poll.
    kinds = [m.operation_attributes.first("which-jobs") for m in fake.requests]
    assert kinds == ["all", "not-completed", "completed", "not-completed", "completed"]
    assert target.requests_made == 5


async def test_one_job_is_asked_about_alone(
    eve: Target, ippeve_printer: IppEvePrinter, tmp_path: Path
) -> None:
    """A job just sent is polled on its own: Get-Job-Attributes, one request, an
    answer that does not grow with the printer's history."""
    job = await submit_when_idle(eve, pdf_request(make_pdf(tmp_path / "one.pdf", 1), "alone"))
    before = eve.requests_made
    states = await eve.poll([job.job_id])
    assert set(states) == {job.job_id}
    assert states[job.job_id].job_name is not None and "alone" in states[job.job_id].job_name
    assert eve.requests_made == before + 1
    # A job the printer never had: absent (asked again with Get-Jobs to be sure
    # it is the job, not the printer, that is unknown).
    assert await eve.poll([job.job_id + 10_000]) == {}


async def test_http_errors_map_to_retryable_or_not(scripted: tuple[Scripted, Target]) -> None:
    fake, target = scripted
    fake.http_status = 503
    with pytest.raises(TargetRequestError) as info:
        await target.poll([1])
    assert info.value.retryable is True and info.value.http_status == 503
    assert info.value.retry_after == 7
    fake.http_status = 403
    with pytest.raises(TargetRequestError) as info:
        await target.poll([1])
    assert info.value.retryable is False


# --- streaming ---------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_big_document_is_streamed(
    cups: Target, private_cupsd: PrivateCupsd, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    size = 200 * 1024 * 1024
    with big.open("wb") as fh:
        fh.truncate(size)  # sparse: no disk, and reading it costs no memory either
    baseline = rss_bytes()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        job = await cups.submit(
            PrintRequest(big, "application/octet-stream", unique("big"), "grace")
        )
    finally:
        done.set()
        sampler.join()
    growth = peak - baseline
    assert growth < 32 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB for a 200 MiB job"
    await wait_states(cups, [job.job_id], FINAL, timeout=30)
    attrs = await asyncio.to_thread(private_cupsd.job_attributes, job.job_id)
    assert attrs["job-k-octets"] == size // 1024  # all of it arrived
    os.unlink(big)
