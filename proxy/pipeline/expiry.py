"""The expiry loop: held jobs whose hold ran out are canceled (never charged)."""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import select

from billing import status
from billing.db import utcnow
from billing.enums import PrintStatus
from billing.models import PrintOut

from ..keys import SESSIONS, SPOOL
from .jobs import detach_spool
from .release import REASON_EXPIRED

log = logging.getLogger(__name__)


async def expire_tick(app: web.Application) -> int:
    """Cancel held jobs whose hold expired (reason ``expired``); nothing is charged."""
    now = utcnow()
    paths: list[str] = []
    async with app[SESSIONS]() as session, session.begin():
        due = (
            await session.scalars(
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
            if await status.transition(
                session,
                po,
                PrintStatus.CANCELED,
                actor="expiry",
                reason=REASON_EXPIRED,
                message="never released before the hold expired",
            ):
                paths += await detach_spool(session, [po.print_in_id])
    for path in paths:
        app[SPOOL].remove(path)
    if due:
        log.info("expired %d held job(s)", len(due))
    return len(due)
