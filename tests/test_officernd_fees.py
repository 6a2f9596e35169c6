"""OfficeRnD fees and the balance allowance (SPEC §9), against both simulators in-process.

Negative PaperCut balances become OfficeRnD fees, once per user per day, and
PaperCut is zeroed; a crash between the fee and the adjustment never bills
twice; the allowance is added once per period; the service's scheduler claims
each day once. The clock is driven by passing the day (or ``now``) in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from billing.enums import OutboxStatus
from billing.models import Event, OutboxItem, ScheduledRun
from billing.money import Currency
from billing.officernd.client import OfficeRnDClient
from billing.officernd.fees import FEE_KIND, FeesSummary, run_fees
from billing.officernd.filter import MemberFilter
from billing.officernd.sync import run_sync
from billing.officernd.topup import TOPUP_KIND, period_key, run_topups
from billing.officernd.writes import RECREATE_KIND
from billing.papercut import printlog
from billing.papercut.client import PaperCutClient
from proxy.config import build_config
from proxy.devkit.officernd.simdata import MAIN_OFFICE_ID
from proxy.devkit.officernd.simulator import FaultKind, OfficeRnDSimulator
from proxy.devkit.papercut.simulator import FaultMode, PaperCutSimulator
from proxy.keys import (
    CONFIG,
    HANDLERS,
    INSTANCE,
    OFFICERND,
    PAPERCUT,
    PRINTLOG,
    SCHEDULER,
    SESSIONS,
)
from proxy.pipeline.leader import Instance
from proxy.pipeline.officernd import claim_run, officernd_ctx, scheduler_tick, sync_slot

TOKEN = "pc-token"
EUR = Currency("EUR", 2)
DAY = date(2024, 6, 3)  # a Monday
BALANCES = {"minus7": "-7.00", "cent": "-0.01", "zero": "0", "plus5": "5"}


@dataclass
class Kit:
    papercut_sim: PaperCutSimulator
    ornd_sim: OfficeRnDSimulator
    papercut: PaperCutClient
    officernd: OfficeRnDClient
    sessions: async_sessionmaker[AsyncSession]
    printlog: AsyncEngine
    users: dict[str, str]  # label -> PaperCut user name
    members: dict[str, str]  # label -> member id

    async def applied(self, marker: str) -> bool:
        return await printlog.adjustment_applied(self.printlog, marker)

    async def fees(self, day: date = DAY, **kw: Any) -> FeesSummary:
        kw.setdefault("wait", 5.0)
        kw.setdefault("retry_base", 0.05)
        return await run_fees(
            self.sessions,
            self.officernd,
            self.papercut,
            self.applied,
            day=day,
            currency=EUR,
            **kw,
        )

    def balance(self, label: str) -> Decimal:
        return self.papercut_sim.balance(self.users[label])

    def fees_posted(self) -> int:
        return self.ornd_sim.requests["POST /fees"]


async def _kit(
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    *,
    members: int = 0,
    timeout: float = 10.0,
    page_limit: int = 100,
) -> AsyncIterator[Kit]:
    async with (
        PaperCutSimulator(tmp_path / "papercut.db", token=TOKEN, hang_seconds=0.5) as pc_sim,
        OfficeRnDSimulator(hang_seconds=0.5) as ornd_sim,
    ):
        labels = {}
        for label in BALANCES:
            m = ornd_sim.add_member(label.title(), email=f"{label}@example.com")
            labels[label] = m.id
        if members:
            ornd_sim.seed_members(members, max(1, members // 8), 5, seed=9)
            for label, mid in labels.items():  # seeding replaced the members: add them again
                ornd_sim.add_member(label.title(), email=f"{label}@example.com", member_id=mid)
        engine = create_async_engine(
            pc_sim.db_url
        )  # see test_officernd_sync: never BEGIN IMMEDIATE
        async with (
            PaperCutClient(
                pc_sim.url, TOKEN, attempts=10, backoff=0.01, max_backoff=0.05, timeout=timeout
            ) as pc,
            OfficeRnDClient(
                ornd_sim.api_url,
                ornd_sim.org,
                token_url=ornd_sim.token_url,
                client_id=ornd_sim.client_id,
                client_secret=ornd_sim.client_secret,
                backoff=0.01,
                max_backoff=0.05,
                attempts=10,
                timeout=timeout,
                page_limit=page_limit,
            ) as ornd,
        ):
            kit = Kit(
                pc_sim,
                ornd_sim,
                pc,
                ornd,
                sessions,
                engine,
                {label: f"{label}@example.com" for label in BALANCES},
                labels,
            )
            yield kit
        await engine.dispose()


async def _synced(kit: Kit) -> None:
    for _ in range(4):  # under injected faults a run may leave some users for the next one
        summary = await run_sync(
            kit.sessions, kit.officernd, kit.papercut, member_filter=MemberFilter()
        )
        if summary.errors == 0:
            break
    assert summary.errors == 0, summary.error_details
    for label, amount in BALANCES.items():
        if Decimal(amount):
            kit.papercut_sim.adjust_user_account_balance(
                kit.users[label], Decimal(amount), "printing"
            )


@pytest.fixture
async def kit(tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Kit]:
    async for k in _kit(tmp_path, sessionmaker):
        await _synced(k)
        yield k


def _fees_for(kit: Kit, label: str) -> list[dict[str, Any]]:
    return [f for f in kit.ornd_sim.fees_received() if f["member"] == kit.members[label]]


async def test_negative_balances_become_fees_and_papercut_is_zeroed(kit: Kit) -> None:
    summary = await kit.fees()

    assert summary.plan_created and summary.negative == 2 and summary.enqueued == 2
    assert summary.total == "7.01" and summary.done == 2 and not summary.errors
    plans = [p for p in kit.ornd_sim.plans if p.name == "PaperCut Fees"]
    assert len(plans) == 1 and summary.plan_id == plans[0].id
    fees = kit.ornd_sim.fees_received()
    assert sorted(f["price"] for f in fees) == [Decimal("0.01"), Decimal("7.00")]
    for label, price in (("minus7", Decimal("7.00")), ("cent", Decimal("0.01"))):
        (fee,) = _fees_for(kit, label)
        assert fee["price"] == price and fee["quantity"] == 1
        assert fee["plan"] == plans[0].id and fee["date"].startswith("2024-06-03")
        assert fee["isPersonal"] is True
        # The marker is in the name (a documented fee field that round-trips).
        assert fee["name"].startswith("PaperCut printing 2024-06-03 [pp:")
        marker = fee["name"][fee["name"].index("[pp:") :]
        (adjustment,) = kit.papercut_sim.adjustments(comment_contains=marker)
        assert adjustment.amount == price  # PaperCut adjusted by +amount, marker in the comment
    assert [kit.balance(label) for label in BALANCES] == [0, 0, 0, Decimal(5)]
    async with kit.sessions() as session:
        event = await session.scalar(select(Event).where(Event.subject_type == "officernd-fees"))
    assert event is not None and event.subject_id == "2024-06-03"


async def test_fees_name_the_office_the_api_requires(kit: Kit) -> None:
    """OfficeRnD's fee API requires ``office``: the member's own, or ``[officernd] office``."""
    branch = kit.ornd_sim.add_office("Branch")
    kit.ornd_sim.add_member(
        "Cent", email="cent@example.com", member_id=kit.members["cent"], office_id=branch
    )
    summary = await kit.fees()
    assert summary.done == 2 and not summary.errors
    assert [f["office"] for f in _fees_for(kit, "minus7")] == [MAIN_OFFICE_ID]
    assert [f["office"] for f in _fees_for(kit, "cent")] == [branch]
    # A configured office is used for every fee (the members list is then not read).
    kit.papercut_sim.adjust_user_account_balance(kit.users["minus7"], Decimal("-1"), "printing")
    members_read = kit.ornd_sim.requests["GET /members"]
    tomorrow = await kit.fees(DAY + timedelta(days=1), office=branch)
    assert tomorrow.done == 1
    assert [f["office"] for f in _fees_for(kit, "minus7")] == [MAIN_OFFICE_ID, branch]
    assert kit.ornd_sim.requests["GET /members"] == members_read


async def test_a_second_run_the_same_day_does_nothing(kit: Kit) -> None:
    await kit.fees()
    posted = kit.fees_posted()
    # the user prints again the same day: billed tomorrow, not twice today
    kit.papercut_sim.adjust_user_account_balance(kit.users["minus7"], Decimal("-2"), "printing")
    adjustments = len(kit.papercut_sim.adjustments())

    again = await kit.fees()

    assert (again.enqueued, again.already, again.done, again.plan_created) == (0, 1, 0, False)
    assert kit.fees_posted() == posted
    assert len(kit.papercut_sim.adjustments()) == adjustments
    tomorrow = await kit.fees(DAY + timedelta(days=1))
    assert tomorrow.enqueued == 1 and tomorrow.total == "2.00"
    assert [f["price"] for f in _fees_for(kit, "minus7")] == [Decimal("7.00"), Decimal("2.00")]
    assert kit.balance("minus7") == 0


async def test_fee_created_but_adjustment_lost_is_never_billed_twice(kit: Kit) -> None:
    # The fee is created but its answer is lost, and PaperCut fails: both rows stay pending.
    kit.ornd_sim.inject(FaultKind.APPLY_THEN_500, "POST /fees", count=2)
    kit.papercut_sim.inject(FaultMode.HTTP_500, method="api.adjustUserAccountBalance", count=2)

    # retries 1 s later: not within this run even on a loaded machine
    first = await kit.fees(wait=0, retry_base=1.0)

    assert first.done == 0 and first.pending == 2
    assert len(kit.ornd_sim.fees_received()) == 2
    assert kit.balance("minus7") == Decimal("-7.00")

    second = await kit.fees()  # the same day: the pending rows are finished, nothing is new

    assert second.enqueued == 0 and second.done == 2 and second.pending == 0
    assert len(_fees_for(kit, "minus7")) == 1 and len(_fees_for(kit, "cent")) == 1
    assert kit.fees_posted() == 2  # the second attempt found the fees: no new POST
    assert kit.balance("minus7") == 0 and kit.balance("cent") == 0


async def test_a_lost_answer_never_creates_a_second_fee(kit: Kit) -> None:
    """OfficeRnD makes the fee and the connection drops: the retry finds it by its name."""
    kit.ornd_sim.inject(FaultKind.APPLY_THEN_DROP, "POST /fees", count=2)

    first = await kit.fees(wait=0, retry_base=1.0)  # the retries wait for the next run

    assert first.done == 0 and first.pending == 2  # the answers were lost: not known done
    assert len(kit.ornd_sim.fees_received()) == 2
    assert kit.officernd.errors["POST /fees"] == 2
    second = await kit.fees()  # the outbox tries again: it looks before it posts

    assert second.done == 2 and second.pending == 0 and not second.errors
    assert len(_fees_for(kit, "minus7")) == 1 and len(_fees_for(kit, "cent")) == 1
    assert kit.fees_posted() == 2  # the fees were found by their marker: no second POST
    assert kit.balance("minus7") == 0 and kit.balance("cent") == 0
    (fee,) = _fees_for(kit, "minus7")
    marker = fee["name"][fee["name"].index("[pp:") :]
    assert len(kit.papercut_sim.adjustments(comment_contains=marker)) == 1


async def test_process_killed_right_after_the_fee_call(kit: Kit) -> None:
    created = asyncio.Event()
    stall = asyncio.Event()
    real_adjust = kit.papercut.adjust_user_account_balance

    async def adjust_after_the_fee(*args: Any, **kwargs: Any) -> None:
        created.set()
        await stall.wait()  # the process dies here: the fee exists, PaperCut not adjusted
        await real_adjust(*args, **kwargs)

    kit.papercut.adjust_user_account_balance = adjust_after_the_fee  # type: ignore[method-assign]
    task = asyncio.create_task(kit.fees(concurrency=1))
    await asyncio.wait_for(created.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    kit.papercut.adjust_user_account_balance = real_adjust  # type: ignore[method-assign]
    assert len(kit.ornd_sim.fees_received()) == 1
    # later (the dead run's claim has expired), the job runs again the same day
    async with kit.sessions() as session, session.begin():
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.kind == FEE_KIND)
            .values(claim_until=datetime.now(UTC) - timedelta(seconds=1))
        )

    again = await kit.fees()

    assert again.enqueued == 0 and again.done == 2
    assert len(_fees_for(kit, "minus7")) == 1 and len(_fees_for(kit, "cent")) == 1
    assert kit.balance("minus7") == 0 and kit.balance("cent") == 0
    async with kit.sessions() as session:
        statuses = set(await session.scalars(select(OutboxItem.status)))
    assert statuses == {int(OutboxStatus.DONE)}


async def test_manage_fees_false_does_nothing(kit: Kit) -> None:
    kit.ornd_sim.requests.clear()
    summary = await kit.fees(manage=False)
    assert not summary.managed and "not managed" in summary.line()
    assert kit.ornd_sim.fees_received() == [] and not kit.ornd_sim.requests
    assert kit.balance("minus7") == Decimal("-7.00")
    assert all(p.name != "PaperCut Fees" for p in kit.ornd_sim.plans)


# --- the allowance ------------------------------------------------------------------------------


def test_period_keys() -> None:
    assert period_key("daily", date(2024, 12, 30)) == "2024-12-30"
    assert period_key("weekly", date(2024, 12, 30)) == "2025-W01"  # ISO week
    assert period_key("weekly", date(2024, 6, 9)) == "2024-W23"  # Sunday ends the week
    assert period_key("monthly", date(2024, 6, 30)) == "2024-06"


async def test_weekly_allowance_is_added_once_a_week_when_run_daily(kit: Kit) -> None:
    before = {label: kit.balance(label) for label in BALANCES}
    enqueued = []
    for offset in range(14):  # Monday 3 June .. Sunday 16 June: two ISO weeks
        summary = await run_topups(
            kit.sessions,
            kit.papercut,
            kit.applied,
            amount=Decimal("2.50"),
            period="weekly",
            day=DAY + timedelta(days=offset),
            retry_base=0.05,
        )
        enqueued.append(summary.enqueued)
    assert enqueued == [4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0]
    for label in BALANCES:
        assert kit.balance(label) == before[label] + Decimal("5.00")
    assert len(kit.papercut_sim.adjustments(comment_contains="weekly allowance")) == 8


# --- faults ---------------------------------------------------------------------------------


async def test_sync_and_fees_end_correct_with_faults_on_both_sides(
    tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async for kit in _kit(tmp_path, sessionmaker, members=60, timeout=0.3, page_limit=5):
        kit.ornd_sim.set_faults(rate_429=0.05, rate_5xx=0.05, seed=4, retry_after=0)
        # 7 % HTTP 500, 3 % hangs (a write is applied, then its answer is lost)
        kit.papercut_sim.set_faults(0.07, 0.03, seed=5)
        await _synced(kit)  # repeats the sync until a run has no errors
        kit.papercut_sim.clear_faults()
        wanted = {str(m.email).lower() for m in kit.ornd_sim.members if m.status == "active"}
        assert set(await kit.papercut.all_user_accounts()) == wanted
        kit.papercut_sim.set_faults(0.07, 0.03, seed=6)
        kit.ornd_sim.inject(FaultKind.APPLY_THEN_DROP, "POST /fees")  # one answer lost too

        summary = await kit.fees(wait=30)

        kit.papercut_sim.clear_faults()
        kit.ornd_sim.clear_faults()
        assert summary.pending == 0 and summary.failed == 0, summary
        assert len(_fees_for(kit, "minus7")) == 1 and len(_fees_for(kit, "cent")) == 1
        assert len(kit.ornd_sim.fees_received()) == 2
        assert kit.balance("minus7") == 0 and kit.balance("cent") == 0
        assert kit.balance("plus5") == Decimal(5)
        # the faults did happen, on both sides
        assert sum(kit.papercut.errors.values()) > 10 and sum(kit.officernd.errors.values()) >= 2


# --- the service's scheduler ------------------------------------------------------------------


async def test_claim_run_once_per_period(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    now = datetime(2024, 6, 3, 5, 30, tzinfo=UTC)
    async with sessionmaker() as session, session.begin():
        assert await claim_run(session, "officernd-fees", "2024-06-03", now)
        assert not await claim_run(session, "officernd-fees", "2024-06-03", now)
        assert await claim_run(session, "officernd-fees", "2024-06-04", now)
        # an instance that died while running: taken over once it is stale
        assert await claim_run(session, "officernd-fees", "2024-06-03", now + timedelta(hours=1))
    assert sync_slot(datetime(2024, 6, 3, 10, 47, tzinfo=UTC), 60) == "2024-06-03T10:00Z"
    assert sync_slot(datetime(2024, 6, 3, 10, 47, tzinfo=UTC), 15) == "2024-06-03T10:45Z"


async def test_scheduler_runs_fees_once_a_day_at_fees_at_site_time(kit: Kit) -> None:
    config = build_config(
        {
            "officernd": {
                "api_url": kit.ornd_sim.api_url,
                "timezone": "Europe/Sofia",  # UTC+3 in June
                "fees_at": "07:30",
                "allowance_amount": "1.00",
                "allowance_period": "monthly",
            }
        },
        env={},
    )
    app = web.Application()
    app[CONFIG] = config
    app[SESSIONS] = kit.sessions
    app[INSTANCE] = Instance("site-1")
    app[OFFICERND] = kit.officernd
    app[PAPERCUT] = kit.papercut
    app[PRINTLOG] = kit.printlog

    early = await scheduler_tick(app, datetime(2024, 6, 3, 4, 0, tzinfo=UTC))  # 07:00 in Sofia
    at = await scheduler_tick(app, datetime(2024, 6, 3, 4, 31, tzinfo=UTC))  # 07:31
    later = await scheduler_tick(app, datetime(2024, 6, 3, 4, 45, tzinfo=UTC))

    assert early == ["officernd-sync/2024-06-03T04:00Z"]
    assert at == ["officernd-fees/2024-06-03", "officernd-topup/2024-06"]
    assert later == []
    assert len(kit.ornd_sim.fees_received()) == 2
    async with kit.sessions() as session:
        runs = (
            await session.execute(select(ScheduledRun.job, func.count()).group_by(ScheduledRun.job))
        ).all()
    assert dict(runs)["officernd-fees"] == 1
    assert kit.balance("plus5") == Decimal("6.00")  # the monthly allowance, once


async def test_service_context_registers_the_handlers_and_runs_the_scheduler(kit: Kit) -> None:
    ornd = kit.ornd_sim
    config = build_config(
        {
            "papercut": {"url": kit.papercut_sim.url, "token": TOKEN},
            "officernd": {"api_url": ornd.api_url, "token_url": ornd.token_url, "org": ornd.org,
                          "client_id": ornd.client_id, "client_secret": ornd.client_secret},
        },
        env={},
    )  # fmt: skip
    app = web.Application()
    app[CONFIG] = config
    app[SESSIONS] = kit.sessions
    app[PAPERCUT] = kit.papercut
    app[PRINTLOG] = kit.printlog
    app[HANDLERS] = {}
    context = officernd_ctx(app)
    await anext(context)
    assert app[HANDLERS].keys() == {FEE_KIND, TOPUP_KIND, RECREATE_KIND}
    for _ in range(200):  # the first tick syncs at once
        async with kit.sessions() as session:
            done = await session.scalar(
                select(func.count()).where(
                    ScheduledRun.job == "officernd-sync", ScheduledRun.state == "done"
                )
            )
        if done:
            break
        await asyncio.sleep(0.05)
    assert done
    with contextlib.suppress(StopAsyncIteration):
        await anext(context)
    assert app[SCHEDULER].done()
