"""The tracker: follows dispatched jobs to their end state, batched per target.

Each tick makes one ``Get-Jobs`` request per target for all of its jobs in
flight (never one request per job), applies the state changes through the
guarded transitions, and charges completed print-outs in the same database
transaction as their completion.

A target's job is ours only if its job-uuid or job-name marker says so
(``JobState.is_job``): a printer that restarted counts its job ids from 1
again, and its new job 1 is not our old job 1. A job the target no longer
reports as ours is ``lost``: after ``[tracker] lost_after_secs`` the print-out
ends ``aborted`` with reason ``lost-at-target``, nothing charged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Collection
from datetime import timedelta
from typing import NamedTuple

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import PrintStatus, StatusReason
from billing.models import PrintOut

from .. import metrics
from ..keys import CONFIG, SESSIONS, TARGETS, WAKE
from ..metrics_registry import TRACKER_TARGETS
from ..targets.base import JobState
from ..targets.errors import TargetError
from . import lifecycle
from .wake import SENT, sleep_or_wake

log = logging.getLogger(__name__)

COMMIT_EVERY = 50
IN_FLIGHT = (PrintStatus.PENDING, PrintStatus.HELD, PrintStatus.PROCESSING, PrintStatus.STOPPED)
_IPP_STATES = {int(s) for s in PrintStatus if s != PrintStatus.PENDING_EXTERNAL}


def to_status(state: JobState) -> PrintStatus | None:
    return PrintStatus(state.state) if state.state in _IPP_STATES else None


class Flight(NamedTuple):
    """A dispatched print-out as the tracker follows it."""

    print_out_id: int
    status: int
    dispatch_uuid: str | None
    missing_since: dt.datetime | None
    papercut: bool


async def in_flight(
    session: AsyncSession, only: Collection[int] | None = None
) -> dict[str, dict[int, Flight]]:
    """{target uri: {target job id: flight}} for dispatched, unfinished jobs
    (of the print-outs ``only``, when given)."""
    query = select(
        PrintOut.target,
        PrintOut.target_job_id,
        PrintOut.id,
        PrintOut.status,
        PrintOut.dispatch_uuid,
        PrintOut.target_missing_since,
        PrintOut.papercut,
    ).where(
        # PaperCut jobs too: a cancel in CUPS shows there first (see apply_states).
        PrintOut.status.in_([int(s) for s in (*IN_FLIGHT, PrintStatus.PENDING_EXTERNAL)]),
        PrintOut.dispatched_at.is_not(None),
        PrintOut.target_job_id.is_not(None),
    )
    if only is not None:
        query = query.where(PrintOut.id.in_(list(only)))
    rows = await session.execute(query)
    jobs: dict[str, dict[int, Flight]] = defaultdict(dict)
    for target, job_id, print_out_id, current, uuid, missing, papercut in rows:
        if job_id is not None:
            jobs[target][job_id] = Flight(print_out_id, current, uuid, missing, bool(papercut))
    return jobs


def changes(jobs: dict[int, Flight], states: dict[int, JobState]) -> dict[int, JobState]:
    """{print-out id: reported state} for our jobs whose state differs from ours.

    A job id the target reports for someone else's job is not ours (see
    ``missing``). Most ticks change nothing: then no write transaction is
    opened at all.
    """
    moved: dict[int, JobState] = {}
    for job_id, state in states.items():
        known = jobs.get(job_id)
        new = to_status(state)
        if known is None or not state.is_job(known.dispatch_uuid):
            continue
        if new is not None and int(new) != known.status:
            moved[known.print_out_id] = state
    return moved


def missing(jobs: dict[int, Flight], states: dict[int, JobState]) -> tuple[list[int], list[int]]:
    """(print-outs the target does not report as ours, those it reports again).

    PaperCut jobs are left out: PaperCut's print log decides how they end.
    """
    gone: list[int] = []
    back: list[int] = []
    for job_id, flight in jobs.items():
        if flight.papercut:
            continue
        state = states.get(job_id)
        if state is None or not state.is_job(flight.dispatch_uuid):
            gone.append(flight.print_out_id)
        elif flight.missing_since is not None:
            back.append(flight.print_out_id)
    return gone, back


async def apply_states(app: web.Application, moved: dict[int, JobState]) -> int:
    """Apply the reported states that differ from ours; returns how many changed.

    One database transaction per ``COMMIT_EVERY`` print-outs, so that many jobs
    ending at once never hold the write lock for long.
    """
    ids = list(moved)
    changed = 0
    for start in range(0, len(ids), COMMIT_EVERY):
        chunk = ids[start : start + COMMIT_EVERY]
        changed += await _apply_chunk(app, {i: moved[i] for i in chunk})
    return changed


def change_for(po: PrintOut, state: JobState) -> lifecycle.Change | None:
    """What a state the target reported means for ``po``; None: nothing to do."""
    new = to_status(state)
    if new is None or new == po.status:
        return None
    if po.papercut:
        # PaperCut's print log decides how a PaperCut job ends, except a job
        # canceled or aborted in CUPS before PaperCut logged it.
        if new not in (PrintStatus.CANCELED, PrintStatus.ABORTED):
            return None
        return lifecycle.Change(PrintStatus.CANCELED, StatusReason.CANCELED_IN_CUPS)
    # The target's own job-state-reasons, stored as reported; printer cost rules
    # over our count or the printer's (lifecycle, [charging] trust).
    reason = ",".join(state.reasons)[:64] or None
    return lifecycle.Change(new, reason, impressions=state.impressions_completed)


async def _apply_chunk(app: web.Application, moved: dict[int, JobState]) -> int:
    changed = 0
    async with lifecycle.ending(app) as ends:
        outs = (
            await ends.session.scalars(select(PrintOut).where(PrintOut.id.in_(list(moved))))
        ).all()
        for po in outs:
            change = change_for(po, moved[po.id])
            if change is not None and await ends.apply(po, change, actor="tracker"):
                changed += 1
    return changed


async def note_missing(
    app: web.Application, jobs: dict[int, Flight], states: dict[int, JobState]
) -> int:
    """Record since when jobs are missing at the target; end those lost long enough."""
    gone, back = missing(jobs, states)
    if not gone and not back:
        return 0
    now = utcnow()
    lost_after = timedelta(seconds=app[CONFIG].tracker.lost_after_secs)
    by_id = {f.print_out_id: f for f in jobs.values()}
    lost = [i for i in gone if (m := by_id[i].missing_since) is not None and now - m >= lost_after]
    first_seen = [i for i in gone if by_id[i].missing_since is None]
    ended = 0
    async with lifecycle.ending(app) as ends:
        for ids, value in ((first_seen, now), (back, None)):
            if ids:
                await ends.session.execute(
                    update(PrintOut)
                    .where(PrintOut.id.in_(ids))
                    .values(target_missing_since=value)
                    .execution_options(synchronize_session=False)
                )
        if lost:
            outs = (await ends.session.scalars(select(PrintOut).where(PrintOut.id.in_(lost)))).all()
            for po in outs:
                message = (
                    f"{po.target} no longer knows job {po.target_job_id} "
                    f"(not seen since {po.target_missing_since:%Y-%m-%d %H:%M:%S} UTC); "
                    "it restarted or dropped the job: not printed, nothing charged"
                )
                change = lifecycle.Change(PrintStatus.ABORTED, StatusReason.LOST_AT_TARGET, message)
                if await ends.apply(po, change, actor="tracker"):
                    log.warning("print-out %s: %s", po.id, message)
                    ended += 1
    return ended


async def track_tick(app: web.Application) -> int:
    async with app[SESSIONS]() as session:
        flights = await in_flight(session)
    changed = 0
    for uri, jobs in flights.items():
        try:
            states = await app[TARGETS].get(uri).poll(list(jobs))
        except TargetError as exc:
            log.warning("tracking %s: %s", uri, exc)
            metrics.poll_failed(app, uri)
            continue
        changed += await apply_states(app, changes(jobs, states))
        changed += await note_missing(app, jobs, states)
    metrics.tracker_ticked(app, TRACKER_TARGETS)
    return changed


# --- jobs just sent --------------------------------------------------------------
#
# A direct job's backend waits for its end, and cupsd sends the queue's next job
# only after it: every second between the printer finishing and us noticing is
# a second the whole queue waits. So a job this instance has just sent is asked
# about on its own, at once and then less and less often (as CUPS's own ipp
# backend does), until it ends or ``SENT_WINDOW`` passes; after that the
# periodic tick above follows it like every other job. The ends are applied as
# the tick applies them (guarded transitions: an instance that races the
# tracker's leader changes nothing twice), and ``lifecycle.ending`` wakes the
# waiting backend as soon as the end is committed.

SENT_FIRST = 0.02  # seconds after the dispatch: the first look
SENT_WINDOW = 60.0


async def follow_sent_tick(app: web.Application, print_out_ids: Collection[int]) -> set[int]:
    """Poll these print-outs' targets (one request per target) and apply what
    changed; returns those still in flight."""
    async with app[SESSIONS]() as session:
        flights = await in_flight(session, print_out_ids)
    still: set[int] = set()
    for uri, all_jobs in flights.items():
        # PaperCut's print log says how those end (the PaperCut monitor's business).
        jobs = {job_id: f for job_id, f in all_jobs.items() if not f.papercut}
        if not jobs:
            continue
        try:
            states = await app[TARGETS].get(uri).poll(list(jobs))
        except TargetError as exc:
            log.info("following the jobs just sent to %s: %s", uri, exc)
            still.update(f.print_out_id for f in jobs.values())
            continue
        moved = changes(jobs, states)
        await apply_states(app, moved)
        for flight in jobs.values():
            state = moved.get(flight.print_out_id)
            new = to_status(state) if state is not None else None
            if new is None or not new.is_final:
                still.add(flight.print_out_id)
    return still


async def follow_sent(app: web.Application) -> None:
    """The eager follower's loop (a worker task on every instance: its own jobs)."""
    waker = app[WAKE]
    event = waker.subscribe(SENT)
    cap = max(SENT_FIRST, min(1.0, app[CONFIG].tracker.interval_secs))
    due: dict[int, tuple[float, float, float]] = {}  # print-out -> (next look, pause, give up)
    while True:
        now = time.monotonic()
        for print_out_id in waker.take_sent():
            due[print_out_id] = (now + SENT_FIRST, SENT_FIRST, now + SENT_WINDOW)
        ready = [i for i, (at, _, _) in due.items() if at <= now]
        if ready:
            try:
                still = await follow_sent_tick(app, ready)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the jobs just sent failed")
                still = set(ready)
            now = time.monotonic()
            for print_out_id in ready:
                _, pause, give_up = due.pop(print_out_id)
                if print_out_id in still and now < give_up:
                    pause = min(cap, pause * 2)
                    due[print_out_id] = (now + pause, pause, give_up)
        wait = min((at for at, _, _ in due.values()), default=now + 3600.0) - time.monotonic()
        await sleep_or_wake(event, max(0.0, wait))
