"""The tracker: follows dispatched jobs to their end state, batched per target.

Each tick makes one ``Get-Jobs`` request per target for all of its jobs in
flight (never one request per job), applies the state changes through the
guarded transitions, and charges completed print-outs in the same database
transaction as their completion.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import PrintStatus, StatusReason
from billing.models import PrintOut

from .. import metrics
from ..keys import SESSIONS, TARGETS
from ..metrics_registry import TRACKER_TARGETS
from ..targets.base import JobState
from ..targets.errors import TargetError
from . import lifecycle

log = logging.getLogger(__name__)

COMMIT_EVERY = 50
IN_FLIGHT = (PrintStatus.PENDING, PrintStatus.HELD, PrintStatus.PROCESSING, PrintStatus.STOPPED)
_IPP_STATES = {int(s) for s in PrintStatus if s != PrintStatus.PENDING_EXTERNAL}


def to_status(state: JobState) -> PrintStatus | None:
    return PrintStatus(state.state) if state.state in _IPP_STATES else None


async def in_flight(session: AsyncSession) -> dict[str, dict[int, tuple[int, int]]]:
    """{target uri: {target job id: (print-out id, status)}} for dispatched, unfinished jobs."""
    rows = await session.execute(
        select(PrintOut.target, PrintOut.target_job_id, PrintOut.id, PrintOut.status).where(
            # PaperCut jobs too: a cancel in CUPS shows there first (see apply_states).
            PrintOut.status.in_([int(s) for s in (*IN_FLIGHT, PrintStatus.PENDING_EXTERNAL)]),
            PrintOut.dispatched_at.is_not(None),
            PrintOut.target_job_id.is_not(None),
        )
    )
    jobs: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for target, job_id, print_out_id, current in rows:
        if job_id is not None:
            jobs[target][job_id] = (print_out_id, current)
    return jobs


def changes(jobs: dict[int, tuple[int, int]], states: dict[int, JobState]) -> dict[int, JobState]:
    """{print-out id: reported state} for the jobs whose state differs from ours.

    Most ticks change nothing: then no write transaction is opened at all.
    """
    moved: dict[int, JobState] = {}
    for job_id, state in states.items():
        known = jobs.get(job_id)
        new = to_status(state)
        if known is not None and new is not None and int(new) != known[1]:
            moved[known[0]] = state
    return moved


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
    # The target's own job-state-reasons, stored as reported; printer cost rules.
    return lifecycle.Change(new, ",".join(state.reasons)[:64] or None)


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
    metrics.tracker_ticked(app, TRACKER_TARGETS)
    return changed
