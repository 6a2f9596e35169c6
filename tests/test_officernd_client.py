"""The OfficeRnD client against the simulator: token, paging, retries, writes, exact amounts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from billing.exceptions import BillingError, InvalidAmount, InvalidInput
from billing.officernd.client import (
    OfficeRnDClient,
    dumps_json,
    fee_to_json,
    loads_json,
    member_from_json,
    parse_retry_after,
)
from billing.officernd.exceptions import (
    OfficeRnDAuthError,
    OfficeRnDError,
    OfficeRnDUnavailable,
)
from billing.officernd.models import Fee, Member
from proxy.devkit.officernd.simdata import API_USER_ID, MAIN_OFFICE_ID
from proxy.devkit.officernd.simulator import FaultKind, OfficeRnDSimulator
from tests.fixtures_cups import free_tcp_port

DAY = "2024-05-01"


@pytest.fixture
async def sim() -> AsyncIterator[OfficeRnDSimulator]:
    async with OfficeRnDSimulator() as simulator:
        yield simulator


def make_client(sim: OfficeRnDSimulator, **options: Any) -> OfficeRnDClient:
    options.setdefault("backoff", 0.01)
    options.setdefault("max_backoff", 0.05)
    options.setdefault("timeout", 5.0)
    return OfficeRnDClient(
        sim.api_url,
        sim.org,
        token_url=sim.token_url,
        client_id=sim.client_id,
        client_secret=sim.client_secret,
        **options,
    )


def member_fee(member: Member, price: str = "7.00", marker: str = "pp:1") -> Fee:
    return Fee(
        name=f"Printing [{marker}]",  # the marker rides in the name: a field that round-trips
        price=Decimal(price),
        date=DAY,
        member_id=member.id,
        office_id=MAIN_OFFICE_ID,
    )


def gaps(sim: OfficeRnDSimulator, key: str) -> list[float]:
    times = [t for t, k in sim.request_log if k == key]
    return [b - a for a, b in itertools.pairwise(times)]


# --- the token ---------------------------------------------------------------------------


async def test_token_fetched_with_client_credentials_and_reused(sim: OfficeRnDSimulator) -> None:
    sim.seed_members(5, 2, 1)
    async with make_client(sim, scope="officernd.api.read") as client:
        await client.members()
        await client.companies()
        await client.plans()
    assert sim.requests["POST /oauth/token"] == 1
    assert client.calls["POST /oauth/token"] == 1
    assert sim.token_forms == [
        {
            "client_id": sim.client_id,
            "grant_type": "client_credentials",
            "scope": "officernd.api.read",
        }
    ]


async def test_bad_credentials_are_an_auth_error_not_retried(sim: OfficeRnDSimulator) -> None:
    client = OfficeRnDClient(
        sim.api_url, sim.org, token_url=sim.token_url, client_id="cid", client_secret="wrong"
    )
    async with client:
        with pytest.raises(OfficeRnDAuthError, match="bad client credentials"):
            await client.members()
    assert sim.requests["POST /oauth/token"] == 1
    assert sim.requests["GET /members"] == 0


async def test_token_renewed_shortly_before_expiry(sim: OfficeRnDSimulator) -> None:
    sim.token_ttl = 0.6  # renewed at half its life: 0.3 s
    async with make_client(sim) as client:
        await client.plans()
        await client.plans()
        assert sim.tokens_issued == 1
        await asyncio.sleep(0.35)
        await client.plans()
    assert sim.tokens_issued == 2
    assert not client.errors  # renewed before the API refused it


async def test_token_renewed_once_after_401(sim: OfficeRnDSimulator) -> None:
    async with make_client(sim) as client:
        await client.plans()
        sim.expire_tokens()  # the token dies early
        await client.plans()
    assert sim.tokens_issued == 2
    assert sim.requests["GET /plans"] == 3
    assert client.errors["GET /plans"] == 1
    assert client.retries["GET /plans"] == 1


async def test_second_401_is_an_auth_error(sim: OfficeRnDSimulator) -> None:
    sim.inject(FaultKind.UNAUTHORIZED, "GET /plans", count=2)
    async with make_client(sim) as client:
        with pytest.raises(OfficeRnDAuthError) as info:
            await client.plans()
    assert info.value.status == 401
    assert sim.requests["GET /plans"] == 2
    assert sim.tokens_issued == 2


async def test_401_on_a_write_is_retried_with_a_new_token(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.UNAUTHORIZED, "POST /fees")
    async with make_client(sim) as client:
        await client.create_fee(member_fee(member))
    assert len(sim.fees_received()) == 1
    assert sim.requests["POST /fees"] == 2


async def test_concurrent_calls_share_one_token(sim: OfficeRnDSimulator) -> None:
    sim.latency = 0.02
    async with make_client(sim) as client:
        await asyncio.gather(*(client.plans() for _ in range(10)))
    assert sim.tokens_issued == 1


# --- paging and records ------------------------------------------------------------------------


async def test_250_members_in_three_pages(sim: OfficeRnDSimulator) -> None:
    sim.seed_members(240, 10, 10)
    async with make_client(sim) as client:
        members = await client.members()
    assert sim.requests["GET /members"] == 3
    assert client.calls["GET /members"] == 3
    assert sorted(m.id for m in members) == sorted(m.id for m in sim.members)
    assert len({m.id for m in members}) == 250


async def test_small_pages(sim: OfficeRnDSimulator) -> None:
    sim.seed_members(95, 5, 5)
    async with make_client(sim, page_limit=7) as client:
        members = await client.members()
    assert len(members) == 100
    assert sim.requests["GET /members"] == 15  # ceil(100 / 7)


async def test_exact_multiple_of_the_page_ends_without_an_empty_page(
    sim: OfficeRnDSimulator,
) -> None:
    sim.seed_members(200, 4, 0)
    async with make_client(sim) as client:
        assert len(await client.members()) == 200
    assert sim.requests["GET /members"] == 2


async def test_page_limit_above_the_server_maximum_is_refused_not_retried() -> None:
    async with OfficeRnDSimulator(page_limit_max=50) as sim, make_client(sim) as client:
        with pytest.raises(OfficeRnDError, match="limit") as info:
            await client.members()
    assert not isinstance(info.value, OfficeRnDUnavailable)
    assert info.value.status == 400
    assert sim.requests["GET /members"] == 1


def test_page_limit_is_checked() -> None:
    with pytest.raises(ValueError, match="page_limit"):
        OfficeRnDClient("http://x", "org", token_url="http://x/t", client_id="a",
                        client_secret="b", page_limit=101)  # fmt: skip


async def test_companies_are_teams(sim: OfficeRnDSimulator) -> None:
    acme = sim.add_company("Acme")
    blue = sim.add_company("Blue Labs")
    ada = sim.add_member("Ada", email="ada@example.com", company_id=acme.id)
    solo = sim.add_member("Solo", status="former")
    plan = sim.add_plan("Hot Desk", Decimal("150.00"))
    sim.add_member("Bob", company_id=blue.id, plan_ids=[plan.id])
    async with make_client(sim) as client:
        companies = {c.id: c.name for c in await client.companies()}
        members = {m.name: m for m in await client.members()}
        plans = await client.plans()
    assert companies == {acme.id: "Acme", blue.id: "Blue Labs"}
    assert members["Ada"] == ada
    assert members["Ada"].company_id == acme.id
    assert members["Ada"].email == "ada@example.com"
    assert members["Solo"].company_id is None
    assert members["Solo"].status == "former" == solo.status
    assert members["Solo"].calculated_status == "former"
    assert members["Bob"].plan_ids == ()  # a v1 member record has no plans: memberships do
    assert [(p.id, p.name) for p in plans] == [(plan.id, "Hot Desk")]


async def test_memberships_are_their_own_resource(sim: OfficeRnDSimulator) -> None:
    acme = sim.add_company("Acme")
    desk = sim.add_plan("Hot Desk", Decimal("150.00"))
    office = sim.add_plan("Private Office", Decimal("850.00"))
    ada = sim.add_member("Ada", company_id=acme.id, plan_ids=[desk.id])
    bob = sim.add_member("Bob")
    old = sim.add_membership(office.id, member_id=bob.id, calculated_status="expired")
    whole = sim.add_membership(office.id, company_id=acme.id)
    async with make_client(sim, page_limit=2) as client:
        everything = {m.id: m for m in await client.memberships()}
        bobs = await client.memberships(member=bob.id)
    assert sim.requests["GET /memberships"] == 3  # 2 + 1 pages, then the filtered list
    assert len(everything) == 3
    (adas,) = [m for m in everything.values() if m.member_id == ada.id]
    assert (adas.plan_id, adas.company_id, adas.calculated_status) == (desk.id, acme.id, "active")
    assert adas.start_date is not None and adas.end_date is None
    assert everything[whole].member_id is None and everything[whole].company_id == acme.id
    assert [(m.id, m.calculated_status) for m in bobs] == [(old, "expired")]
    assert bobs[0].end_date is not None and bobs[0].end_date.startswith("2023-12-31")


def test_member_from_json_accepts_populated_references() -> None:
    member = member_from_json(
        {
            "_id": "a" * 24,
            "name": "Ada",
            "email": "",
            "status": "active",
            "calculatedStatus": "drop-in",
            "team": {"_id": "b" * 24, "name": "Acme"},
            "office": {"_id": "e" * 24},
        }
    )
    assert member.company_id == "b" * 24 and member.office_id == "e" * 24
    assert (member.status, member.calculated_status) == ("active", "drop-in")
    assert member.status_of("calculatedStatus") == "drop-in"
    assert member.email is None
    with pytest.raises(OfficeRnDError):
        member_from_json({"name": "no id"})


# --- retries -----------------------------------------------------------------------------------


async def test_429_waits_retry_after(sim: OfficeRnDSimulator) -> None:
    sim.retry_after = 0.2
    sim.inject(FaultKind.HTTP_429, "GET /companies", count=2)
    async with make_client(sim) as client:
        started = time.monotonic()
        await client.companies()
        elapsed = time.monotonic() - started
    assert elapsed >= 0.4
    assert sim.requests["GET /companies"] == 3
    assert client.retries["GET /companies"] == 2
    assert all(gap >= 0.19 for gap in gaps(sim, "GET /companies"))


async def test_429_with_retry_after_zero_is_not_a_busy_loop(sim: OfficeRnDSimulator) -> None:
    sim.retry_after = 0
    sim.inject(FaultKind.HTTP_429, "GET /plans", count=3)
    async with make_client(sim, backoff=0.04, max_backoff=1.0) as client:
        await client.plans()
    spacing = gaps(sim, "GET /plans")
    assert len(spacing) == 3
    # Pause before retry n is at least backoff * 2**(n-1) / 2.
    for n, gap in enumerate(spacing, start=1):
        assert gap >= 0.02 * 2 ** (n - 1) * 0.95


async def test_429_is_bounded(sim: OfficeRnDSimulator) -> None:
    sim.inject(FaultKind.HTTP_429, "GET /plans", count=10)
    async with make_client(sim, attempts=3) as client:
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.plans()
    assert info.value.attempts == 3
    assert info.value.status == 429
    assert sim.requests["GET /plans"] == 3


def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=5), usegmt=True), now=now) == 5
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


async def test_5xx_backs_off_then_succeeds(sim: OfficeRnDSimulator) -> None:
    sim.inject(FaultKind.HTTP_500, "GET /plans")
    sim.inject(FaultKind.HTTP_503, "GET /plans")
    async with make_client(sim, backoff=0.03) as client:
        await client.plans()
    assert sim.requests["GET /plans"] == 3
    assert client.errors["GET /plans"] == 2
    assert client.retries["GET /plans"] == 2
    first, second = gaps(sim, "GET /plans")
    # Pauses are drawn from [ceiling/2, ceiling], ceilings 0.03 then 0.06 s; the
    # gaps are arrival times at the simulator, which a loaded machine can shift
    # by a few ms (an answer late to be logged), so allow 5 ms.
    assert first >= 0.015 - 0.005
    assert second >= 0.03 - 0.005


async def test_5xx_forever_is_unavailable_after_bounded_attempts(sim: OfficeRnDSimulator) -> None:
    sim.inject(FaultKind.HTTP_503, "GET /members", count=100)
    async with make_client(sim, attempts=4) as client:
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.members()
    assert isinstance(info.value, OfficeRnDError | BillingError)
    assert info.value.attempts == 4
    assert info.value.status == 503
    assert not info.value.maybe_applied  # a read
    assert sim.requests["GET /members"] == 4


async def test_a_hang_is_a_timeout_then_retried(sim: OfficeRnDSimulator) -> None:
    sim.inject(FaultKind.HANG, "GET /plans")
    async with make_client(sim, timeout=0.2) as client:
        await client.plans()
    assert sim.requests["GET /plans"] == 2


async def test_connection_refused_is_bounded_and_spaced() -> None:
    port = free_tcp_port()
    client = OfficeRnDClient(
        f"http://127.0.0.1:{port}",
        "org",
        token_url=f"http://127.0.0.1:{port}/oauth/token",
        client_id="cid",
        client_secret="secret",
        attempts=3,
        backoff=0.04,
    )
    async with client:
        started = time.monotonic()
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.plans()
        elapsed = time.monotonic() - started
    assert info.value.attempts == 3
    assert client.calls["POST /oauth/token"] == 3
    assert elapsed >= (0.02 + 0.04) * 0.95


async def test_4xx_is_an_error_with_the_message_and_not_retried(sim: OfficeRnDSimulator) -> None:
    fee = Fee(name="Printing", price=Decimal(1), date=DAY, member_id="f" * 24)
    async with make_client(sim, retry_writes=True) as client:
        with pytest.raises(OfficeRnDError, match="not found") as info:
            await client.create_fee(fee)
    assert type(info.value) is OfficeRnDError
    assert info.value.status == 400
    assert info.value.endpoint == "POST /fees"
    assert sim.requests["POST /fees"] == 1
    assert not client.retries


async def test_wrong_org_is_not_retried(sim: OfficeRnDSimulator) -> None:
    client = OfficeRnDClient(
        sim.api_url,
        "someone-else",
        token_url=sim.token_url,
        client_id=sim.client_id,
        client_secret=sim.client_secret,
    )
    async with client:
        with pytest.raises(OfficeRnDError) as info:
            await client.members()
    assert info.value.status == 404
    assert client.calls["GET /members"] == 1


# --- writes ------------------------------------------------------------------------------------


async def test_create_fee_with_an_object_answer(sim: OfficeRnDSimulator) -> None:
    acme = sim.add_company("Acme")
    member = sim.add_member("Ada", company_id=acme.id)
    async with make_client(sim) as client:
        plan = await client.create_plan("PaperCut Fees", price=Decimal(0))
        fee = Fee(
            name="PaperCut printing",
            price=Decimal("7.00"),
            date=DAY,
            member_id=member.id,
            company_id=acme.id,
            plan_id=plan.id,
            office_id=MAIN_OFFICE_ID,
            is_personal=False,
        )
        fee_id = await client.create_fee(fee)
        (listed,) = await client.fees(member=member.id)
    (received,) = sim.fees_received()
    assert received["_id"] == fee_id
    stamps = {k: received.pop(k) for k in ("createdAt", "modifiedAt")}
    assert all(v.endswith("Z") for v in stamps.values())
    assert received == {  # the documented fee fields, as the API gives them back
        "_id": fee_id,
        "name": "PaperCut printing",
        "price": Decimal("7.00"),
        "quantity": 1,
        "date": f"{DAY}T00:00:00.000Z",
        "member": member.id,
        "team": acme.id,
        "office": MAIN_OFFICE_ID,
        "plan": plan.id,
        "refundable": False,
        "billInAdvance": False,
        "shouldUseValueCredits": False,
        "isPersonal": False,
        "createdBy": API_USER_ID,
        "modifiedBy": API_USER_ID,
    }
    assert listed == {**received, **stamps}
    assert plan.name == "PaperCut Fees"
    assert [p.id for p in sim.plans] == [plan.id]


async def test_create_fee_with_a_list_answer(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.fee_answer_as_list = True
    async with make_client(sim) as client:
        fee_id = await client.create_fee(member_fee(member))
    assert [f["_id"] for f in sim.fees_received()] == [fee_id]


async def test_create_fee_for_a_company(sim: OfficeRnDSimulator) -> None:
    acme = sim.add_company("Acme")
    async with make_client(sim) as client:
        await client.create_fee(
            Fee(
                name="Printing",
                price=Decimal(3),
                date=DAY,
                company_id=acme.id,
                office_id=MAIN_OFFICE_ID,
            )
        )
    (fee,) = sim.fees_received()
    assert fee["team"] == acme.id
    assert fee["member"] is None


async def test_a_write_gets_one_attempt_by_default(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.HTTP_500, "POST /fees")
    async with make_client(sim) as client:
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.create_fee(member_fee(member))
    assert info.value.attempts == 1
    assert info.value.maybe_applied
    assert sim.requests["POST /fees"] == 1
    assert client.calls["POST /fees"] == 1
    assert not client.retries
    assert sim.fees_received() == []  # a plain 500 applies nothing


async def test_retry_writes_retries_a_write(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.HTTP_503, "POST /fees")
    async with make_client(sim, retry_writes=True) as client:
        await client.create_fee(member_fee(member))
    assert sim.requests["POST /fees"] == 2
    assert len(sim.fees_received()) == 1


async def test_429_on_a_write_is_retried_without_retry_writes(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.HTTP_429, "POST /fees")
    async with make_client(sim) as client:
        await client.create_fee(member_fee(member))
    assert sim.requests["POST /fees"] == 2
    assert len(sim.fees_received()) == 1


async def test_applied_then_500_is_found_by_its_marker(sim: OfficeRnDSimulator) -> None:
    ada = sim.add_member("Ada")
    bob = sim.add_member("Bob")
    async with make_client(sim) as client:
        await client.create_fee(member_fee(bob, marker="pp:bob"))
        sim.inject(FaultKind.APPLY_THEN_500, "POST /fees")
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.create_fee(member_fee(ada, marker="pp:ada"))
        assert info.value.maybe_applied
        # What the fees code does after such an error: look before sending again.
        found = await client.fees(member=ada.id)
        other_day = await client.fees(date="2024-05-02", member=ada.id)
    assert [f["name"] for f in found] == ["Printing [pp:ada]"]
    assert other_day == []
    assert len(sim.fees_received()) == 2


async def test_applied_then_dropped_connection(sim: OfficeRnDSimulator) -> None:
    """The fee is made, then the connection closes: ambiguous, so the write is not retried."""
    member = sim.add_member("Ada")
    sim.inject(FaultKind.APPLY_THEN_DROP, "POST /fees")
    async with make_client(sim) as client:
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.create_fee(member_fee(member, marker="pp:lost"))
        (found,) = await client.fees(member=member.id)
    assert info.value.maybe_applied and info.value.attempts == 1
    assert found["name"] == "Printing [pp:lost]"
    assert len(sim.fees_received()) == 1 and sim.requests["POST /fees"] == 1


async def test_applied_then_timeout(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    sim.inject(FaultKind.APPLY_THEN_HANG, "POST /fees")
    async with make_client(sim, timeout=0.2) as client:
        with pytest.raises(OfficeRnDUnavailable) as info:
            await client.create_fee(member_fee(member))
    assert info.value.maybe_applied
    assert len(sim.fees_received()) == 1
    assert sim.requests["POST /fees"] == 1


async def test_fees_lists_every_page(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    async with make_client(sim, page_limit=3) as client:
        for i in range(7):
            await client.create_fee(member_fee(member, marker=f"pp:{i}"))
        fees = await client.fees(member=member.id)
        everything = await client.fees()
    assert sorted(str(f["name"]) for f in fees) == [f"Printing [pp:{i}]" for i in range(7)]
    assert len(everything) == 7
    assert sim.requests["GET /fees"] == 6


# --- exact amounts -----------------------------------------------------------------------------


async def test_decimal_prices_are_exact_end_to_end(sim: OfficeRnDSimulator) -> None:
    member = sim.add_member("Ada")
    price = Decimal("0.1") + Decimal("0.2")
    async with make_client(sim) as client:
        await client.create_fee(member_fee(member, price=str(price)))
        await client.create_fee(
            Fee(
                name="x",
                price=Decimal("12.345678901"),
                date=DAY,
                member_id=member.id,
                office_id=MAIN_OFFICE_ID,
            )
        )
        await client.create_fee(
            Fee(
                name="y",
                price=Decimal("0.30"),
                date=DAY,
                member_id=member.id,
                office_id=MAIN_OFFICE_ID,
            )
        )
        fees = await client.fees(member=member.id)
    prices = [f["price"] for f in fees]
    assert sorted(str(p) for p in prices) == ["0.3", "0.30", "12.345678901"]
    assert all(isinstance(p, Decimal) for p in prices)
    assert [f["price"] for f in sim.fees_received()] == [
        Decimal("0.3"),
        Decimal("12.345678901"),
        Decimal("0.30"),
    ]


def test_json_writes_decimals_as_their_digits() -> None:
    text = dumps_json({"price": Decimal("0.30"), "n": 2, "ok": True, "x": None, "l": ["a"]})
    assert text == '{"price":0.30,"n":2,"ok":true,"x":null,"l":["a"]}'
    assert dumps_json(Decimal("0.1") + Decimal("0.2")) == "0.3"
    assert dumps_json(Decimal("-1E+2")) == "-100"
    assert loads_json('{"price": 0.30}') == {"price": Decimal("0.30")}
    with pytest.raises(InvalidAmount):
        dumps_json({"price": 0.3})
    with pytest.raises(InvalidAmount):
        dumps_json(Decimal("NaN"))
    with pytest.raises(InvalidInput):
        dumps_json({1: "x"})


def test_fee_body_is_checked() -> None:
    with pytest.raises(InvalidAmount):
        fee_to_json(Fee(name="x", price=0.3, date=DAY, member_id="m"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="member or a company"):
        fee_to_json(Fee(name="x", price=Decimal(1), date=DAY))
    with pytest.raises(InvalidInput, match="quantity"):
        fee_to_json(Fee(name="x", price=Decimal(1), date=DAY, member_id="m", quantity=0))
    with pytest.raises(InvalidInput, match="replace"):
        fee_to_json(Fee(name="x", price=Decimal(1), date=DAY, member_id="m", extra={"price": "2"}))
    body = fee_to_json(
        Fee(name="x", price=Decimal(1), date=DAY, member_id="m", extra={"source": "proxyprint"})
    )
    assert body["source"] == "proxyprint"
    assert "team" not in body
    assert "plan" not in body


# --- the session -------------------------------------------------------------------------------


async def test_a_given_session_is_used_and_left_open(sim: OfficeRnDSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with make_client(sim, session=session) as client:
            await client.plans()
        assert not session.closed
