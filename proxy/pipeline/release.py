"""Held jobs: release (web, NFC tap, ticket operator), cancel, and hold expiry.

Held print-outs (hold mode, job tickets, invalid delegations) wait in the spool
with status ``held``. Release is the guarded HELD → PENDING transition (a
compare-and-set), so a burst of taps or two operators release a job once;
dispatch, tracking and charging then follow the direct-print path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events, status
from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import Card, Printer, PrintOut, Reader, User, reader_printers
from billing.money import Currency

from ..exceptions import Conflict, NotFound
from . import credit_gate, lifecycle

log = logging.getLogger(__name__)

# Held for their delegation: fixed by POST /jobs/{id}/recheck or PUT /jobs/{id}/delegation.
FIXABLE_DELEGATION = (
    StatusReason.DELEGATION_INVALID,
    StatusReason.USER_UNKNOWN,
    StatusReason.DELEGATION_FORBIDDEN,
)
# Held jobs that cannot print until an admin fixes them.
_NOT_RELEASABLE = (*FIXABLE_DELEGATION, StatusReason.TITLE_INVALID)


@dataclass(frozen=True)
class Released:
    print_out: PrintOut
    printer: str


def releasable(po: PrintOut) -> bool:
    return (
        po.status == PrintStatus.HELD
        and po.status_reason not in _NOT_RELEASABLE
        and po.target_job_id is None
    )


async def release(
    session: AsyncSession,
    po: PrintOut,
    *,
    actor: str,
    reason: StatusReason,
    printer: Printer | None = None,
    currency: Currency | None = None,
) -> bool:
    """HELD → PENDING (dispatch picks it up); False if it was not held any more.

    ``printer`` sends a job ticket to another proxy printer's target instead.
    A job that would take a restricted account below its credit limit is not
    released: InsufficientBalance (a Conflict) says balance, cost and limit.
    """
    if not releasable(po):
        if po.status == PrintStatus.HELD:
            raise Conflict(f"print-out {po.id} is held because: {po.status_message}")
        return False
    await credit_gate.at_release(session, po, currency or Currency(po.currency))
    if printer is not None and printer.id != po.printer_id:
        po.target, po.papercut = printer.target, printer.papercut
        events.record(
            session,
            subject_type="print_out",
            subject_id=po.id,
            actor=actor,
            reason="redirected",
            message=f"to printer {printer.name} ({printer.target})",
        )
    if not await status.transition(session, po, PrintStatus.PENDING, actor=actor, reason=reason):
        return False
    po.next_action_at = utcnow()
    po.hold_until = None
    return True


async def cancel_held(
    ends: lifecycle.Endings,
    po: PrintOut,
    *,
    actor: str,
    reason: StatusReason = StatusReason.CANCELED_WHILE_HELD,
) -> None:
    """Cancel a held job: nothing printed, nothing charged (its spool file goes at commit)."""
    if po.status != PrintStatus.HELD:
        raise Conflict(f"print-out {po.id} is {PrintStatus(po.status).label}, not held")
    if not await ends.apply(po, lifecycle.Change(PrintStatus.CANCELED, reason), actor=actor):
        raise Conflict(f"print-out {po.id} changed meanwhile; try again")


async def held_for_user_on(
    session: AsyncSession, user_name: str, printer_ids: Sequence[int]
) -> list[PrintOut]:
    """A user's releasable held jobs in hold mode on the given printers, oldest first,
    and the jobs of direct printers with ``--require-tap`` waiting for her tap."""
    rows = await session.scalars(
        select(PrintOut)
        .where(
            PrintOut.delegate == user_name,
            PrintOut.printer_id.in_(printer_ids),
            PrintOut.status == int(PrintStatus.HELD),
            or_(
                PrintOut.mode == PrinterMode.HOLD.value,
                PrintOut.status_reason == StatusReason.AWAITING_TAP,
            ),
        )
        .order_by(PrintOut.created_at, PrintOut.id)
    )
    return [po for po in rows if releasable(po)]


async def card_owner(session: AsyncSession, number: str) -> User | None:
    """The card's owner, if active: a deleted card, or a disabled or deleted user's
    card, is unknown."""
    return await session.scalar(
        select(User)
        .join(Card, Card.user_id == User.id)
        .where(
            Card.number == number,
            Card.deleted_at.is_(None),
            User.active.is_(True),
            User.deleted_at.is_(None),
        )
    )


async def tap(session: AsyncSession, reader: Reader, card_number: str) -> list[Released]:
    """Release every held job of the card's owner on the reader's printers.

    ``card_number`` is already normalised. Unknown card → NotFound, nothing
    released. Every tap is an event, whatever it released.
    """
    owner = await card_owner(session, card_number)
    if owner is None:
        events.record(
            session,
            subject_type="reader",
            subject_id=reader.reader_id,
            actor=reader.reader_id,
            reason="tap-unknown-card",
            data={"card": card_number},
        )
        raise NotFound("unknown card")
    printers = dict(
        (
            await session.execute(
                select(Printer.id, Printer.name)
                .join(reader_printers, reader_printers.c.printer_id == Printer.id)
                .where(reader_printers.c.reader_id == reader.id)
            )
        ).all()
    )
    released: list[Released] = []
    refused: list[int] = []
    for po in await held_for_user_on(session, owner.name, list(printers)):
        try:
            async with session.begin_nested():
                done = await release(
                    session, po, actor=f"reader:{reader.reader_id}", reason=StatusReason.NFC_TAP
                )
        except credit_gate.InsufficientBalance as exc:
            refused.append(po.id)
            events.record(
                session,
                subject_type="print_out",
                subject_id=po.id,
                actor=f"reader:{reader.reader_id}",
                reason="release-refused",
                message=str(exc),
            )
            continue
        if done:
            released.append(Released(po, printers[po.printer_id]))
    events.record(
        session,
        subject_type="reader",
        subject_id=reader.reader_id,
        actor=owner.name,
        reason="tap",
        data={
            "card": card_number,
            "released": [r.print_out.id for r in released],
            **({"refused": refused} if refused else {}),
        },
    )
    return released
