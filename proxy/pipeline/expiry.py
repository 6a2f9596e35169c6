"""The expiry loop: held jobs whose hold ran out are canceled (never charged): reason
``expired``, or ``not-authenticated`` for a ``--require-tap`` job nobody tapped for."""

from __future__ import annotations

import logging
from datetime import timedelta

from aiohttp import web
from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from billing.db import utcnow
from billing.enums import FINAL_STATUSES, PrintStatus, StatusReason
from billing.models import PrintIn, PrintOut

from ..keys import CONFIG
from . import lifecycle

log = logging.getLogger(__name__)

EXPIRED = lifecycle.Change(
    PrintStatus.CANCELED, StatusReason.EXPIRED, message="never released before the hold expired"
)
# A direct printer with --require-tap: nobody tapped a card within the window.
NOT_AUTHENTICATED = lifecycle.Change(
    PrintStatus.CANCELED,
    StatusReason.NOT_AUTHENTICATED,
    message="nobody tapped a card within the tap window: not printed, nothing charged",
)


async def expire_tick(app: web.Application) -> int:
    """Cancel held jobs whose hold expired (reason ``expired``); nothing is charged."""
    now = utcnow()
    async with lifecycle.ending(app) as ends:
        due = (
            await ends.session.scalars(
                select(PrintOut)
                .where(
                    PrintOut.status == int(PrintStatus.HELD),
                    PrintOut.hold_until.is_not(None),
                    PrintOut.hold_until <= now,
                )
                .order_by(PrintOut.hold_until)
                .limit(100)
            )
        ).all()
        dropped = await drop_rejected_documents(app, ends)
        for po in due:
            waited_for_tap = po.status_reason == StatusReason.AWAITING_TAP
            await ends.apply(po, NOT_AUTHENTICATED if waited_for_tap else EXPIRED, actor="expiry")
    if due:
        log.info("expired %d held job(s)", len(due))
    return len(due) + dropped


async def drop_rejected_documents(app: web.Application, ends: lifecycle.Endings) -> int:
    """Remove the documents rejected jobs kept for a redirect (``[spool]
    keep_rejected_hours``) once that time is over, unless a redirect of the job
    is still on its way (a print-out of the same print-in that has not ended)."""
    cutoff = utcnow() - timedelta(hours=app[CONFIG].spool.keep_rejected_hours)
    later = aliased(PrintOut)
    ids = list(
        await ends.session.scalars(
            select(PrintIn.id)
            .join(PrintOut, PrintOut.print_in_id == PrintIn.id)
            .where(
                PrintIn.spool_path.is_not(None),
                PrintOut.status == int(PrintStatus.ABORTED),
                PrintOut.status_reason == StatusReason.TARGET_REJECTED,
                PrintOut.ended_at <= cutoff,
                ~exists().where(
                    later.print_in_id == PrintIn.id,
                    later.status.not_in([int(s) for s in FINAL_STATUSES]),
                ),
            )
            .distinct()
            .limit(100)
        )
    )
    ends.drop_documents(ids)
    if ids:
        log.info("removed the kept documents of %d rejected job(s)", len(ids))
    return len(ids)
