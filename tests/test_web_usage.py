"""The web Usage page (SQLite, PostgreSQL): its tables and charts equal the usage report.

Signed in through the real sign-in form, an accounts editor reads
``/admin/usage``; every number in its tables (per day, printer, account and
the totals) and every bar of its SVG charts is compared with
``GET /api/v1/reports/usage`` for the same window. A user may not see it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import charging
from billing.enums import PrintStatus
from tests import factories as f
from tests.test_usage_report import _job
from tests.test_web import add_user, make_app, page, sign_in

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
FIELDS = ("pages", "color_pages", "mono_pages", "sheets", "cost")


class Tables(HTMLParser):
    """``<table id=…>`` rows by ``data-key``, cells by ``data-field``; SVG bars by chart."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        self.bars: dict[str, dict[str, dict[str, str]]] = {}
        self._table: str | None = None
        self._row: str | None = None
        self._field: str | None = None
        self._chart: str | None = None
        self._bar: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = {}
        elif tag == "tr" and self._table is not None:
            self._row = a.get("data-key", "")
            self.tables[self._table][self._row] = {}
        elif tag == "td" and "data-field" in a:
            self._field = a["data-field"]
        elif tag == "svg":
            self._chart = a["id"]
            self.bars[self._chart] = {}
        elif tag == "g" and self._chart is not None:
            self._bar = a["data-key"]
            self.bars[self._chart][self._bar] = {"total": a["data-total"]}
        elif tag == "rect" and self._chart is not None and self._bar is not None:
            self.bars[self._chart][self._bar][a["data-series"]] = a["data-value"]
            self.bars[self._chart][self._bar][a["data-series"] + ":width"] = a["width"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "td":
            self._field = None
        elif tag == "svg":
            self._chart = None

    def handle_data(self, data: str) -> None:
        if self._table is not None and self._row is not None and self._field is not None:
            cells = self.tables[self._table][self._row]
            cells[self._field] = cells.get(self._field, "") + data.strip()


def parse(text: str) -> Tables:
    found = Tables()
    found.feed(text)
    return found


def as_report(cells: dict[str, str]) -> dict[str, Any]:
    """A table row as the API writes it (the page shows money with its currency)."""
    out: dict[str, Any] = {k: int(cells[k]) for k in FIELDS if k != "cost"}
    out["cost"] = cells["cost"].removesuffix(" EUR")
    return out


async def test_the_usage_page_shows_the_report(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path, sessionmaker: Sessions
) -> None:
    client = await aiohttp_client(make_app(db_url, tmp_path))
    await add_user(sessionmaker, "eve", "accounts-editor")
    await add_user(sessionmaker, "ulla")
    async with sessionmaker() as s, s.begin():
        alice, bob = await f.user(s, "alice"), await f.user(s, "bob")
        gala = await f.shared(s, "Events/Gala")
        direct, colour = await f.printer(s, "pp-direct"), await f.printer(s, "pp-colour")
        p1 = await _job(s, direct, "alice", [(alice, 1), (bob, 2)], pages=5, duplex=True)
        await f.charge(s, p1, "1.50")
        p2 = await _job(s, colour, "bob", [(gala, 2)], pages=4, color=True, color_pages=3)
        await f.charge(s, p2, "2.00")
        p3 = await _job(s, colour, "alice", [(alice, 1)], pages=2, color=True)
        await f.finish(s, p3, PrintStatus.CANCELED, reason="canceled-in-cups")
        await charging.reverse(s, p2, actor="test", reason="jammed")  # a refund: nets to 0
        token = await f.token(s, "accounts-editor")

    resp = await sign_in(client, "eve")
    assert resp is not None and resp.status == 303
    text = await page(client, "/admin/usage")
    assert 'href="/admin/usage" aria-current="page"' in text  # in the nav
    found = parse(text)
    headers = {"Authorization": f"Bearer {token}"}
    for group_by, table_id in (("day", "usage-day"), ("printer", "usage-printer"),
                               ("account", "usage-account")):  # fmt: skip
        async with client.get(
            "/api/v1/reports/usage", params={"group_by": group_by}, headers=headers
        ) as r:
            assert r.status == 200
            report = await r.json()
        rows = {k: as_report(v) for k, v in found.tables[table_id].items() if k}
        expected = {i["key"]: {k: i[k] for k in FIELDS} for i in report["items"]}
        assert rows == expected, group_by
        assert as_report(found.tables["usage-totals"][""]) == report["totals"]
    # p1 only (p2 refunded, p3 canceled): 15 pages on 9 sheets, no colour, 1.50.
    assert as_report(found.tables["usage-totals"][""]) == {
        "pages": 15, "color_pages": 0, "mono_pages": 15, "sheets": 9, "cost": "1.50",
    }  # fmt: skip
    # The charts draw the same numbers; bars scale to the largest row.
    accounts = found.bars["chart-account-cost"]
    assert {k: Decimal(v["cost"]) for k, v in accounts.items()} == {
        "user:alice": Decimal("0.50"), "user:bob": Decimal("1.00"),
        "shared:Events/Gala": Decimal("0.00"),
    }  # fmt: skip
    assert float(accounts["user:bob"]["cost:width"]) == 360
    assert float(accounts["user:alice"]["cost:width"]) == 180
    assert float(accounts["shared:Events/Gala"]["cost:width"]) == 0
    (day,) = found.bars["chart-day-pages"].values()
    assert (day["color"], day["mono"]) == ("0", "15")
    colour_mono = found.bars["chart-color-mono"]
    assert (colour_mono["colour"]["color"], colour_mono["mono"]["mono"]) == ("0", "15")
    # A window before anything was charged: empty tables, nothing drawn.
    empty = parse(await page(client, "/admin/usage?until=2000-01-01"))
    assert {k for k in empty.tables["usage-account"] if k} == set()
    assert empty.bars["chart-account-cost"] == {}
    await page(client, "/admin/usage?since=soon", 400)

    # No inline style anywhere (the CSP forbids it): colours are SVG attributes.
    assert not re.search(r"\sstyle=", text)
    other = await aiohttp_client(make_app(db_url, tmp_path))
    resp = await sign_in(other, "ulla")
    assert resp is not None and resp.status == 303
    await page(other, "/admin/usage", 403)
