"""Dispatch: send pending print-outs to their targets.

Work is claimed from the database (``claimed_by``/``claim_until``; ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so a restarted service, or another instance,
picks up what is left; an expired claim is free again.

Never twice at the printer: a ``dispatch_uuid`` is committed before the
Print-Job leaves and cleared only when the target's answer shows it created
nothing. An attempt that finds it set (the service died, or the answer never
came) first asks the target for that job (``Target.find``) and records it
instead of sending the document again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection
from datetime import timedelta

from aiohttp import web
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events, status
from billing.db import claim_ids, utcnow
from billing.enums import PrintStatus, StatusReason
from billing.models import OutboxItem, PrintIn, PrintOut
from billing.retry import RetryPolicy

from .. import metrics
from ..keys import CONFIG, INSTANCE, SESSIONS, TARGETS, WAKE
from ..targets.base import PrintRequest, Target
from ..targets.errors import TargetError, TargetRequestError
from . import lifecycle
from .papercut import document_name
from .prepare import NotPrintable, prepared

log = logging.getLogger(__name__)

# A claim lives a minute and is renewed while a job is being sent (heartbeat), so
# an instance that dies leaves its work to the others within a minute.
CLAIM_FOR = timedelta(seconds=60)
HEARTBEAT_SECS = 20.0
BATCH = 20
# A target that is down: 2 s, 4 s, … at most 10 minutes (jittered), for as long as it takes.
RETRY = RetryPolicy.forever(backoff=2.0, max_backoff=600.0)


async def claim_due(session: AsyncSession, owner: str, limit: int = BATCH) -> list[int]:
    """Claim pending, undispatched print-outs whose time has come."""
    now = utcnow()
    query = (
        select(PrintOut.id)
        .where(
            PrintOut.status == int(PrintStatus.PENDING),
            PrintOut.dispatched_at.is_(None),
            PrintOut.next_action_at <= now,
            or_(PrintOut.claim_until.is_(None), PrintOut.claim_until < now),
        )
        .order_by(PrintOut.next_action_at, PrintOut.id)
        .limit(limit)
    )
    return await claim_ids(
        session, query, PrintOut, {"claimed_by": owner, "claim_until": now + CLAIM_FOR}
    )


async def _keep_claim(app: web.Application, print_out_id: int) -> None:
    """Renew our claim while a (possibly long) upload runs."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECS)
        async with app[SESSIONS]() as session, session.begin():
            await session.execute(
                update(PrintOut)
                .where(PrintOut.id == print_out_id, PrintOut.claimed_by == app[INSTANCE].name)
                .values(claim_until=utcnow() + CLAIM_FOR)
                .execution_options(synchronize_session=False)
            )


async def release_claims(session: AsyncSession, owners: Collection[str] | None = None) -> int:
    """Void claims (print-outs and outbox) held by ``owners``, or all of them:
    what a dead predecessor left (see leader.py)."""
    released = 0
    for model in (PrintOut, OutboxItem):
        held = model.claimed_by.is_not(None) if owners is None else model.claimed_by.in_(owners)
        result = await session.execute(
            update(model)
            .where(held)
            .values(claimed_by=None, claim_until=None)
            .execution_options(synchronize_session=False)
        )
        released += int(result.rowcount)  # type: ignore[attr-defined]
    return released


def print_request(print_out: PrintOut, print_in: PrintIn) -> PrintRequest:
    if print_in.spool_path is None:
        raise TargetError(f"print-out {print_out.id} has no spool file")
    return PrintRequest(
        path=print_in.spool_path,
        document_format=print_in.content_type or "application/octet-stream",
        job_name=print_out.document_name or print_out.title or f"proxyprint-{print_out.id}",
        requesting_user=print_out.delegate,
        copies=print_out.copies,
        job_uuid=print_out.dispatch_uuid,
    )


async def _load(session: AsyncSession, print_out_id: int) -> tuple[PrintOut, PrintIn] | None:
    row = (
        await session.execute(
            select(PrintOut, PrintIn)
            .join(PrintIn, PrintIn.id == PrintOut.print_in_id)
            .where(PrintOut.id == print_out_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def dispatch_one(app: web.Application, print_out_id: int) -> None:
    sessions = app[SESSIONS]
    async with sessions() as session:
        loaded = await _load(session, print_out_id)
    if loaded is None:
        return
    print_out, print_in = loaded
    if print_out.status != PrintStatus.PENDING or print_out.dispatched_at is not None:
        return
    recovering = print_out.dispatch_uuid is not None
    intent: dict[str, str] = {}
    if print_out.papercut and print_out.document_name is None:
        # The monitor finds the job in PaperCut's log by this name.
        intent["document_name"] = print_out.document_name = document_name(print_out.title)
    if not recovering:
        intent["dispatch_uuid"] = print_out.dispatch_uuid = str(uuid.uuid4())
    # Committed before the job leaves, together with our claim taken again: a
    # claim that expired while earlier jobs of the batch were sent may belong
    # to another instance by now, and then the job is theirs.
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(PrintOut)
            .where(
                PrintOut.id == print_out.id,
                PrintOut.claimed_by == app[INSTANCE].name,
                PrintOut.status == int(PrintStatus.PENDING),
                PrintOut.dispatched_at.is_(None),
            )
            .values(claim_until=utcnow() + CLAIM_FOR, **intent)
            .execution_options(synchronize_session=False)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        log.info("print-out %s: claim lost to another instance, left to it", print_out.id)
        return
    started = time.monotonic()
    heartbeat = asyncio.create_task(_keep_claim(app, print_out.id))
    sending = False
    notice: str | None = None  # options the printer could not honour, shown on the print-out
    try:
        target: Target = app[TARGETS].get(print_out.target)
        request = print_request(print_out, print_in)
        submitted = await target.find(request) if recovering else None
        found = submitted is not None
        if submitted is not None:
            log.info("print-out %s: found job %s at the target", print_out.id, submitted.job_id)
        else:
            async with prepared(app, target, print_out, print_in, request) as (ready, chosen):
                sending = True
                notice = "; ".join(chosen.dropped)[:1000] or None
                submitted = await target.submit(ready)
    except NotPrintable as exc:
        await _not_printable(app, print_out, exc)
        return
    except TargetError as exc:
        metrics.dispatched(app, started, "retry" if getattr(exc, "retryable", True) else "rejected")
        await _failed(app, print_out, exc, created_nothing=sending and _answered(exc))
        return
    finally:
        heartbeat.cancel()
    metrics.dispatched(app, started, "ok")
    async with sessions() as session, session.begin():
        now = utcnow()
        recorded = await session.execute(
            update(PrintOut)
            .where(PrintOut.id == print_out.id, PrintOut.dispatched_at.is_(None))
            .values(
                target_job_id=submitted.job_id,
                target_job_uri=submitted.job_uri,
                dispatched_at=now,
                attempts=PrintOut.attempts + 1,
                claimed_by=None,
                claim_until=None,
                next_action_at=None,
                status_message=notice,
            )
            .execution_options(synchronize_session=False)
        )
        if not recorded.rowcount:  # type: ignore[attr-defined]
            return  # recorded already (the same job, found by its uuid)
        ended = await session.scalar(select(PrintOut.status).where(PrintOut.id == print_out.id))
        canceled_meanwhile = ended is not None and PrintStatus(ended).is_final
        events.record(
            session,
            subject_type="print_out",
            subject_id=print_out.id,
            actor="dispatch",
            reason="dispatched",
            message=f"job {submitted.job_id} at {print_out.target}"
            + (" (found there after an interrupted attempt, not sent again)" if found else ""),
        )
        if print_out.papercut and not canceled_meanwhile:
            fresh = await session.get(PrintOut, print_out.id)
            assert fresh is not None
            await status.transition(session, fresh, PrintStatus.PENDING_EXTERNAL, actor="dispatch")
    if canceled_meanwhile:
        # Canceled (control.cancel) while the Print-Job was on its way: undo it there.
        log.info("print-out %s: canceled during dispatch; canceling it at the target", print_out.id)
        try:
            await target.cancel(submitted.job_id)
        except TargetError as exc:
            log.warning("print-out %s: cancel at the target failed: %s", print_out.id, exc)
        return
    app[WAKE].sent(print_out.id)  # the tracker follows it eagerly (tracker.follow_sent)


async def _not_printable(app: web.Application, print_out: PrintOut, exc: NotPrintable) -> None:
    """Held with the reason, for an admin to redirect or cancel: never lost, never charged."""
    log.warning("print-out %s: held %s: %s", print_out.id, exc.reason, exc.message)
    async with app[SESSIONS]() as session, session.begin():
        fresh = await session.get(PrintOut, print_out.id)
        if fresh is None or fresh.status != PrintStatus.PENDING:
            return
        fresh.dispatch_uuid = None  # nothing was sent
        fresh.claimed_by = fresh.claim_until = None
        fresh.next_action_at = None
        await status.transition(
            session,
            fresh,
            PrintStatus.HELD,
            actor="dispatch",
            reason=exc.reason,
            message=exc.message,
        )


def _answered(exc: TargetError) -> bool:
    """The target answered the Print-Job with an error: it created no job."""
    return isinstance(exc, TargetRequestError) and (
        exc.ipp_status is not None or exc.http_status is not None
    )


async def _failed(
    app: web.Application,
    print_out: PrintOut,
    exc: TargetError,
    *,
    created_nothing: bool,
) -> None:
    retryable = bool(getattr(exc, "retryable", True))
    async with lifecycle.ending(app) as ends:
        fresh = await ends.session.get(PrintOut, print_out.id)
        if fresh is None:
            return
        if created_nothing:
            fresh.dispatch_uuid = None  # nothing to look for next time
        if retryable:
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                # Busy printer (one job at a time): try again soon, not with growing backoff.
                fresh.next_action_at = utcnow() + timedelta(seconds=float(retry_after))
            else:
                fresh.attempts += 1
                fresh.next_action_at = utcnow() + timedelta(seconds=RETRY.pause(fresh.attempts))
            fresh.claimed_by = fresh.claim_until = None
            fresh.status_message = f"target unavailable, retrying: {exc}"[:1000]
            log.warning("print-out %s: %s (retry %s)", fresh.id, exc, fresh.attempts)
            return
        change = lifecycle.Change(
            PrintStatus.ABORTED,
            StatusReason.TARGET_REJECTED,
            message=str(exc)[:1000],
            keep_document=app[CONFIG].spool.keep_rejected_hours > 0,  # for a redirect
        )
        await ends.apply(fresh, change, actor="dispatch")


async def dispatch_tick(app: web.Application) -> int:
    async with app[SESSIONS]() as session, session.begin():
        ids = await claim_due(session, app[INSTANCE].name)
    for print_out_id in ids:
        try:
            await dispatch_one(app, print_out_id)
        except Exception:
            log.exception("dispatch of print-out %s failed", print_out_id)
    return len(ids)
