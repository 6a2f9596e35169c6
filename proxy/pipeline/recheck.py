"""Fixing held jobs (SPEC §3): re-check a held job's delegation, or replace it.

A job held ``delegation-invalid``, ``user-unknown`` or ``delegation-forbidden``
waits in the spool with no shadow transactions. ``recheck`` resolves the
delegation it was received with again (its CUPS options, or the registered
delegation it consumed) under today's users, groups and rights;
``replace_delegation`` (an admin) resolves a new one, without the rights
check: it is the admin's decision, recorded as an event with its actor. When
the delegation resolves, the job proceeds as its mode says: direct → pending
(dispatch picks it up), hold → held for release (with its hold expiry),
ticket → held for an operator (the ticket cost priced again for the new copies).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events, status
from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import AccountTransaction, Delegation, Printer, PrintIn, PrintOut, User
from billing.money import Currency

from ..config import DelegationConfig
from ..exceptions import Conflict
from .delegation import (
    DelegationError,
    DelegationForbidden,
    DelegationRequest,
    delegation_from_json,
    parse_cups_options,
    parse_delegation,
)
from .jobs import price_ticket, shadow
from .options import job_options
from .release import FIXABLE_DELEGATION
from .resolve import Share, resolve


def _check_held(po: PrintOut, *, fixable_only: bool) -> None:
    if po.status != PrintStatus.HELD or po.target_job_id is not None:
        raise Conflict(f"job {po.id} is {PrintStatus(po.status).label}, not held")
    if fixable_only and po.status_reason not in FIXABLE_DELEGATION:
        raise Conflict(
            f"job {po.id} is held {po.status_reason}: only a job held for its delegation "
            f"({', '.join(FIXABLE_DELEGATION)}) is rechecked"
        )


def _options(print_in: PrintIn) -> dict[str, str]:
    try:
        return parse_cups_options(print_in.options)
    except DelegationError:
        return {}


async def received_delegation(session: AsyncSession, print_in: PrintIn) -> DelegationRequest | None:
    """The delegation a job came with: its options, else the registered one it consumed."""
    request = parse_delegation(_options(print_in))
    if request is None:
        stored = await session.scalar(
            select(Delegation.options)
            .where(Delegation.consumed_by_print_in_id == print_in.id)
            .order_by(Delegation.id)
            .limit(1)
        )
        if stored is not None:
            request = delegation_from_json(stored)
    return request


async def recheck(
    session: AsyncSession,
    po: PrintOut,
    *,
    actor: str,
    policy: DelegationConfig,
    currency: Currency,
) -> bool:
    """Resolve the held job's delegation again; True when it now proceeds.

    False: still not possible; the job stays held with the reason and message
    found now (an event says so). Conflict when the job is not held for its
    delegation.
    """
    _check_held(po, fixable_only=True)
    print_in = await session.get(PrintIn, po.print_in_id)
    assert print_in is not None
    try:
        request = await received_delegation(session, print_in)
        shares = await resolve(session, request, po.delegate, policy=policy)
    except DelegationError as exc:
        reason, message = StatusReason.DELEGATION_INVALID, exc.message
    except DelegationForbidden as exc:
        reason, message = exc.reason, exc.message
    else:
        await _proceed(
            session,
            po,
            print_in,
            shares,
            actor=actor,
            reason=StatusReason.RECHECKED,
            currency=currency,
            data={"rechecked": True},
        )
        return True
    was = po.status_reason
    done = await session.execute(
        update(PrintOut)
        .where(PrintOut.id == po.id, PrintOut.status == int(PrintStatus.HELD))
        .values(status_reason=reason.value, status_message=message)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"job {po.id} changed meanwhile; try again")
    po.status_reason, po.status_message = reason.value, message
    events.record(
        session,
        subject_type="print_out",
        subject_id=po.id,
        actor=actor,
        reason=reason,
        message=message,
        data={"rechecked": True, "was": was},
    )
    return False


async def replace_delegation(
    session: AsyncSession,
    po: PrintOut,
    request: DelegationRequest,
    *,
    actor: str,
    currency: Currency,
) -> None:
    """An admin's new delegation for a held job (not yet dispatched); then per mode.

    Names must resolve (DelegationError otherwise, nothing changed); the
    delegate's rights are not checked: the admin decides, the event records it.
    """
    _check_held(po, fixable_only=False)
    print_in = await session.get(PrintIn, po.print_in_id)
    assert print_in is not None
    shares = await resolve(session, request, po.delegate, check_rights=False)
    await _proceed(
        session,
        po,
        print_in,
        shares,
        actor=actor,
        reason=StatusReason.DELEGATION_REPLACED,
        currency=currency,
        data={"delegation": request.to_options()},
    )


async def _proceed(
    session: AsyncSession,
    po: PrintOut,
    print_in: PrintIn,
    shares: list[Share],
    *,
    actor: str,
    reason: StatusReason,
    currency: Currency,
    data: dict[str, object],
) -> None:
    """New shadow transactions and copies, then the job goes on as its mode says."""
    printer = await session.get(Printer, po.printer_id)
    assert printer is not None
    mode = PrinterMode(po.mode)
    asked = job_options(_options(print_in), print_in.copies_requested)
    user_id = await session.scalar(select(User.id).where(User.name == po.delegate))
    was = po.status_reason
    now = utcnow()
    await session.execute(
        delete(AccountTransaction)
        .where(AccountTransaction.print_out_id == po.id)
        .execution_options(synchronize_session=False)
    )
    po.copies = asked.copies * max(1, sum(s.weight for s in shares))  # the copies rule
    if user_id is not None:
        po.delegate_user_id = print_in.delegate_user_id = user_id
    if mode is PrinterMode.TICKET:
        price_ticket(printer, print_in, po, currency)
    data = {**data, "was": was, "accounts": [s.account_id for s in shares]}
    if mode is PrinterMode.DIRECT:
        if not await status.transition(
            session, po, PrintStatus.PENDING, actor=actor, reason=reason
        ):
            raise Conflict(f"job {po.id} changed meanwhile; try again")
        po.next_action_at = now
        po.hold_until = None
        events.record(
            session,
            subject_type="print_out",
            subject_id=po.id,
            actor=actor,
            reason=reason,
            data=data,
        )
        new_status = PrintStatus.PENDING
    else:
        hold_until = po.hold_until
        if mode is PrinterMode.HOLD and hold_until is None:
            hold_until = now + timedelta(minutes=printer.hold_expiry_mins)
        held_for = StatusReason.held_for(mode)
        same_reason = (
            PrintOut.status_reason.is_(None) if was is None else PrintOut.status_reason == was
        )
        done = await session.execute(
            update(PrintOut)
            .where(PrintOut.id == po.id, PrintOut.status == int(PrintStatus.HELD), same_reason)
            .values(status_reason=held_for.value, status_message=None)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"job {po.id} changed meanwhile; try again")
        po.status_reason, po.status_message = held_for.value, None
        po.hold_until = hold_until
        po.next_action_at = hold_until
        events.record(
            session,
            subject_type="print_out",
            subject_id=po.id,
            actor=actor,
            from_status=PrintStatus.HELD.label,
            to_status=PrintStatus.HELD.label,
            reason=reason,
            message=f"held for {held_for.value}",
            data=data,
        )
        new_status = PrintStatus.HELD
    await session.flush()
    for share in shares:
        session.add(shadow(po, share.account_id, share.weight, new_status))
    await session.flush()
