"""The OfficeRnD simulator: generated data, HTTP shapes, auth, paging, faults, latency, CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from billing.officernd.client import CURSOR_HEADER, OfficeRnDClient, loads_json
from billing.officernd.models import STATUS_VALUES, MemberStatus
from proxy.devkit.officernd.simdata import MAIN_OFFICE_ID
from proxy.devkit.officernd.simulator import FaultKind, OfficeRnDSimulator
from tests.fixtures_cups import free_tcp_port

HEX24 = re.compile(r"[0-9a-f]{24}")
DAY = "2024-05-01"


@pytest.fixture
async def sim() -> AsyncIterator[OfficeRnDSimulator]:
    async with OfficeRnDSimulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def token(http: aiohttp.ClientSession, sim: OfficeRnDSimulator) -> str:
    form = {
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "grant_type": "client_credentials",
        "scope": "officernd.api.read",
    }
    async with http.post(sim.token_url, data=form) as response:
        assert response.status == 200
        data = loads_json(await response.read())
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3600
    assert isinstance(data["access_token"], str)
    return str(data["access_token"])


def url(sim: OfficeRnDSimulator, resource: str) -> str:
    return f"{sim.api_url}/api/v1/organizations/{sim.org}/{resource}"


async def call(
    http: aiohttp.ClientSession,
    method: str,
    target: str,
    bearer: str | None,
    **kwargs: Any,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with http.request(method, target, headers=headers, **kwargs) as response:
        body = await response.read()
        return response.status, loads_json(body) if body else None, dict(response.headers)


# --- generated data ------------------------------------------------------------------------


def snapshot(sim: OfficeRnDSimulator) -> tuple[object, ...]:
    return (sim.members, sim.companies, sim.plans)


def test_generator_is_deterministic() -> None:
    one, two, other = OfficeRnDSimulator(), OfficeRnDSimulator(), OfficeRnDSimulator()
    one.seed_members(120, 12, 8, seed=7)
    two.seed_members(120, 12, 8, seed=7)
    other.seed_members(120, 12, 8, seed=8)
    assert snapshot(one) == snapshot(two)
    assert snapshot(one) != snapshot(other)
    # Seeding again replaces members and companies with the same data.
    one.seed_members(120, 12, 8, seed=7)
    assert snapshot(one) == snapshot(two)


def test_generator_honours_the_counts() -> None:
    sim = OfficeRnDSimulator()
    members = sim.seed_members(300, 40, 25)
    assert members == sim.members
    assert len(members) == 325
    assert len(sim.companies) == 40
    company_ids = {c.id for c in sim.companies}
    per_company = Counter(m.company_id for m in members)
    assert per_company[None] == 25
    assert set(per_company) - {None} == company_ids  # every company has members
    ids = [m.id for m in members] + list(company_ids) + [p.id for p in sim.plans]
    assert all(HEX24.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    emails = [m.email for m in members]
    assert None not in emails
    assert len(set(emails)) == len(emails)
    assert len({c.name for c in sim.companies}) == 40
    plan_ids = {p.id for p in sim.plans}
    with_plans = [m for m in members if m.plan_ids]
    assert with_plans
    assert all(m.status == MemberStatus.ACTIVE for m in with_plans)
    assert all(set(m.plan_ids) <= plan_ids for m in with_plans)


def test_generator_honours_the_statuses() -> None:
    sim = OfficeRnDSimulator()
    members = sim.seed_members(280, 10, 20)
    # ``status`` holds only what the member reference documents: active, contact, former.
    assert Counter(m.status for m in members) == {"active": 240, "former": 30, "contact": 30}
    # calculatedStatus: every value of the help article's list, in the default shares.
    calculated = Counter(m.calculated_status for m in members)
    assert calculated == {"active": 240, "former": 30, "contact": 6, "drop-in": 6,
                          "pending": 6, "lead": 6, "not_approved": 6}  # fmt: skip
    assert set(calculated) == set(MemberStatus)
    for m in members:  # status follows where it can hold the calculated one
        expected = (
            m.calculated_status if m.calculated_status in STATUS_VALUES["status"] else "contact"
        )
        assert m.status == expected
    odd = sim.seed_members(7, 2, 0, statuses={"active": 1, "lead": 1})
    assert sorted(Counter(m.calculated_status for m in odd).values()) == [3, 4]
    assert {m.calculated_status for m in odd} == {"active", "lead"}
    assert {m.status for m in odd} == {"active", "contact"}
    everyone = sim.seed_members(10, 2, 3, statuses={"active": 1.0})
    assert {m.status for m in everyone} == {"active"}


def test_generator_refuses_bad_arguments() -> None:
    sim = OfficeRnDSimulator()
    with pytest.raises(ValueError, match="company"):
        sim.seed_members(5, 0, 0)
    with pytest.raises(ValueError, match="weight"):
        sim.seed_members(5, 1, 0, statuses={"active": 0})
    with pytest.raises(ValueError, match="negative"):
        sim.seed_members(-1, 1, 0)
    assert sim.seed_members(0, 0, 4)[0].company_id is None


def test_mutation_helpers() -> None:
    sim = OfficeRnDSimulator()
    acme = sim.add_company("Acme")
    ada = sim.add_member("Ada", email="ada@example.com", company_id=acme.id)
    assert sim.set_member_status(ada.id, "former").status == "former"
    assert sim.move_member(ada.id, None).company_id is None
    assert sim.move_member(ada.id, acme.id).company_id == acme.id
    renamed = sim.rename_member(ada.id, "Ada King", email="ada.king@example.com")
    assert (renamed.name, renamed.email) == ("Ada King", "ada.king@example.com")
    assert sim.members == [renamed]
    assert sim.rename_company(acme.id, "Acme Ltd").name == "Acme Ltd"
    with pytest.raises(KeyError):
        sim.move_member(ada.id, "0" * 24)
    with pytest.raises(KeyError):
        sim.set_member_status("0" * 24, "active")
    sim.remove_member(ada.id)
    assert sim.members == []


# --- the HTTP API ----------------------------------------------------------------------------


async def test_token_endpoint_checks_credentials(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    bad = {"client_id": "cid", "client_secret": "nope", "grant_type": "client_credentials"}
    status, body, _ = await call(http, "POST", sim.token_url, None, data=bad)
    assert (status, body["error"]) == (401, "invalid_client")
    wrong_grant = {**bad, "client_secret": sim.client_secret, "grant_type": "password"}
    status, body, _ = await call(http, "POST", sim.token_url, None, data=wrong_grant)
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    assert sim.tokens_issued == 0
    await token(http, sim)
    assert sim.tokens_issued == 1
    assert sim.token_forms[-1]["scope"] == "officernd.api.read"
    assert all("client_secret" not in form for form in sim.token_forms)


async def test_bearer_auth(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    status, _, headers = await call(http, "GET", url(sim, "members"), None)
    assert status == 401
    assert "Bearer" in headers["WWW-Authenticate"]
    assert (await call(http, "GET", url(sim, "members"), "forged"))[0] == 401
    bearer = await token(http, sim)
    assert (await call(http, "GET", url(sim, "members"), bearer))[0] == 200
    sim.expire_tokens()
    assert (await call(http, "GET", url(sim, "members"), bearer))[0] == 401


async def test_tokens_expire(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    sim.token_ttl = 0.1
    bearer = await token_any_ttl(http, sim)
    assert (await call(http, "GET", url(sim, "plans"), bearer))[0] == 200
    await asyncio.sleep(0.15)
    assert (await call(http, "GET", url(sim, "plans"), bearer))[0] == 401


async def token_any_ttl(http: aiohttp.ClientSession, sim: OfficeRnDSimulator) -> str:
    form = {"client_id": "cid", "client_secret": "secret", "grant_type": "client_credentials"}
    status, body, _ = await call(http, "POST", sim.token_url, None, data=form)
    assert status == 200
    assert body["expires_in"] == Decimal("0.1")
    return str(body["access_token"])


async def test_unknown_org_is_404(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    bearer = await token(http, sim)
    target = f"{sim.api_url}/api/v1/organizations/other/members"
    assert (await call(http, "GET", target, bearer))[0] == 404


async def test_json_shapes_and_cursor_paging(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    sim.seed_members(100, 5, 20)
    bearer = await token(http, sim)
    status, first, headers = await call(http, "GET", url(sim, "members"), bearer)
    assert status == 200
    assert len(first) == 50  # the default $limit
    # A v1 member has no plans (memberships are their own resource) and two statuses.
    assert set(first[0]) == {"_id", "name", "email", "status", "calculatedStatus", "team",
                             "office"}  # fmt: skip
    seen = list(first)
    cursor = headers[CURSOR_HEADER]
    while cursor:
        params = {"$limit": "30", "$next": cursor}
        status, page, headers = await call(http, "GET", url(sim, "members"), bearer, params=params)
        assert status == 200
        seen += page
        cursor = headers.get(CURSOR_HEADER, "")
    assert len(seen) == 120
    assert len({m["_id"] for m in seen}) == 120
    assert sim.requests["GET /members"] == 4  # 50 + 30 + 30 + 10
    _, companies, _ = await call(http, "GET", url(sim, "companies"), bearer)
    assert set(companies[0]) == {"_id", "name"}
    _, plans, _ = await call(http, "GET", url(sim, "plans"), bearer)
    assert {p["name"] for p in plans} == {"Hot Desk", "Dedicated Desk", "Private Office"}
    assert all(isinstance(p["price"], Decimal) for p in plans)
    _, memberships, _ = await call(http, "GET", url(sim, "memberships"), bearer)
    assert memberships and {p["_id"] for p in plans} >= {m["plan"] for m in memberships}
    assert set(memberships[0]) == {
        "_id", "name", "price", "member", "team", "office", "plan", "isPersonal",
        "startDate", "endDate", "status", "calculatedStatus", "createdAt",
    }  # fmt: skip


async def test_memberships_follow_the_members(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    members = {m.id: m for m in sim.seed_members(200, 10, 20, seed=2)}
    bearer = await token(http, sim)
    _, memberships, _ = await call(
        http, "GET", url(sim, "memberships"), bearer, params={"$limit": "100"}
    )
    kinds = {(members[m["member"]].calculated_status, m["calculatedStatus"]) for m in memberships}
    # an active member's membership is active, a pending one's pending, a former one's expired
    assert kinds <= {("active", "active"), ("pending", "pending"), ("former", "expired")}
    assert ("active", "active") in kinds and ("former", "expired") in kinds
    for m in memberships:
        assert m["startDate"].endswith("T00:00:00.000Z")
        assert (m["endDate"] is None) == (m["calculatedStatus"] != "expired")
    someone = next(m["member"] for m in memberships if m["calculatedStatus"] == "active")
    _, mine, _ = await call(
        http, "GET", url(sim, "memberships"), bearer, params={"member": someone}
    )
    assert mine and {m["member"] for m in mine} == {someone}
    assert members[someone].plan_ids == tuple(sorted(m["plan"] for m in mine))


async def test_bad_paging_parameters(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    bearer = await token(http, sim)
    for params in ({"$limit": "101"}, {"$limit": "0"}, {"$limit": "x"}, {"$next": "%%%"}):
        status, body, _ = await call(http, "GET", url(sim, "members"), bearer, params=params)
        assert status == 400, params
        assert body["message"]


async def test_filters(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    sim.seed_members(40, 4, 0)
    bearer = await token(http, sim)
    _, former, _ = await call(http, "GET", url(sim, "members"), bearer, params={"status": "former"})
    assert len(former) == 4
    assert {m["status"] for m in former} == {"former"}


async def test_post_fees_validates(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    member = sim.add_member("Ada")
    bearer = await token(http, sim)
    good: dict[str, Any] = {
        "name": "Printing",
        "price": 1,
        "date": DAY,
        "member": member.id,
        "office": MAIN_OFFICE_ID,
    }
    bad_bodies = [
        {**good, "name": ""},
        {**good, "price": "1.00"},
        {**good, "price": True},
        {**good, "quantity": 0},
        {**good, "date": "yesterday"},
        {key: v for key, v in good.items() if key != "member"},
        {**good, "member": "0" * 24},
        {**good, "team": "0" * 24},
        {**good, "plan": "0" * 24},
        {**good, "isPersonal": "yes"},
        {**good, "refundable": "no"},
        {**good, "source": 5},
        # Only the documented fee fields: "description" is not one; read-only ones are refused.
        {**good, "description": "[pp:1]"},
        {**good, "comment": "x"},
        {**good, "createdAt": "2024-05-01T00:00:00.000Z"},
        {**good, "_id": "0" * 24},
        # OfficeRnD's fee API requires the office (location).
        {key: v for key, v in good.items() if key != "office"},
        {**good, "office": ""},
        {**good, "office": "0" * 24},
    ]
    for body in bad_bodies:
        status, answer, _ = await call(http, "POST", url(sim, "fees"), bearer, json=body)
        assert status == 400, body
        assert answer["message"]
    status, _, _ = await call(http, "POST", url(sim, "fees"), bearer, data=b"[1, 2")
    assert status == 400
    assert sim.fees_received() == []
    ok = {**good, "date": "2024-05-01T07:30:00.000Z", "price": 2.5}
    status, fee, _ = await call(http, "POST", url(sim, "fees"), bearer, json=ok)
    assert status == 200
    assert fee["price"] == Decimal("2.5")
    assert fee["isPersonal"] is True
    assert fee["quantity"] == 1
    assert fee["date"] == "2024-05-01T07:30:00.000Z"
    assert "description" not in fee and "source" not in fee
    every = {**good, "date": "2024-05-02", "quantity": 2, "refundable": True,
             "billInAdvance": True, "shouldUseValueCredits": False, "isPersonal": False,
             "source": "proxyprint", "properties": {"ref": "x"}}  # fmt: skip
    status, full, _ = await call(http, "POST", url(sim, "fees"), bearer, json=every)
    assert status == 200, full
    assert {k: full[k] for k in every} == {**every, "date": "2024-05-02T00:00:00.000Z"}
    _, found, _ = await call(http, "GET", url(sim, "fees"), bearer, params={"date": DAY})
    assert [f["_id"] for f in found] == [fee["_id"]]


async def test_fee_answer_as_list(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    member = sim.add_member("Ada")
    sim.fee_answer_as_list = True
    bearer = await token(http, sim)
    body = {
        "name": "Printing",
        "price": 1,
        "date": DAY,
        "member": member.id,
        "office": MAIN_OFFICE_ID,
    }
    status, answer, _ = await call(http, "POST", url(sim, "fees"), bearer, json=body)
    assert status == 200
    assert isinstance(answer, list)
    assert [a["_id"] for a in answer] == [f["_id"] for f in sim.fees]


async def test_post_plans(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    bearer = await token(http, sim)
    status, plan, _ = await call(
        http, "POST", url(sim, "plans"), bearer, json={"name": "PaperCut Fees", "price": 0}
    )
    assert status == 200
    assert HEX24.fullmatch(plan["_id"])
    assert [p.name for p in sim.plans] == ["PaperCut Fees"]
    status, _, _ = await call(http, "POST", url(sim, "plans"), bearer, json={"price": 1})
    assert status == 400


# --- faults ------------------------------------------------------------------------------------


async def statuses_under_faults(seed: int) -> list[int]:
    async with OfficeRnDSimulator() as sim, aiohttp.ClientSession() as http:
        bearer = await token(http, sim)
        sim.set_faults(0.3, 0.3, seed, retry_after=0)
        return [(await call(http, "GET", url(sim, "plans"), bearer))[0] for _ in range(40)]


async def test_random_faults_are_seeded() -> None:
    one = await statuses_under_faults(3)
    assert one == await statuses_under_faults(3)
    assert set(one) == {200, 429, 500, 503}


async def test_429_carries_retry_after(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    bearer = await token(http, sim)
    sim.retry_after = 2
    sim.inject("429", "/plans")
    status, _, headers = await call(http, "GET", url(sim, "plans"), bearer)
    assert (status, headers["Retry-After"]) == (429, "2")
    assert sim.scripted_faults == 0


async def test_scripted_faults_match_their_path(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.APPLY_THEN_500, "POST /fees")
    bearer = await token(http, sim)  # the token endpoint is not "any request"
    assert (await call(http, "GET", url(sim, "fees"), bearer))[0] == 200
    body = {
        "name": "Printing",
        "price": 1,
        "date": DAY,
        "member": member.id,
        "office": MAIN_OFFICE_ID,
    }
    status, _, _ = await call(http, "POST", url(sim, "fees"), bearer, json=body)
    assert status == 500
    assert len(sim.fees_received()) == 1  # applied all the same
    sim.inject(FaultKind.HTTP_503)  # any API request
    assert (await call(http, "GET", url(sim, "companies"), bearer))[0] == 503
    sim.inject(FaultKind.HTTP_500, "POST /oauth/token")
    form = {"client_id": "cid", "client_secret": "secret", "grant_type": "client_credentials"}
    assert (await call(http, "POST", sim.token_url, None, data=form))[0] == 500
    sim.inject(FaultKind.HTTP_500, count=3)
    sim.clear_faults()
    assert (await call(http, "GET", url(sim, "companies"), bearer))[0] == 200


async def test_requests_are_counted_and_reset(
    sim: OfficeRnDSimulator, http: aiohttp.ClientSession
) -> None:
    bearer = await token(http, sim)
    await call(http, "GET", url(sim, "members"), bearer)
    await call(http, "GET", url(sim, "members"), None)  # refused ones count too
    assert sim.requests == {"POST /oauth/token": 1, "GET /members": 2}
    sim.reset_counters()
    assert not sim.requests
    assert not sim.request_log


async def test_http_controls(sim: OfficeRnDSimulator, http: aiohttp.ClientSession) -> None:
    member = sim.add_member("Ada")
    bearer = await token(http, sim)
    inject = {"kind": "503", "path": "GET /plans", "count": 2}
    assert (await call(http, "POST", f"{sim.base_url}/sim/inject", None, json=inject))[0] == 200
    assert sim.scripted_faults == 2
    bad = {"kind": "teapot"}
    assert (await call(http, "POST", f"{sim.base_url}/sim/inject", None, json=bad))[0] == 400
    faults = {"rate_429": 0.5, "rate_5xx": 0, "seed": 1}
    assert (await call(http, "POST", f"{sim.base_url}/sim/faults", None, json=faults))[0] == 200
    assert sim.rate_429 == 0.5
    sim.clear_faults()
    body = {
        "name": "Printing",
        "price": 1,
        "date": DAY,
        "member": member.id,
        "office": MAIN_OFFICE_ID,
    }
    await call(http, "POST", url(sim, "fees"), bearer, json=body)
    _, fees, _ = await call(http, "GET", f"{sim.base_url}/sim/fees", None)
    assert [f["member"] for f in fees] == [member.id]
    _, counts, _ = await call(http, "GET", f"{sim.base_url}/sim/requests", None)
    assert counts["POST /fees"] == 1
    await call(http, "POST", f"{sim.base_url}/sim/expire-tokens", None)
    assert (await call(http, "GET", url(sim, "plans"), bearer))[0] == 401


# --- latency -------------------------------------------------------------------------------------


async def test_latency_overlaps_concurrent_requests() -> None:
    # 0.2 s each: one after the other would take 2 s; overlapped, one latency plus
    # the machine's own time (a margin for a loaded CI machine).
    async with OfficeRnDSimulator(latency=0.2) as sim:
        sim.seed_members(10, 2, 0)
        client = OfficeRnDClient(
            sim.api_url,
            sim.org,
            token_url=sim.token_url,
            client_id=sim.client_id,
            client_secret=sim.client_secret,
        )
        async with client:
            await client.plans()  # the token, and a warm connection
            started = time.monotonic()
            await asyncio.gather(*(client.members() for _ in range(10)))
            elapsed = time.monotonic() - started
    assert sim.requests["GET /members"] == 10
    assert 0.2 <= elapsed < 1.0  # not 10 x 0.2 one after the other


# --- running alone -------------------------------------------------------------------------------


async def test_runs_alone() -> None:
    port = free_tcp_port()
    cmd = [
        sys.executable, "-m", "proxy.devkit.officernd.simulator", "--port", str(port),
        "--members", "30", "--companies", "4", "--individuals", "5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert f"api_url=http://127.0.0.1:{port}" in first
        client = OfficeRnDClient(
            f"http://127.0.0.1:{port}",
            "proxyprint-test",
            token_url=f"http://127.0.0.1:{port}/oauth/token",
            client_id="cid",
            client_secret="secret",
        )
        async with client:
            members = await client.members()
            companies = await client.companies()
        assert len(members) == 35
        assert len(companies) == 4
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, err.decode()
