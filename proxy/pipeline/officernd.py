"""The service's OfficeRnD jobs (when ``[officernd] api_url`` is set).

* sync every ``sync_interval_mins``;
* fees once a day at ``fees_at`` (site time, ``timezone``), or at start-up
  when the service was down at that time;
* top-ups once per ``allowance_period``, with the fees (when
  ``allowance_amount`` is not 0).

Each run is claimed by inserting ``ScheduledRun(job, period)`` (unique), so
two instances, or a restart, never run one period twice: ``officernd-fees``
per site date, ``officernd-topup`` per allowance period, ``officernd-sync``
per interval slot (``2024-06-01T10:00Z``). A run that failed is claimed
again after ``RETRY_FAILED_AFTER``, one that never finished (the instance
died) after ``STALE_AFTER``; the fees and top-ups are keyed per user and
period in the outbox, so running a period again only finishes what is left.

The fee, top-up and re-creation handlers are registered on the outbox
worker (``HANDLERS``): rows a run could not finish are retried there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import and_, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import Provisioning
from billing.models import ScheduledRun
from billing.money import parse_amount
from billing.officernd.actions import Progress
from billing.officernd.client import OfficeRnDClient
from billing.officernd.fees import FEE_KIND, AdjustmentCheck, FeeHandler, run_fees
from billing.officernd.filter import MemberFilter
from billing.officernd.mirror import SYNC_JOB
from billing.officernd.sync import run_sync
from billing.officernd.topup import TOPUP_KIND, TopupHandler, period_key, run_topups
from billing.officernd.writes import RECREATE_KIND, Recreator
from billing.papercut import printlog

from .. import metrics
from ..keys import CONFIG, HANDLERS, INSTANCE, OFFICERND, PAPERCUT, PRINTLOG, SCHEDULER, SESSIONS

log = logging.getLogger(__name__)

FEES_JOB = "officernd-fees"
TOPUP_JOB = "officernd-topup"
TICK_SECS = 30.0
STALE_AFTER = timedelta(minutes=30)
RETRY_FAILED_AFTER = timedelta(minutes=10)
MANUAL_PREFIX = "manual-"  # the period of a sync an admin started (sync_now)


def sync_slot(now: datetime, interval_mins: int) -> str:
    """The interval slot ``now`` (UTC) falls in, e.g. ``2024-06-01T10:00Z``."""
    step = max(1, interval_mins) * 60
    seconds = int(now.timestamp()) // step * step
    start = datetime.fromtimestamp(seconds, tz=now.tzinfo)
    return start.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%MZ")


async def claim_run(session: AsyncSession, job: str, period: str, now: datetime) -> bool:
    """Take ``(job, period)``: a new row, a failed run's retry, or a dead instance's run."""
    insert: Any = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    result: Any = await session.execute(
        insert(ScheduledRun)
        .values(job=job, period=period, state="started", started_at=now)
        .on_conflict_do_nothing()
    )
    if result.rowcount == 1:
        return True
    retaken: Any = await session.execute(
        update(ScheduledRun)
        .where(
            ScheduledRun.job == job,
            ScheduledRun.period == period,
            or_(
                and_(ScheduledRun.state == "started", ScheduledRun.started_at < now - STALE_AFTER),
                and_(
                    ScheduledRun.state == "failed",
                    ScheduledRun.finished_at < now - RETRY_FAILED_AFTER,
                ),
            ),
        )
        .values(state="started", started_at=now, finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(retaken.rowcount == 1)


async def finish_run(
    session: AsyncSession, job: str, period: str, state: str, summary: dict[str, Any]
) -> None:
    await session.execute(
        update(ScheduledRun)
        .where(ScheduledRun.job == job, ScheduledRun.period == period)
        .values(state=state, finished_at=utcnow(), summary=summary)
        .execution_options(synchronize_session=False)
    )


def _applied(app: web.Application) -> AdjustmentCheck:
    engine = app[PRINTLOG]

    async def check(marker: str) -> bool:
        return await printlog.adjustment_applied(engine, marker)

    return check


async def _job(app: web.Application, job: str, period: str, now: datetime, work: Any) -> bool:
    """Run ``work()`` (returning a summary dict) if this instance claims the period."""
    sessions = app[SESSIONS]
    async with sessions() as session, session.begin():
        if not await claim_run(session, job, period, now):
            return False
    try:
        summary: dict[str, Any] = await work()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", job, period)
        async with sessions() as session, session.begin():
            await finish_run(session, job, period, "failed", {"error": str(exc)[:2000]})
        return True
    async with sessions() as session, session.begin():
        await finish_run(session, job, period, "done", summary)
    return True


async def _sync(app: web.Application, progress: Progress | None = None) -> dict[str, Any]:
    summary = await run_sync(
        app[SESSIONS],
        app[OFFICERND],
        app[PAPERCUT],
        member_filter=MemberFilter.from_settings(app[CONFIG].officernd),
        applied=_applied(app),
        progress=progress,
        worker=f"{app[INSTANCE].name}:sync",
        provisioning=Provisioning(app[CONFIG].papercut.provisioning),
    )
    return summary.as_dict()


async def sync_now(app: web.Application, progress: Progress | None = None) -> str:
    """A sync asked for now (the admin page's Sync button): a run of its own period
    ``manual-<time>``, claimed, recorded and failed like the scheduled ones; its period."""
    now = utcnow()
    period = f"{MANUAL_PREFIX}{now:%Y-%m-%dT%H:%M:%S.%fZ}"

    async def sync() -> dict[str, Any]:
        return await _sync(app, progress)

    await _job(app, SYNC_JOB, period, now, sync)
    return period


async def scheduler_tick(app: web.Application, now: datetime | None = None) -> list[str]:
    """Run whatever is due at ``now``; the jobs run, as ``job/period``."""
    config = app[CONFIG]
    settings = config.officernd
    now = now or utcnow()
    client, papercut, sessions = app[OFFICERND], app[PAPERCUT], app[SESSIONS]
    applied = _applied(app)
    ran: list[str] = []

    async def sync() -> dict[str, Any]:
        return await _sync(app)

    slot = sync_slot(now, settings.sync_interval_mins)
    if await _job(app, SYNC_JOB, slot, now, sync):
        ran.append(f"{SYNC_JOB}/{slot}")

    local = now.astimezone(ZoneInfo(settings.timezone))
    hour, minute = (int(part) for part in settings.fees_at.split(":"))
    if local.time() < time(hour, minute):
        return ran
    day = local.date()

    async def fees() -> dict[str, Any]:
        summary = await run_fees(
            sessions,
            client,
            papercut,
            applied,
            day=day,
            currency=config.money,
            plan_name=settings.fees_plan,
            office=settings.office,
            manage=settings.manage_fees,
            wait=0.0,  # rows left over are the outbox worker's
            worker=f"{app[INSTANCE].name}:fees",
        )
        return summary.as_dict()

    if await _job(app, FEES_JOB, day.isoformat(), now, fees):
        ran.append(f"{FEES_JOB}/{day.isoformat()}")

    amount = parse_amount(settings.allowance_amount, field="officernd.allowance_amount")
    if amount != 0:
        period = period_key(settings.allowance_period, day)

        async def topups() -> dict[str, Any]:
            summary = await run_topups(
                sessions,
                papercut,
                applied,
                amount=amount,
                period=settings.allowance_period,
                day=day,
                wait=0.0,
                worker=f"{app[INSTANCE].name}:topup",
            )
            return summary.as_dict()

        if await _job(app, TOPUP_JOB, period, now, topups):
            ran.append(f"{TOPUP_JOB}/{period}")
    return ran


async def _scheduler(app: web.Application) -> None:
    while True:
        try:
            ran = await scheduler_tick(app)
            if ran:
                log.info("officernd: ran %s", ", ".join(ran))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("officernd scheduler tick failed")
        await asyncio.sleep(TICK_SECS)


async def officernd_ctx(app: web.Application) -> AsyncIterator[None]:
    """The OfficeRnD client, the outbox handlers and the scheduler (needs ``[papercut]``)."""
    config = app[CONFIG]
    settings = config.officernd
    if not settings.api_url:
        yield
        return
    if PAPERCUT not in app:
        log.warning("[officernd] is set but [papercut] is not: no sync, fees or top-ups")
        yield
        return
    client = OfficeRnDClient(
        settings.api_url,
        settings.org,
        token_url=settings.token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scope=settings.scope,
    )
    app[OFFICERND] = client
    metrics.watch_client(app, "officernd", client)
    applied = _applied(app)
    handlers = app[HANDLERS]
    handlers[FEE_KIND] = FeeHandler(client, app[PAPERCUT], applied)
    handlers[TOPUP_KIND] = TopupHandler(app[PAPERCUT], applied)
    handlers[RECREATE_KIND] = Recreator(
        app[SESSIONS],
        app[PAPERCUT],
        applied,
        provisioning=Provisioning(app[CONFIG].papercut.provisioning),
    )
    task = asyncio.create_task(_scheduler(app))
    app[SCHEDULER] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
