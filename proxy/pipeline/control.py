"""Job control: cancel a print-out in any state that has not ended.

One entry point for every canceller (the CUPS backend on SIGTERM, the API,
the CLI): a job at a target is canceled there first (Cancel-Job), then the
print-out ends ``canceled`` with nothing charged. A job the target already
finished is left to the tracker, which records how it really ended.
"""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from billing import status
from billing.enums import PrintStatus, StatusReason
from billing.models import PrintOut

from ..exceptions import Conflict, NotFound
from ..keys import CONFIG, SESSIONS, SPOOL, TARGETS, WAKE, IntakeResources
from ..targets.errors import TargetRequestError
from ..targets.ipp_codec import StatusCode
from .lifecycle import detach_spool
from .wake import TRACKER

log = logging.getLogger(__name__)

REASON_CANCELED_IN_CUPS = StatusReason.CANCELED_IN_CUPS
REASON_CANCELED_BY_USER = StatusReason.CANCELED_BY_USER


class AlreadyEnded(Conflict):
    """The target finished the job before the cancel reached it."""

    code = "already-ended"


def resources(app: web.Application) -> IntakeResources:
    """What ``cancel`` needs, from the main app."""
    return IntakeResources(app[CONFIG], app[SESSIONS], app[SPOOL], app[WAKE], app[TARGETS])


async def cancel(
    res: IntakeResources,
    print_out_id: int,
    *,
    actor: str,
    reason: StatusReason,
    message: str | None = None,
) -> PrintOut:
    """Cancel the print-out (at its target too); returns it, ended ``canceled``.

    Conflict when it has ended already, AlreadyEnded when the target finished
    it first, TargetError when the target cannot be reached (nothing changed).
    """
    async with res.sessions() as session:
        po = await session.get(PrintOut, print_out_id)
    if po is None:
        raise NotFound(f"job {print_out_id} not found")
    _check_not_final(po)
    if po.target_job_id is not None:
        await _cancel_at_target(res, po)
    async with res.sessions() as session, session.begin():
        fresh = await session.get(PrintOut, print_out_id)
        assert fresh is not None
        _check_not_final(fresh)
        paths = await end_canceled(session, fresh, actor=actor, reason=reason, message=message)
    for path in paths:
        res.spool.remove(path)
    return fresh


async def end_canceled(
    session: AsyncSession, po: PrintOut, *, actor: str, reason: str, message: str | None
) -> list[str]:
    """The guarded transition to ``canceled``; the spool paths to remove after commit."""
    if not await status.transition(
        session, po, PrintStatus.CANCELED, actor=actor, reason=reason, message=message
    ):
        raise Conflict(f"job {po.id} changed meanwhile; try again")
    return await detach_spool(session, [po.print_in_id])


def _check_not_final(po: PrintOut) -> None:
    current = PrintStatus(po.status)
    if current.is_final:
        raise Conflict(f"job {po.id} has already ended ({current.label})")


async def _cancel_at_target(res: IntakeResources, po: PrintOut) -> None:
    assert po.target_job_id is not None
    target = res.targets.get(po.target)
    try:
        await target.cancel(po.target_job_id)
    except TargetRequestError as exc:
        if exc.ipp_status == StatusCode.CLIENT_ERROR_NOT_POSSIBLE:
            res.waker.wake(TRACKER)  # let it record the real end state soon
            raise AlreadyEnded(
                f"job {po.id} already ended at the printer; its end state follows"
            ) from exc
        raise
    log.info("print-out %s: canceled job %s at %s", po.id, po.target_job_id, po.target)
