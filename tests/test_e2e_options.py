"""Print what was asked, charge what was printed (issue #12), end to end:
lp -> private cupsd -> our backend -> intake -> dispatch (plan, conversion) ->
a real ippeveprinter (restricted formats where it matters) -> tracker -> charge.

What the printer received is read from ippeveprinter's ``-c`` command, which
records each document's IPP_* attributes; its pages are counted in the file."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from billing.cost import CostRules, JobSpec, compute
from billing.enums import PrintStatus, StatusReason
from billing.money import Currency
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter, ReceivedDocument
from proxy.devkit.stack import ServiceStack
from proxy.pages import PWG_RASTER, count_pages

pytestmark = pytest.mark.cups

S = PrintStatus
EUR = Currency("EUR", 2)


def _unique(prefix: str) -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _gs(device: str, src: Path, dst: Path, *extra: str) -> Path:
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            f"-sDEVICE={device}",
            *extra,
            "-o",
            str(dst),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return dst


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The documents real clients send: PDF, PostScript, text, PNG, PCL, junk."""
    d = tmp_path_factory.mktemp("docs")
    pdf3 = make_pdf(d / "p3.pdf", 3)
    return {
        "pdf2": make_pdf(d / "p2.pdf", 2),
        "pdf3": pdf3,
        "ps3": _gs("ps2write", pdf3, d / "p3.ps"),
        "png": _gs("png16m", make_pdf(d / "p1.pdf", 1), d / "p1.png", "-r30"),
        "pcl": _gs("ljet4", pdf3, d / "p3.pcl", "-r75"),
        "text": _write(d / "notes.txt", b"Meeting notes\n" + b"line of text\n" * 10),
        "junk": _write(d / "junk.bin", b"\0\x01\x02junk" + bytes(range(256)) * 40),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        await svc.add_users("alice", "bob", "carol", delegate=True)  # they delegate
        yield svc


@pytest.fixture(scope="module")
def raster_printer() -> Iterator[IppEvePrinter]:
    """An IPP Everywhere printer that takes only what the standard requires."""
    with IppEvePrinter(formats=("image/pwg-raster", "image/jpeg")) as printer:
        yield printer


@pytest.fixture(scope="module")
def pdf_printer() -> Iterator[IppEvePrinter]:
    with IppEvePrinter(formats=("application/pdf",)) as printer:
        yield printer


async def _print(
    stack: ServiceStack,
    printer: IppEvePrinter,
    doc: Path,
    *,
    copies: int | None = None,
    options: dict[str, str] | None = None,
    statuses: tuple[PrintStatus, ...] = (S.COMPLETED,),
    **printer_kw: str,
) -> tuple[object, ReceivedDocument | None]:
    queue = _unique("pp-opt")
    await stack.add_printer(queue, target=printer.uri, mode="direct", **printer_kw)
    title = _unique("doc")
    job = await stack.lp(
        queue, doc, user="carol", title=title, copies=copies, options=options or {}
    )
    wanted = set(statuses) | {S.COMPLETED, S.ABORTED, S.CANCELED, S.HELD}
    po = await stack.wait_print_out(queue, job, statuses=wanted, timeout=60)
    if PrintStatus(po.status) not in statuses:
        label = PrintStatus(po.status).label
        pytest.fail(f"print-out {po.id}: {label} {po.status_reason}: {po.status_message}")
    if po.status != S.COMPLETED:
        return po, None
    received = await asyncio.to_thread(
        printer.wait_for_documents, 1, 30.0, where=lambda d: d.title == title
    )
    return po, received[0]


def _cost(pages: int, copies: int = 1, *, duplex: bool = False, discount: str = "0") -> Decimal:
    rules = CostRules(
        mono=Decimal("0.10"), color=Decimal("0.10"), duplex_discount=Decimal(discount)
    )
    return compute(rules, JobSpec(pages=pages, copies=copies, duplex=duplex), EUR).total


async def _detail(stack: ServiceStack, po_id: int) -> dict[str, object]:
    token = await stack.token("admin")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(stack.base_url, headers=headers) as api,
        api.get(f"/api/v1/printouts/{po_id}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, object] = await resp.json()
        return body


async def test_lp_copies_are_printed_and_charged(
    stack: ServiceStack, ippeve_printer: IppEvePrinter, docs: dict[str, Path]
) -> None:
    po, doc = await _print(stack, ippeve_printer, docs["pdf2"], copies=3, cost_mono="0.10")
    assert doc is not None and doc.copies == 3
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert detail["copies"] == 3 and detail["pages"] == 2
    assert Decimal(str(detail["cost"])) == _cost(2, 3) == Decimal("0.60")


async def test_copies_multiply_delegation_weights(
    stack: ServiceStack, ippeve_printer: IppEvePrinter, docs: dict[str, Path]
) -> None:
    """SPEC §3's rule: printed copies = CUPS copies x the sum of the weights."""
    po, doc = await _print(
        stack,
        ippeve_printer,
        docs["pdf2"],
        copies=2,
        options={"delegators": "alice,bob:2"},
        cost_mono="0.10",
    )
    assert doc is not None and doc.copies == 6
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert Decimal(str(detail["cost"])) == Decimal("1.20")  # 2 pages x 6 copies
    shares = {t["account"]["name"]: t["amount"] for t in detail["transactions"]}  # type: ignore[attr-defined]
    assert shares == {"alice": "0.40", "bob": "0.80"}


async def test_sides_reach_the_printer_and_are_charged_duplex(
    stack: ServiceStack, ippeve_printer: IppEvePrinter, docs: dict[str, Path]
) -> None:
    po, doc = await _print(
        stack,
        ippeve_printer,
        docs["pdf2"],
        options={"sides": "two-sided-long-edge", "media": "A4"},
        cost_mono="0.10",
        duplex_discount="0.02",
    )
    assert doc is not None
    assert doc.attributes["IPP_SIDES"] == "two-sided-long-edge"
    assert doc.attributes["IPP_MEDIA"] == "iso_a4_210x297mm"
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    expected = _cost(2, duplex=True, discount="0.02")
    assert expected < _cost(2)
    assert Decimal(str(detail["cost"])) == expected


async def test_sides_a_printer_lacks_are_dropped_with_a_message_and_charged_simplex(
    stack: ServiceStack, docs: dict[str, Path]
) -> None:
    with IppEvePrinter(duplex=False) as simplex:
        po, doc = await _print(
            stack,
            simplex,
            docs["pdf2"],
            options={"sides": "two-sided-long-edge"},
            cost_mono="0.10",
            duplex_discount="0.02",
        )
    assert doc is not None and doc.attributes.get("IPP_SIDES", "one-sided") == "one-sided"
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert Decimal(str(detail["cost"])) == _cost(2)  # printed one-sided: no discount
    dropped = [e for e in detail["events"] if e["reason"] == StatusReason.OPTION_DROPPED]  # type: ignore[attr-defined]
    assert dropped and "sides=two-sided-long-edge" in dropped[0]["message"], detail["events"]


async def test_page_ranges_print_and_charge_the_selected_pages(
    stack: ServiceStack, ippeve_printer: IppEvePrinter, docs: dict[str, Path]
) -> None:
    """The printer applies page-ranges to PDF itself: sent as the attribute."""
    po, doc = await _print(
        stack, ippeve_printer, docs["pdf3"], options={"page-ranges": "2-3"}, cost_mono="0.10"
    )
    assert doc is not None and doc.attributes["IPP_PAGE_RANGES"] == "2-3"
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert detail["pages"] == 2
    assert Decimal(str(detail["cost"])) == Decimal("0.20")


@pytest.mark.parametrize(("name", "pages"), [("pdf3", 3), ("ps3", 3), ("text", 1), ("png", 1)])
async def test_a_raster_only_printer_receives_pwg_raster(
    stack: ServiceStack,
    raster_printer: IppEvePrinter,
    docs: dict[str, Path],
    name: str,
    pages: int,
) -> None:
    po, doc = await _print(stack, raster_printer, docs[name], cost_mono="0.10")
    assert doc is not None
    assert doc.document_format == PWG_RASTER
    received = count_pages(doc.path, None)
    assert received.detected_type == PWG_RASTER and not received.estimated
    assert received.pages == pages
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert Decimal(str(detail["cost"])) == _cost(pages)
    assert StatusReason.CONVERTED in [e["reason"] for e in detail["events"]]  # type: ignore[attr-defined]


async def test_page_ranges_on_a_raster_printer_are_applied_by_conversion(
    stack: ServiceStack, raster_printer: IppEvePrinter, docs: dict[str, Path]
) -> None:
    po, doc = await _print(
        stack,
        raster_printer,
        docs["pdf3"],
        copies=2,
        options={"page-ranges": "2-3"},
        cost_mono="0.10",
    )
    assert doc is not None and doc.document_format == PWG_RASTER
    assert count_pages(doc.path, None).pages == 2  # the printer makes the 2 copies
    assert doc.copies == 2 and "IPP_PAGE_RANGES" not in doc.attributes
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert Decimal(str(detail["cost"])) == _cost(2, 2)


@pytest.mark.parametrize("name", ["ps3", "text"])
async def test_a_pdf_only_printer_receives_pdf(
    stack: ServiceStack, pdf_printer: IppEvePrinter, docs: dict[str, Path], name: str
) -> None:
    _, doc = await _print(stack, pdf_printer, docs[name], cost_mono="0.10")
    assert doc is not None and doc.document_format == "application/pdf"
    assert doc.read_bytes().startswith(b"%PDF-")


@pytest.mark.parametrize(("name", "printer"), [("junk", "raster"), ("pcl", "pdf")])
async def test_an_unconvertible_job_is_held_not_lost_and_not_charged(
    stack: ServiceStack,
    docs: dict[str, Path],
    request: pytest.FixtureRequest,
    name: str,
    printer: str,
) -> None:
    target: IppEvePrinter = request.getfixturevalue(f"{printer}_printer")
    po, _ = await _print(stack, target, docs[name], statuses=(S.HELD,), cost_mono="0.10")
    assert po.status_reason == StatusReason.FORMAT_UNSUPPORTED  # type: ignore[attr-defined]
    message = po.status_message or ""  # type: ignore[attr-defined]
    assert "cannot be printed here" in message and ("PDF" in message or "PWG raster" in message)
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert detail["status"] == "held" and detail["cost"] is None
    assert all(t["amount"] in ("0", "0.00") for t in detail["transactions"])  # type: ignore[attr-defined]
    assert name != "pcl" or "PCL 5" in message


@pytest.mark.parametrize("trust", ["printer", "document"])
async def test_the_printers_count_is_recorded_and_charged_as_configured(
    private_cupsd: PrivateCupsd, short_tmp: Path, docs: dict[str, Path], trust: str
) -> None:
    extra = {"charging": {"trust": trust}}
    async with ServiceStack(private_cupsd, short_tmp / f"svc-{trust}", extra=extra) as stack:
        await stack.add_users("carol")
        with IppEvePrinter() as printer:
            printer.report_impressions(7)
            po, doc = await _print(stack, printer, docs["pdf3"], cost_mono="0.10")
        assert doc is not None
        detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert detail["printer_impressions"] == 7
    assert Decimal(str(detail["cost"])) == (
        Decimal("0.70") if trust == "printer" else Decimal("0.30")
    )
    differs = [e for e in detail["events"] if e["reason"] == StatusReason.COUNT_DIFFERS]  # type: ignore[attr-defined]
    assert len(differs) == 1 and "7" in differs[0]["message"] and "3" in differs[0]["message"]


def test_documents_fixture_formats(docs: dict[str, Path]) -> None:
    """The fixtures are what they claim to be (else the tests above prove nothing)."""
    kinds = {name: count_pages(path, None).detected_type for name, path in docs.items()}
    assert kinds == {
        "pdf2": "application/pdf",
        "pdf3": "application/pdf",
        "ps3": "application/postscript",
        "png": "image/png",
        "pcl": "application/vnd.hp-pcl",
        "text": "text/plain",
        "junk": "application/octet-stream",
    }
    assert os.path.getsize(docs["png"]) > 0


async def test_copies_a_postscript_document_asks_for_survive_its_conversion(
    stack: ServiceStack, raster_printer: IppEvePrinter, docs: dict[str, Path], tmp_path: Path
) -> None:
    """``NumCopies 3`` is charged 3 copies; converted to raster (which drops it), the
    printer is asked for them instead."""
    head, _, rest = docs["ps3"].read_bytes().partition(b"\n")
    numcopies = tmp_path / "copies.ps"
    numcopies.write_bytes(head + b"\n<< /NumCopies 3 >> setpagedevice\n" + rest)
    po, doc = await _print(stack, raster_printer, numcopies, cost_mono="0.10")
    assert doc is not None and doc.document_format == PWG_RASTER
    assert count_pages(doc.path, None).pages == 3 and doc.copies == 3
    detail = await _detail(stack, po.id)  # type: ignore[attr-defined]
    assert Decimal(str(detail["cost"])) == _cost(3, 3)
