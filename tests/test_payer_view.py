"""The payer's view and the CSV export's sums, through the real app factory (SQLite, PostgreSQL).

A ``user`` token sees what she printed (``role=delegate``, the default), what
is charged to her (``payer=me`` / ``role=payer``) or both (``role=any``);
``?account=`` takes an id, a name or ``type:name``. The CSV export has a
``reversed`` column and a row per reversal, so that each account's amounts
summed over the CSV are what the ledger charged it net (minus its balance).
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import charging, ledger
from billing.enums import PrintStatus
from billing.models import Account
from proxy.api import export
from proxy.app import create_app
from proxy.config import build_config
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    return await aiohttp_client(create_app(config, workers=False, intake=False))


async def get(client: Client, token: str, path: str, expect: int = 200, **params: str) -> object:
    async with client.get(
        path, params=params, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        body = await (resp.text() if path.endswith(".csv") else resp.json())
        assert resp.status == expect, body
        return body


async def ids(client: Client, token: str, **params: str) -> list[int]:
    body = await get(client, token, "/api/v1/printouts", **params)
    assert isinstance(body, dict)
    return [item["id"] for item in body["items"]]


async def test_a_user_sees_what_she_printed_and_what_she_pays_for(
    client: Client, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        alice, bob, carol = [await f.user(s, n) for n in ("alice", "bob", "carol")]
        gala = await f.shared(s, "Events/Gala")
        printer = await f.printer(s)
        p1 = await f.print_out(s, printer, "carol", charged_to=[(alice, 1), (bob, 2)])
        p2 = await f.print_out(s, printer, "alice", charged_to=[(alice, 1)])
        p3 = await f.print_out(s, printer, "bob", charged_to=[(carol, 1)])
        p4 = await f.print_out(s, printer, "carol", charged_to=[(gala, 1), (carol, 1)])
        for po, cost in ((p1, "0.90"), (p2, "0.30"), (p3, "0.50"), (p4, "1.20")):
            await f.charge(s, po, cost)
        tokens = {n: await f.token(s, "user", user=n) for n in ("alice", "bob")}
        admin = await f.token(s, "admin")
    a, b = tokens["alice"], tokens["bob"]
    assert await ids(client, a) == [p2.id]  # printed (the default role)
    assert await ids(client, a, role="delegate") == [p2.id]
    assert await ids(client, a, payer="me") == [p2.id, p1.id]
    assert await ids(client, a, role="payer") == [p2.id, p1.id]
    assert await ids(client, a, role="any") == [p2.id, p1.id]
    assert await ids(client, b, role="any") == [p3.id, p1.id]
    assert await ids(client, b, role="payer") == [p1.id]
    assert await ids(client, b, role="any", limit="1") == [p3.id]  # paged as ever
    await get(client, a, "/api/v1/printouts", 403, payer="bob")
    await get(client, a, "/api/v1/printouts", 400, role="owner")
    # The detail of a print-out she pays for, not of one she has nothing to do with.
    await get(client, a, f"/api/v1/printouts/{p1.id}")
    await get(client, a, f"/api/v1/printouts/{p3.id}", 404)
    # Staff: for any user; accounts by id, name or type:name.
    assert await ids(client, admin, payer="carol") == [p4.id, p3.id]
    assert await ids(client, admin, user="carol", role="delegate") == [p4.id, p1.id]
    await get(client, admin, "/api/v1/printouts", 400, role="payer")  # whose?
    assert await ids(client, admin, account="alice") == [p2.id, p1.id]
    assert await ids(client, admin, account="user:alice") == [p2.id, p1.id]
    assert await ids(client, admin, account=str(alice.id)) == [p2.id, p1.id]
    assert await ids(client, admin, account="shared:Events/Gala") == [p4.id]
    assert await ids(client, admin, account="Events/Gala") == [p4.id]
    assert await ids(client, admin, account="nobody") == []
    async with sessionmaker() as s, s.begin():
        await f.shared(s, "alice")
    body = await get(client, admin, "/api/v1/printouts", 400, account="alice")
    assert "user:alice" in str(body) and "shared:alice" in str(body)
    # The CSV takes the same filters.
    text = await get(client, a, "/api/v1/printouts.csv", payer="me")
    assert isinstance(text, str)
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(text)))[1:]] == [p2.id, p1.id]


def csv_sums(text: str) -> dict[tuple[str, str], Decimal]:
    """Per (type, account): the amounts of every transactions cell, summed."""
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        cell = row["transactions"]
        if not cell:
            continue
        for part in cell.split(";"):
            name, type_, _weight, amount = part.split(":")
            sums[type_, name] += Decimal(amount)
    return dict(sums)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_csv_sums_equal_the_ledger_after_a_day_of_jobs_and_reversals(
    client: Client, sessionmaker: Sessions, seed: int
) -> None:
    rng = random.Random(seed)
    async with sessionmaker() as s, s.begin():
        people = [await f.user(s, n) for n in ("alice", "bob", "carol", "dave")]
        shared = [await f.shared(s, "Events/Gala"), await f.group(s, "sales")]
        accounts: list[Account] = [*people, *shared]
        printer = await f.printer(s)
        reversed_ids = []
        for i in range(rng.randint(10, 25)):
            payers = rng.sample(accounts, rng.randint(1, 3))
            po = await f.print_out(
                s,
                printer,
                rng.choice(["alice", "bob", "carol", "dave"]),
                charged_to=[(acc, rng.randint(1, 3)) for acc in payers],
                title=f"job {i}",
            )
            fate = rng.random()
            if fate < 0.15:
                await f.finish(s, po, PrintStatus.CANCELED, reason="canceled-in-cups")
                continue
            await f.charge(s, po, str(Decimal(rng.randint(1, 500)) / 100))
            if fate > 0.7:
                assert await charging.reverse(s, po, actor="test") > 0
                reversed_ids.append(po.id)
        admin = await f.token(s, "admin")
    text = await get(client, admin, "/api/v1/printouts.csv")
    assert isinstance(text, str)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0]) == list(export.COLUMNS)
    reversal_rows = [r for r in rows if r["status"] == export.REVERSAL_STATUS]
    assert sorted(int(r["id"]) for r in reversal_rows) == sorted(reversed_ids)
    for row in rows:
        if int(row["id"]) in reversed_ids and row["status"] != export.REVERSAL_STATUS:
            assert row["reversed"] == row["cost"]  # given back in full
    sums = csv_sums(text)
    async with sessionmaker() as s:
        balances = await ledger.balances(s, [a.id for a in accounts])
    for account in accounts:
        expected = -balances[account.id]
        assert sums.get((account.type, account.path), Decimal(0)) == expected, account.path
    # And per account, through ?account=: the same sum.
    for account in accounts:
        mine = await get(
            client, admin, "/api/v1/printouts.csv", account=f"{account.type}:{account.path}"
        )
        assert isinstance(mine, str)
        own = csv_sums(mine).get((account.type, account.path), Decimal(0))
        assert own == -balances[account.id], account.path
