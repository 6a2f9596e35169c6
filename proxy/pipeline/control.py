"""Job control: cancel a print-out in any state that has not ended.

One entry point for every canceller (the CUPS backend on SIGTERM, the API,
the CLI): a job at a target is canceled there first (Cancel-Job), then the
print-out ends ``canceled`` with nothing charged, through the lifecycle
(``lifecycle.ending``), like every other ending. A job the target already
finished is left to the tracker, which records how it really ended.

``app`` is any application carrying the keys the lifecycle and this module
read (``CONFIG``, ``SESSIONS``, ``SPOOL``, ``TARGETS``, ``WAKE``): the service,
its intake app (``intake.create_intake_app`` sets them), or the CLI's
``control_app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from billing.db import is_retryable, make_engine, make_sessionmaker
from billing.enums import PrintStatus, StatusReason
from billing.models import PrintOut

from ..config import Config
from ..exceptions import Conflict, NotFound
from ..keys import CONFIG, SESSIONS, SPOOL, TARGETS, WAKE, IntakeResources
from ..spool import Spool
from ..targets.errors import TargetRequestError
from ..targets.ipp_codec import StatusCode
from . import lifecycle
from .pool import TargetPool
from .wake import TRACKER, Waker

log = logging.getLogger(__name__)

REASON_CANCELED_IN_CUPS = StatusReason.CANCELED_IN_CUPS
REASON_CANCELED_BY_USER = StatusReason.CANCELED_BY_USER
# A job dispatched while the cancel was on its way is canceled at its target too.
ATTEMPTS = 3


class AlreadyEnded(Conflict):
    """The target finished the job before the cancel reached it."""

    code = "already-ended"


async def cancel(
    app: web.Application,
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
    async with app[SESSIONS]() as session:
        po = await session.get(PrintOut, print_out_id)
    if po is None:
        raise NotFound(f"job {print_out_id} not found")
    canceled_at: int | None = None
    for _ in range(ATTEMPTS):
        check_not_final(po)
        if po.target_job_id is not None and po.target_job_id != canceled_at:
            await _cancel_at_target(app, po)
            canceled_at = po.target_job_id
        try:
            async with lifecycle.ending(app) as ends:
                fresh = await ends.session.get(PrintOut, print_out_id)
                assert fresh is not None
                check_not_final(fresh)
                if fresh.target_job_id is None or fresh.target_job_id == canceled_at:
                    change = lifecycle.Change(PrintStatus.CANCELED, reason, message)
                    if not await ends.apply(fresh, change, actor=actor):
                        raise Conflict(f"job {fresh.id} changed meanwhile; try again")
                    return fresh
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            # PostgreSQL chose this transaction as a deadlock's victim (another one
            # touched the same print-out's rows): rolled back, so look again.
            log.info("cancel of job %s: %s; trying again", print_out_id, exc.orig)
            async with app[SESSIONS]() as session:
                fresh = await session.get(PrintOut, print_out_id)
            assert fresh is not None
        po = fresh  # dispatched meanwhile: cancel it at the target first
    raise Conflict(f"job {print_out_id} keeps changing; try again")


def check_not_final(po: PrintOut) -> None:
    current = PrintStatus(po.status)
    if current.is_final:
        raise Conflict(f"job {po.id} has already ended ({current.label})")


async def _cancel_at_target(app: web.Application, po: PrintOut) -> None:
    assert po.target_job_id is not None
    target = app[TARGETS].get(po.target)
    try:
        await target.cancel(po.target_job_id)
    except TargetRequestError as exc:
        if exc.ipp_status == StatusCode.CLIENT_ERROR_NOT_POSSIBLE:
            app[WAKE].wake(TRACKER)  # let it record the real end state soon
            raise AlreadyEnded(
                f"job {po.id} already ended at the printer; its end state follows"
            ) from exc
        raise
    log.info("print-out %s: canceled job %s at %s", po.id, po.target_job_id, po.target)


def carry_keys(app: web.Application, res: IntakeResources) -> None:
    """Give ``app`` (the intake's) the service's keys that job control and the lifecycle read."""
    app[CONFIG] = res.config
    app[SESSIONS] = res.sessions
    app[SPOOL] = res.spool
    app[TARGETS] = res.targets
    app[WAKE] = res.waker


@asynccontextmanager
async def control_app(config: Config) -> AsyncIterator[web.Application]:
    """An application with just the keys job control needs, for a command line."""
    engine = make_engine(config.database.url, echo=config.database.echo)
    app = web.Application()
    app[CONFIG] = config
    app[SESSIONS] = make_sessionmaker(engine)
    app[SPOOL] = Spool(Path(config.spool.dir))
    app[TARGETS] = TargetPool(config)
    app[WAKE] = Waker()  # nothing listens: the service's loops find the change on their tick
    try:
        yield app
    finally:
        await app[TARGETS].close()
        await engine.dispose()
