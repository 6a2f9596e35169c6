"""The expiry loop: held jobs whose hold ran out are canceled (never charged): reason
``expired``, or ``not-authenticated`` for a ``--require-tap`` job nobody tapped for."""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import select

from billing.db import utcnow
from billing.enums import PrintStatus, StatusReason
from billing.models import PrintOut

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
        for po in due:
            waited_for_tap = po.status_reason == StatusReason.AWAITING_TAP
            await ends.apply(po, NOT_AUTHENTICATED if waited_for_tap else EXPIRED, actor="expiry")
    if due:
        log.info("expired %d held job(s)", len(due))
    return len(due)
