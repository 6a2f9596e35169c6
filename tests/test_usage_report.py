"""The usage report and partial reversals, through the real app factory (SQLite, PostgreSQL).

``GET /reports/usage`` sums the print-outs' ledger entries: per account its
cost is what the ledger charged it net, and every grouping (user, account,
printer, day) adds up to the same totals. A reversal takes a reason and may
name some of a print-out's transactions (a partial reversal): one
compensating entry each, and every transaction in the API shows
``reversed``. The property test runs random days of mixed jobs, full and
partial reversals and deposits/debits against a model of what each account
owes: the ledger balance, the CSV export's sums and the usage report agree
with it and with each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import tests.hypothesis_profiles  # noqa: F401  (profiles before any @given)
from billing import ledger, prorata
from billing.enums import PrintStatus
from billing.models import Account, Event, LedgerEntry, PrintIn, PrintOut
from proxy.app import create_app
from proxy.config import build_config
from tests import factories as f
from tests.test_payer_view import csv_sums

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
GROUPINGS = ("user", "account", "printer", "day")


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    return await aiohttp_client(create_app(config, workers=False, intake=False))


async def api(
    client: Client, method: str, path: str, token: str, expect: int = 200, **kw: Any
) -> Any:
    async with client.request(
        method, path, headers={"Authorization": f"Bearer {token}"}, **kw
    ) as resp:
        body = await (resp.text() if path.endswith(".csv") else resp.json())
        assert resp.status == expect, (method, path, resp.status, body)
        return body


async def report(client: Client, token: str, group_by: str, **window: str) -> Any:
    return await api(
        client, "GET", "/api/v1/reports/usage", token, params={"group_by": group_by, **window}
    )


async def _job(
    s: AsyncSession,
    printer: Any,
    delegate: str,
    payers: list[tuple[Account, int]],
    *,
    pages: int,
    duplex: bool = False,
    color: bool = False,
    color_pages: int | None = None,
    created_at: dt.datetime | None = None,
) -> PrintOut:
    po = await f.print_out(
        s, printer, delegate, charged_to=payers, pages=pages, created_at=created_at
    )
    pin = await s.get(PrintIn, po.print_in_id)
    assert pin is not None
    pin.duplex, pin.color, pin.color_pages = duplex, color, color_pages
    await s.flush()
    return po


async def test_usage_totals_by_every_grouping_and_a_partial_reversal(
    client: Client, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        alice, bob = await f.user(s, "alice"), await f.user(s, "bob")
        gala = await f.shared(s, "Events/Gala")
        direct = await f.printer(s, "pp-direct")
        colour = await f.printer(s, "pp-colour")
        # 5 pages duplex (3 sheets a copy), alice 1 + bob 2 copies: 15 pages, 9 sheets.
        p1 = await _job(s, direct, "alice", [(alice, 1), (bob, 2)], pages=5, duplex=True)
        await f.charge(s, p1, "1.50")
        # 4 pages, colour measured on 3, gala 2 copies: 8 pages, 8 sheets, 6 colour.
        p2 = await _job(s, colour, "bob", [(gala, 2)], pages=4, color=True, color_pages=3)
        await f.charge(s, p2, "2.00")
        # Colour not measured: every page is colour. Canceled: nothing charged.
        p3 = await _job(s, colour, "alice", [(alice, 1)], pages=2, color=True)
        await f.charge(s, p3, "0.80")
        p4 = await _job(s, direct, "alice", [(alice, 1)], pages=9)
        await f.finish(s, p4, PrintStatus.CANCELED, reason="canceled-in-cups")
        editor = await f.token(s, "accounts-editor")
        operator = await f.token(s, "ticket-operator")
        bob_id = bob.id

    detail = await api(client, "GET", f"/api/v1/printouts/{p1.id}", editor)
    assert detail["reversed"] == {"amount": "0.00", "status": "none"}
    shares = {t["account"]["name"]: t for t in detail["transactions"]}
    assert (shares["alice"]["amount"], shares["bob"]["amount"]) == ("0.50", "1.00")

    # bob's share only, with a reason: one compensating entry.
    path = f"/api/v1/printouts/{p1.id}/reverse"
    body = {"reason": "bob was away", "transactions": [shares["bob"]["id"]]}
    done = await api(client, "POST", path, editor, json=body)
    assert done["reversed"] == 1
    assert done["print_out"]["reversed"] == {"amount": "1.00", "status": "partial"}
    after = {t["account"]["name"]: t["reversed"] for t in done["print_out"]["transactions"]}
    assert after == {
        "alice": {"amount": "0.00", "status": "none"},
        "bob": {"amount": "1.00", "status": "full"},
    }
    assert (await api(client, "POST", path, editor, json=body))["reversed"] == 0  # twice: no-op
    other = await api(
        client, "POST", path, editor, 400, json={"reason": "x", "transactions": [10**6]}
    )
    assert "not among" in other["error"]["message"]
    await api(client, "POST", path, editor, 400, json={"reason": "x", "transactions": "all"})
    await api(client, "POST", path, editor, 400, json={"reason": 5})
    async with sessionmaker() as s:
        entries = (
            await s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.print_out_id == p1.id)
                .order_by(LedgerEntry.id)
            )
        ).all()
        assert [(e.kind, e.account_id, e.amount) for e in entries][-1] == (
            "reversal",
            bob_id,
            Decimal("1.00"),
        )
        assert entries[-1].comment == f"reversal of print-out {p1.id}: bob was away"
        event = await s.scalar(
            select(Event).where(Event.reason == "reversed").order_by(Event.id.desc())
        )
        assert event is not None and event.message is not None and "bob was away" in event.message
        assert event.actor.startswith("api:accounts-editor:")
    # The listing shows the same per transaction, bob's ledger per entry.
    listed = await api(client, "GET", "/api/v1/printouts", editor, params={"account": "bob"})
    assert listed["items"][0]["reversed"]["status"] == "partial"
    ledger_page = await api(client, "GET", f"/api/v1/accounts/{bob_id}/transactions", editor)
    back, charged = ledger_page["items"]  # newest first
    assert (charged["kind"], charged["amount"]) == ("charge", "-1.00")
    assert charged["reversed"] == {"amount": "1.00", "status": "full"}
    assert back["reverses_id"] == charged["id"] and back["reversed"]["status"] == "none"

    by = {g: await report(client, editor, g) for g in GROUPINGS}
    # p1 less bob's share: alice 5 pages / 3 sheets; p2: 8 / 8 / 6 colour; p3: 2 / 2 / 2.
    totals = {"pages": 15, "sheets": 13, "color_pages": 8, "mono_pages": 7, "cost": "3.30"}
    for g in GROUPINGS:
        assert by[g]["totals"] == totals, g
        assert by[g]["group_by"] == g and by[g]["currency"] == "EUR"
    accounts = {i["key"]: i for i in by["account"]["items"]}
    assert accounts["user:alice"] == {
        "key": "user:alice",
        "account": {"type": "user", "name": "alice"},
        "pages": 7,
        "sheets": 5,
        "color_pages": 2,
        "mono_pages": 5,
        "cost": "1.30",
    }
    assert (accounts["user:bob"]["pages"], accounts["user:bob"]["cost"]) == (0, "0.00")
    assert accounts["shared:Events/Gala"]["cost"] == "2.00"
    printers = {i["key"]: (i["pages"], i["cost"]) for i in by["printer"]["items"]}
    assert printers == {"pp-colour": (10, "2.80"), "pp-direct": (5, "0.50")}
    users = {i["key"]: i["cost"] for i in by["user"]["items"]}
    assert users == {"alice": "1.30", "bob": "2.00"}
    (today,) = by["day"]["items"]
    assert today["key"] == dt.datetime.now(dt.UTC).date().isoformat()
    # Each account's report cost is what the ledger charged it (no deposits here).
    async with sessionmaker() as s:
        for key, item in accounts.items():
            type_, _, name = key.partition(":")
            acc = await s.scalar(select(Account).where(Account.type == type_, Account.path == name))
            assert acc is not None
            assert Decimal(item["cost"]) == -(await ledger.balance(s, acc.id)), key
            assert item["pages"] == await ledger.page_count(s, acc.id), key
    # A window that ends before anything was charged has no rows; bad input is a 400.
    empty = await report(client, editor, "account", until="2000-01-01")
    assert empty["items"] == [] and empty["totals"]["cost"] == "0.00"
    await api(client, "GET", "/api/v1/reports/usage", editor, 400, params={"group_by": "week"})
    await api(client, "GET", "/api/v1/reports/usage", editor, 400,
              params={"group_by": "day", "since": "2024-02-01", "until": "2024-01-01"})  # fmt: skip
    await api(client, "GET", "/api/v1/reports/usage", operator, 403, params={"group_by": "day"})


# --- the property: random days against a model -------------------------------------------


@dataclass
class Job:
    delegate: int  # index into PEOPLE
    printer: int
    payers: list[tuple[int, int]]  # (account index, weight), distinct accounts
    pages: int
    duplex: bool
    color: bool
    color_pages: int | None
    cost_cents: int
    fate: str  # canceled | charged | reversed | partial
    partial: list[int] = field(default_factory=list)  # positions in payers to reverse
    day: int = 0
    reversal_day: int = 0


@dataclass
class Day:
    jobs: list[Job]
    adjustments: list[tuple[int, int, int]]  # (account index, cents, day)


PEOPLE = ("ann", "ben", "cid")
SHARED = ("Lab", "Events/Gala")
N_ACCOUNTS = len(PEOPLE) + len(SHARED)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    payer_ids = draw(st.lists(st.integers(0, N_ACCOUNTS - 1), min_size=1, max_size=3, unique=True))
    payers = [(a, draw(st.integers(1, 3))) for a in payer_ids]
    pages = draw(st.integers(1, 6))
    color = draw(st.booleans())
    fate = draw(st.sampled_from(["canceled", "charged", "charged", "reversed", "partial"]))
    partial: list[int] = []
    if fate == "partial":
        partial = draw(
            st.lists(st.integers(0, len(payers) - 1), min_size=1, max_size=len(payers), unique=True)
        )
    day = draw(st.integers(0, 2))
    return Job(
        delegate=draw(st.integers(0, len(PEOPLE) - 1)),
        printer=draw(st.integers(0, 1)),
        payers=payers,
        pages=pages,
        duplex=draw(st.booleans()),
        color=color,
        color_pages=draw(st.none() | st.integers(0, pages + 1)) if color else None,
        cost_cents=draw(st.integers(0, 999)),
        fate=fate,
        partial=partial,
        day=day,
        reversal_day=day + draw(st.integers(0, 1)),
    )


days = st.builds(
    Day,
    jobs=st.lists(jobs(), min_size=1, max_size=8),
    adjustments=st.lists(
        st.tuples(
            st.integers(0, N_ACCOUNTS - 1),
            st.integers(-2000, 2000).filter(bool),
            st.integers(0, 2),
        ),
        max_size=3,
    ),
)


def cents(value: int) -> Decimal:
    return Decimal(value) / 100


@dataclass
class Model:
    """What each account owes, computed without the service: shares by pro rata."""

    balance: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    cost: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    pages: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    sheets: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    color: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    cost_by_day: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def model_of(day: Day) -> Model:
    m = Model()
    for job in day.jobs:
        if job.fate == "canceled":
            continue
        shares = prorata.split(cents(job.cost_cents), [w for _, w in job.payers], f.EUR)
        sheets = (job.pages + 1) // 2 if job.duplex else job.pages
        colour = 0
        if job.color:
            colour = job.pages if job.color_pages is None else min(job.color_pages, job.pages)
        reversed_at = {
            "charged": set(),
            "reversed": set(range(len(job.payers))),
            "partial": set(job.partial),
        }[job.fate]
        for i, ((account, weight), share) in enumerate(zip(job.payers, shares, strict=True)):
            m.cost_by_day[job.day] += share
            if i in reversed_at:
                m.cost_by_day[job.reversal_day] -= share
                continue  # given back: nothing left on the account
            m.balance[account] -= share
            m.cost[account] += share
            m.pages[account] += job.pages * weight
            m.sheets[account] += sheets * weight
            m.color[account] += colour * weight
    for account, amount, _day in day.adjustments:
        m.balance[account] += cents(amount)
    return m


async def _stamp(s: AsyncSession, after_id: int, at: dt.datetime) -> int:
    """Date the ledger entries written since ``after_id`` at ``at`` (a simulated day)."""
    await s.execute(update(LedgerEntry).where(LedgerEntry.id > after_id).values(created_at=at))
    return int(await s.scalar(select(func.max(LedgerEntry.id))) or 0)


async def play(client: Client, sessions: Sessions, day: Day, n: int) -> None:
    """One example: its own accounts and its own dates (``n`` weeks after the first)."""
    start = dt.datetime(2030, 1, 7, tzinfo=dt.UTC) + dt.timedelta(weeks=n)
    names = [f"{p}{n}" for p in PEOPLE]
    async with sessions() as s, s.begin():
        accounts = [await f.user(s, name) for name in names]
        accounts += [await f.shared(s, f"{path}{n}") for path in SHARED]
        printers = [await f.printer(s, f"pp-a{n}"), await f.printer(s, f"pp-b{n}")]
        editor = await f.token(s, "accounts-editor")
        mark = int(await s.scalar(select(func.max(LedgerEntry.id))) or 0)
    made: list[tuple[Job, PrintOut]] = []
    for i, job in enumerate(day.jobs):
        at = start + dt.timedelta(days=job.day, minutes=i)
        async with sessions() as s, s.begin():
            payers = [(accounts[a], w) for a, w in job.payers]
            po = await _job(
                s, printers[job.printer], names[job.delegate], payers, pages=job.pages,
                duplex=job.duplex, color=job.color, color_pages=job.color_pages, created_at=at,
            )  # fmt: skip
            if job.fate == "canceled":
                await f.finish(s, po, PrintStatus.CANCELED, reason="canceled-in-cups")
            else:
                await f.charge(s, po, str(cents(job.cost_cents)))
            mark = await _stamp(s, mark, at)
        made.append((job, po))
    for i, (job, po) in enumerate(made):  # reversals through the API, later that day or the next
        if job.fate not in ("reversed", "partial"):
            continue
        body: dict[str, Any] = {"reason": f"refund {i}"}
        if job.fate == "partial":
            detail = await api(client, "GET", f"/api/v1/printouts/{po.id}", editor)
            body["transactions"] = [detail["transactions"][k]["id"] for k in job.partial]
        done = await api(client, "POST", f"/api/v1/printouts/{po.id}/reverse", editor, json=body)
        assert done["reversed"] == len(job.partial or job.payers)
        state = "partial" if len(job.partial) not in (0, len(job.payers)) else "full"
        assert done["print_out"]["reversed"]["status"] == state
        async with sessions() as s, s.begin():
            mark = await _stamp(s, mark, start + dt.timedelta(days=job.reversal_day, hours=20))
    for k, (account, amount, when) in enumerate(day.adjustments):
        body = {"amount": str(cents(amount)), "reason": "cash", "idempotency_key": f"e{n}-{k}"}
        path = f"/api/v1/accounts/{accounts[account].id}/adjustments"
        await api(client, "POST", path, editor, 201, json=body)
        async with sessions() as s, s.begin():
            mark = await _stamp(s, mark, start + dt.timedelta(days=when, hours=21))

    m = model_of(day)
    window = {"since": start.isoformat(), "until": (start + dt.timedelta(days=7)).isoformat()}
    async with sessions() as s:
        balances = await ledger.balances(s, [a.id for a in accounts])
    text = await api(client, "GET", "/api/v1/printouts.csv", editor, params=window)
    from_csv = csv_sums(text)
    by = {g: await report(client, editor, g, **window) for g in GROUPINGS}
    rows = {i["key"]: i for i in by["account"]["items"]}
    for i, acc in enumerate(accounts):
        key = f"{acc.type}:{acc.path}"
        assert balances[acc.id] == m.balance[i], key  # the ledger is the model
        # CSV and report: what the ledger charged net, i.e. the balance less deposits/debits.
        net = m.balance[i] - sum((cents(a) for x, a, _ in day.adjustments if x == i), Decimal(0))
        assert from_csv.get((acc.type, acc.path), Decimal(0)) == -net == m.cost[i], key
        row = rows.get(key, {"cost": "0.00", "pages": 0, "sheets": 0, "color_pages": 0})
        assert Decimal(row["cost"]) == m.cost[i], key
        assert (row["pages"], row["sheets"], row["color_pages"]) == (
            m.pages[i], m.sheets[i], m.color[i]
        ), key  # fmt: skip
    totals = by["account"]["totals"]
    assert Decimal(totals["cost"]) == sum(m.cost.values(), Decimal(0))
    assert all(by[g]["totals"] == totals for g in GROUPINGS)
    per_day = {i["key"]: Decimal(i["cost"]) for i in by["day"]["items"]}
    for d, cost in m.cost_by_day.items():
        key = (start + dt.timedelta(days=d)).date().isoformat()
        assert per_day.get(key, Decimal(0)) == cost, key
    # A day's window gives that day's row alone.
    one = {"since": start.isoformat(), "until": (start + dt.timedelta(days=1)).isoformat()}
    first = await report(client, editor, "account", **one)
    assert Decimal(first["totals"]["cost"]) == m.cost_by_day.get(0, Decimal(0))


async def test_csv_and_usage_report_equal_the_ledger_over_random_days(
    client: Client, sessionmaker: Sessions, db_url: str
) -> None:
    loop = asyncio.get_running_loop()
    examples = 4 if db_url.startswith("sqlite") else 1
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(day=days)
    def check(day: Day) -> None:
        nonlocal ran
        ran += 1
        asyncio.run_coroutine_threadsafe(play(client, sessionmaker, day, ran), loop).result(120)

    await asyncio.to_thread(check)
    assert ran >= examples
