"""The one way a print-out's status changes on an outside event, and ends.

Callers (tracker, PaperCut monitor, dispatch, hold expiry, the job and ticket
handlers) map what they saw to a ``Change`` — status, reason, and where the
cost comes from — and hand it to ``Endings.apply``, which does the rest in
order: the guarded transition (``billing.status``), the cost
(``charging.cost_for``) and the charge of a completed print-out, and the
spool detach of an ended one.

The session belongs to the boundary: ``ending(app)`` opens it, commits, and
only then removes the ended jobs' spool files (a crash in between leaves an
unreferenced file, which the start-up janitor ``Spool.sweep`` deletes).
``Endings`` itself never commits.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing import charging, events, status
from billing.db import utcnow
from billing.enums import PrintStatus, StatusReason
from billing.models import PrintIn, PrintOut
from billing.money import Currency

from .. import metrics
from ..keys import CONFIG, SESSIONS, SPOOL, WAKE


@dataclass(frozen=True)
class Change:
    """What an outside event means for a print-out.

    ``reason`` is a ``StatusReason``, or a reason reported from outside as is
    (a target's IPP ``job-state-reasons``). ``logged_cost`` is the cost the
    target logged (PaperCut's ``usage_cost``); None: the printer's cost rules.
    A job ticket's own cost wins over both (``charging.cost_for``).
    ``impressions`` is what the printer says it printed (all copies); 0 is
    "not counted" (ippeveprinter and many printers report 0 when they do not count).
    ``keep_document``: an ended job's spool file stays (a job its printer
    rejected may be redirected); ``Endings.drop_documents`` removes it later.
    """

    to: PrintStatus
    reason: StatusReason | str | None = None
    message: str | None = None
    logged_cost: Decimal | None = None
    impressions: int | None = None  # the printer's job-impressions-completed
    keep_document: bool = False


class Endings:
    """Applies ``Change``s in one session (never commits); see ``ending``."""

    def __init__(self, app: web.Application, session: AsyncSession) -> None:
        self.app = app
        self.session = session
        self.currency: Currency = app[CONFIG].money
        self._ended: list[int] = []  # print-in ids whose spool files go after the commit
        self.changed: list[int] = []  # print-outs whose status changed (waiters woken after it)

    async def apply(self, po: PrintOut, change: Change, *, actor: str) -> bool:
        """Transition ``po``; charge it when it completed; False if the transition
        was not possible (then nothing else happens)."""
        if not await status.transition(
            self.session, po, change.to, actor=actor, reason=change.reason, message=change.message
        ):
            return False
        self.changed.append(po.id)
        if change.to is PrintStatus.COMPLETED:
            started = time.monotonic()
            counted = await self._printer_count(po, change.impressions, actor)
            cost, detail = await charging.cost_for(
                self.session, po, self.currency, logged=change.logged_cost, impressions=counted
            )
            await charging.charge(self.session, po, cost, self.currency, actor=actor, detail=detail)
            metrics.charged(self.app, actor, started)
        if change.to.is_final and not change.keep_document:
            self._ended.append(po.print_in_id)
        return True

    async def _printer_count(self, po: PrintOut, reported: int | None, actor: str) -> int | None:
        """Record the printer's count beside ours; the one to charge when trusted."""
        if reported is None or reported <= 0:
            return None
        po.printer_impressions = reported
        print_in = await self.session.get(PrintIn, po.print_in_id)
        inner = max(1, print_in.document_copies or 1) if print_in is not None else 1
        ours = po.pages * po.copies * inner
        trust = self.app[CONFIG].charging.trust
        trusted = trust == "printer"
        if reported != ours:
            events.record(
                self.session,
                subject_type="print_out",
                subject_id=po.id,
                actor=actor,
                reason=StatusReason.COUNT_DIFFERS,
                message=(
                    f"the printer counted {reported} impressions, the document {ours}; "
                    f"charged: {'the printer' if trusted else 'the document'}'s count"
                ),
                data={
                    "printer": reported,
                    "document": ours,
                    "trust": "printer" if trusted else "document",
                },
            )
        return reported if trusted else None

    def drop_documents(self, print_in_ids: Sequence[int]) -> None:
        """These print-ins' spool files go at the commit (documents kept after an end)."""
        self._ended.extend(print_in_ids)

    async def detach(self) -> list[str]:
        """Detach the ended jobs' spool files (before the commit); the paths to remove."""
        ended, self._ended = self._ended, []
        return await detach_spool(self.session, ended)


@asynccontextmanager
async def ending(app: web.Application) -> AsyncIterator[Endings]:
    """A session and transaction for ``Endings``: commits, then removes the spool files
    and wakes whoever waits for these print-outs (the backend following its job).

    An exception rolls everything back and removes nothing.
    """
    async with app[SESSIONS]() as session:
        async with session.begin():
            endings = Endings(app, session)
            yield endings
            paths = await endings.detach()
        waker = app.get(WAKE)  # an app with only the lifecycle's keys has no waiters
        if waker is not None:
            waker.status_changed(endings.changed)
        for path in paths:
            app[SPOOL].remove(path)


async def detach_spool(session: AsyncSession, print_in_ids: Sequence[int]) -> list[str]:
    """Mark ended jobs' spool files removed; the caller unlinks them after commit."""
    if not print_in_ids:
        return []
    rows = await session.execute(
        select(PrintIn.spool_path).where(
            PrintIn.id.in_(print_in_ids), PrintIn.spool_path.is_not(None)
        )
    )
    paths = [path for (path,) in rows if path]
    await session.execute(
        update(PrintIn)
        .where(PrintIn.id.in_(print_in_ids), PrintIn.spool_path.is_not(None))
        .values(spool_path=None, spool_removed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return paths
