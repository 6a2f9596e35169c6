"""Exact pages, colour and document copies through the real intake (issue #12).

Jobs are posted to the real service's intake socket (``create_app``), counted
there (the cheap counter, then Ghostscript as a subprocess), recorded, then
completed and charged through ``lifecycle`` as the tracker does; the API and
the CSV export show how each was counted. Real gs, nothing mocked; SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pikepdf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.enums import PrintStatus
from billing.models import Event, PrintIn, PrintOut
from proxy.api import export
from proxy.app import create_app
from proxy.config import build_config
from proxy.pages import limits
from proxy.pipeline.lifecycle import Change, ending
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]

MARK = "/Helvetica findfont 24 scalefont setfont 72 720 moveto (page) show"


def no_dsc_postscript(pages: int, *, header: str = "") -> bytes:
    """PostScript with ``pages`` showpages and no DSC comment at all."""
    return ("%!\n" + header + f"{MARK}\nshowpage\n" * pages).encode()


def three_page_pdf_one_colour(path: Path) -> bytes:
    doc = pikepdf.new()
    for content in (b"0 g 10 10 100 50 re f", b"1 0 0 rg 10 10 100 50 re f", b"0.3 g 0 0 9 9 re f"):
        doc.add_blank_page(page_size=(200, 200))
        doc.pages[-1].Contents = doc.make_stream(content)
    doc.save(path)
    doc.close()
    return path.read_bytes()


async def post_job(socket: Path, printer: str, document: bytes, options: str = "") -> Any:
    meta = {
        "printer": printer,
        "job_id": 12,
        "job_uuid": f"urn:uuid:{uuid.uuid4()}",
        "user": "alice",
        "title": "count",
        "copies": 1,
        "options": options,
        "content_type": "application/octet-stream",
        "host": "localhost",
    }
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://intake/intake/v1/jobs", data=document, headers={"X-Proxyprint-Meta": header}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, body
        return body


@pytest.fixture
async def service(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, sessionmaker: Sessions
) -> tuple[Client, Path, str]:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        printer = await f.printer(s, "pp-colour")  # mono 0.10
        printer.cost_color = Decimal("0.50")
        same = await f.printer(s, "pp-mono")  # colour costs what mono does: not measured
        same.cost_color = Decimal("0.10")
        await f.printer(s, "pp-unset")  # mono 0.10, colour 0: a colour price never set
        admin = await f.token(s, "admin")
    socket = short_tmp / "i.sock"
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(short_tmp / "spool")},
            "intake": {"socket": str(socket)},
        }
    )
    client = await aiohttp_client(create_app(config, workers=False))
    return client, socket, admin


async def complete(client: Client, print_out_id: int) -> PrintOut:
    """The target reported the job completed: charged by the printer's cost rules."""
    async with ending(client.app) as endings:
        po = await endings.session.get(PrintOut, print_out_id)
        assert po is not None
        assert await endings.apply(po, Change(PrintStatus.COMPLETED), actor="tracker")
    return po


def lines(po: PrintOut) -> dict[str, tuple[int, Decimal]]:
    """The cost lines: description -> (quantity, amount); amounts are exact Decimals."""
    assert po.cost_detail is not None
    return {d["description"]: (d["quantity"], Decimal(d["amount"])) for d in po.cost_detail}


async def api_print_out(client: Client, token: str, print_out_id: int) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get(f"/api/v1/printouts/{print_out_id}", headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


async def csv_rows(client: Client, token: str) -> dict[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get("/api/v1/printouts.csv", headers=headers) as resp:
        assert resp.status == 200
        rows = list(csv.reader(io.StringIO(await resp.text(), newline="")))
    assert rows[0] == list(export.COLUMNS)
    return {int(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


async def print_in_of(sessionmaker: Sessions, print_in_id: int) -> PrintIn:
    async with sessionmaker() as s:
        found = await s.get(PrintIn, print_in_id)
        assert found is not None
        return found


async def test_fifty_pages_without_dsc_are_charged_fifty(
    service: tuple[Client, Path, str], sessionmaker: Sessions
) -> None:
    client, socket, admin = service
    answer = await post_job(socket, "pp-mono", no_dsc_postscript(50))
    pin = await print_in_of(sessionmaker, answer["print_in"])
    assert (pin.pages, pin.pages_estimated, pin.count_method) == (50, False, "ghostscript")
    assert (pin.color_pages, pin.document_copies) == (0, 1)
    po = await complete(client, answer["print_out"])
    assert (po.pages, po.cost) == (50, Decimal("5.00"))
    assert lines(po) == {"mono pages": (50, Decimal("5.00"))}
    shown = await api_print_out(client, admin, po.id)
    assert shown["pages"] == 50 and shown["pages_estimated"] is False
    assert shown["count_method"] == "ghostscript" and shown["color_pages"] == 0


async def test_colour_postscript_on_a_printer_without_colour_price_is_mono(
    service: tuple[Client, Path, str], sessionmaker: Sessions
) -> None:
    """Counted by gs (no DSC): its colour page is shown, not charged at a price never set."""
    client, socket, _admin = service
    document = b"%!\n1 0 0 setrgbcolor 9 9 99 99 rectfill showpage\n" + no_dsc_postscript(1)[3:]
    answer = await post_job(socket, "pp-unset", document)
    pin = await print_in_of(sessionmaker, answer["print_in"])
    assert (pin.pages, pin.color_pages, pin.color, pin.count_method) == (2, 1, False, "ghostscript")
    po = await complete(client, answer["print_out"])
    assert lines(po) == {"mono pages": (2, Decimal("0.20"))}


async def test_numcopies_forty_is_charged_forty_copies(
    service: tuple[Client, Path, str], sessionmaker: Sessions
) -> None:
    client, socket, admin = service
    document = no_dsc_postscript(1, header="<< /NumCopies 40 >> setpagedevice\n")
    answer = await post_job(socket, "pp-mono", document)
    pin = await print_in_of(sessionmaker, answer["print_in"])
    assert (pin.pages, pin.document_copies, pin.count_method) == (1, 40, "ghostscript")
    po = await complete(client, answer["print_out"])
    assert po.copies == 1  # the delegation's copies; the document's multiply them
    assert lines(po) == {"mono pages": (40, Decimal("4.00"))}
    assert po.cost == Decimal("4.00")
    shown = await api_print_out(client, admin, po.id)
    assert (shown["copies"], shown["document_copies"]) == (1, 40)
    row = (await csv_rows(client, admin))[po.id]
    assert (row["copies"], row["document_copies"]) == ("1", "40")
    assert row["count_method"] == "ghostscript"


async def test_colour_pdf_is_charged_per_colour_page(
    service: tuple[Client, Path, str], sessionmaker: Sessions, tmp_path: Path
) -> None:
    client, socket, admin = service
    document = three_page_pdf_one_colour(tmp_path / "three.pdf")
    colour = await post_job(socket, "pp-colour", document)
    mono = await post_job(socket, "pp-colour", document, "print-color-mode=monochrome")
    on_mono_printer = await post_job(socket, "pp-mono", document)
    unset = await post_job(socket, "pp-unset", document)

    pin = await print_in_of(sessionmaker, colour["print_in"])
    assert (pin.pages, pin.color_pages, pin.color, pin.count_method) == (
        3,
        1,
        True,
        "pdf-page-tree",
    )
    po = await complete(client, colour["print_out"])
    assert lines(po) == {"mono pages": (2, Decimal("0.20")), "color pages": (1, Decimal("0.50"))}
    assert po.cost == Decimal("0.70")

    # Asked in grey: colour is not measured, and every page is mono.
    grey = await complete(client, mono["print_out"])
    assert lines(grey) == {"mono pages": (3, Decimal("0.30"))}
    assert (await print_in_of(sessionmaker, mono["print_in"])).color_pages is None
    # Colour costs what mono does: not measured either.
    plain = await print_in_of(sessionmaker, on_mono_printer["print_in"])
    assert (plain.color_pages, plain.count_method) == (None, "pdf-page-tree")
    # A colour price of 0 is one never set: not measured, charged mono (not free colour).
    assert lines(await complete(client, unset["print_out"])) == {"mono pages": (3, Decimal("0.30"))}

    shown = await api_print_out(client, admin, po.id)
    assert (shown["pages"], shown["color_pages"], shown["pages_estimated"]) == (3, 1, False)
    assert shown["count_method"] == "pdf-page-tree"
    rows = await csv_rows(client, admin)
    assert rows[po.id]["color_pages"] == "1" and rows[po.id]["pages_estimated"] == "false"
    assert rows[grey.id]["color_pages"] == ""


async def test_a_document_gs_cannot_read_keeps_its_estimate(
    service: tuple[Client, Path, str], sessionmaker: Sessions
) -> None:
    client, socket, admin = service
    answer = await post_job(socket, "pp-mono", b"%!PS\n(x) frobnicate showpage showpage\n")
    async with sessionmaker() as s:
        said = (
            await s.scalars(
                select(Event).where(
                    Event.subject_type == "print_out",
                    Event.subject_id == str(answer["print_out"]),
                    Event.reason == "pages-estimated",
                )
            )
        ).all()
    assert len(said) == 1 and "cannot interpret" in (said[0].message or "")
    pin = await print_in_of(sessionmaker, answer["print_in"])
    assert (pin.pages, pin.pages_estimated, pin.count_method) == (1, True, "estimate")
    po = await complete(client, answer["print_out"])
    assert po.cost == Decimal("0.10")
    shown = await api_print_out(client, admin, po.id)
    assert (shown["pages_estimated"], shown["count_method"]) == (True, "estimate")
    assert any(e["reason"] == "pages-estimated" for e in shown["events"])
    row = (await csv_rows(client, admin))[po.id]
    assert (row["pages_estimated"], row["count_method"]) == ("true", "estimate")


async def test_a_timeout_keeps_the_estimate(
    service: tuple[Client, Path, str], sessionmaker: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _client, socket, _admin = service
    monkeypatch.setattr(limits, "GS_TIMEOUT", 0.01)
    answer = await post_job(socket, "pp-mono", no_dsc_postscript(3000))
    async with sessionmaker() as s:
        said = await s.scalar(
            select(Event.message).where(
                Event.subject_id == str(answer["print_out"]), Event.reason == "pages-estimated"
            )
        )
    assert said is not None and "took longer than 0.01 s" in said
    pin = await print_in_of(sessionmaker, answer["print_in"])
    assert (pin.pages, pin.pages_estimated, pin.count_method) == (1, True, "estimate")
