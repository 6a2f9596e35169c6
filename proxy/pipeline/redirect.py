"""Redirect: send a job that has not printed to another proxy printer.

What can be redirected, and how (``POST /jobs/{id}/redirect``, ``proxyprint job
redirect``):

- a ``pending`` print-out not yet dispatched (a dead or busy printer), and a
  ``held`` one (hold mode, or held for a reason a new printer can cure; not an
  invalid delegation or title, which an admin fixes first): the *same*
  print-out moves. The model allows it: neither state is final, nothing went
  to a target yet, and the print-out's printer decides its cost at the end, so
  it is charged by the new printer's rules. The new printer's mode applies: a
  direct printer dispatches it at once (``pending``), a hold printer holds it
  for its owner's tap there (``held``, that printer's expiry), and so does a
  direct printer with ``--require-tap`` (``awaiting-tap``, its tap window). One event,
  reason ``redirected``, names both printers.
- an ``aborted`` print-out that never printed (the target rejected it, or lost
  it) is final and stays so: a *new* print-out of the same print-in goes to the
  new printer (like a CUPS reprint: same payers and weights, ``reprint_of``
  names the aborted one, an event on both). Only while the document is still
  spooled: a job its printer rejected keeps it for ``[spool]
  keep_rejected_hours`` (``lifecycle.Change.keep_document``); any other ended
  job's spool file went with its end, and a 409 says to print it again.

Not redirected: a job being sent to its printer right now (its dispatch claim
is live: try again in a moment, or cancel it), a dispatched one (cancel it),
job tickets (an operator releases them to a printer: ``/tickets/{id}/release``)
and any job *to* a ticket printer (tickets are made when a job arrives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing import charging, events, status
from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import Printer, PrintIn, PrintOut
from billing.money import Currency

from ..exceptions import Conflict, NotFound
from .jobs import awaiting_tap, next_print_out
from .release import releasable

REDIRECTABLE = (PrintStatus.PENDING, PrintStatus.HELD)


@dataclass(frozen=True)
class Redirected:
    print_out: PrintOut  # the one that goes to the new printer (new for an aborted job)
    printer: str
    new_print_out: bool


async def find_printer(session: AsyncSession, name: str) -> Printer:
    printer = await session.scalar(select(Printer).where(Printer.name == name))
    if printer is None or not printer.enabled:
        raise NotFound(f"unknown printer {name!r}")
    return printer


async def redirect(
    session: AsyncSession,
    po: PrintOut,
    printer: Printer,
    *,
    actor: str,
    currency: Currency,
) -> Redirected:
    """Move ``po`` to ``printer`` (see the module's docstring); Conflict when it cannot."""
    if printer.printer_mode is PrinterMode.TICKET:
        raise Conflict(f"{printer.name} is a job ticket printer: jobs cannot be redirected to it")
    if po.mode == PrinterMode.TICKET.value:
        raise Conflict(
            f"job {po.id} is a job ticket: an operator releases it to a printer "
            "(POST /tickets/{id}/release)"
        )
    if printer.id == po.printer_id:
        raise Conflict(f"job {po.id} is on {printer.name} already")
    current = PrintStatus(po.status)
    if current is PrintStatus.ABORTED and po.charged_at is None:
        return await _redirect_aborted(session, po, printer, actor=actor, currency=currency)
    if current not in REDIRECTABLE or po.target_job_id is not None:
        raise Conflict(
            f"job {po.id} is {current.label}"
            + (" at its printer" if po.target_job_id is not None else "")
            + ": only pending, held and not-printed aborted jobs can be redirected"
        )
    if current is PrintStatus.HELD and not releasable(po):
        raise Conflict(f"job {po.id} is held because: {po.status_message}")
    old = await session.get(Printer, po.printer_id)
    now = utcnow()
    to_hold = printer.printer_mode is PrinterMode.HOLD
    hold_until = now + timedelta(minutes=printer.hold_expiry_mins) if to_hold else None
    tap_message = None
    if printer.printer_mode is PrinterMode.DIRECT and printer.require_tap:
        to_hold = True  # waits for its owner's tap there, like a job printed to it
        hold_until, tap_message = await awaiting_tap(session, printer)
    # Compare-and-set: not dispatched, not being sent right now, status unchanged.
    moved = await session.execute(
        update(PrintOut)
        .where(
            PrintOut.id == po.id,
            PrintOut.status == int(current),
            PrintOut.dispatched_at.is_(None),
            or_(PrintOut.claim_until.is_(None), PrintOut.claim_until < now),
        )
        .values(
            printer_id=printer.id,
            mode=printer.mode,
            target=printer.target,
            papercut=printer.papercut,
            cost_rules=charging.rules_json(printer),  # charged by the printer it goes to
            dispatch_uuid=None,  # a new target: nothing there to look for
            document_name=None,
            attempts=0,
            claimed_by=None,
            claim_until=None,
            status_message=None,
            hold_until=hold_until,
            next_action_at=hold_until if to_hold else now,
        )
        .execution_options(synchronize_session=False)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        raise Conflict(f"job {po.id} is being sent to its printer right now; try again")
    await session.refresh(po)
    message = f"from {old.name if old else '?'} ({po.target if old is None else old.target}) "
    message += f"to {printer.name} ({printer.target})"
    to = PrintStatus.HELD if to_hold else PrintStatus.PENDING
    if to is current:
        events.record(
            session,
            subject_type="print_out",
            subject_id=po.id,
            actor=actor,
            from_status=current.label,
            to_status=to.label,
            reason=StatusReason.REDIRECTED,
            message=message,
        )
    elif not await status.transition(
        session, po, to, actor=actor, reason=StatusReason.REDIRECTED, message=message
    ):
        raise Conflict(f"job {po.id} changed meanwhile; try again")
    # What the job waits for now (the event above says it was redirected).
    po.status_reason = (
        StatusReason.AWAITING_TAP
        if tap_message
        else StatusReason.HOLD
        if to_hold
        else StatusReason.REDIRECTED
    )
    po.status_message = tap_message
    return Redirected(po, printer.name, new_print_out=False)


async def _redirect_aborted(
    session: AsyncSession, po: PrintOut, printer: Printer, *, actor: str, currency: Currency
) -> Redirected:
    print_in = await session.get(PrintIn, po.print_in_id)
    assert print_in is not None
    if print_in.spool_path is None:
        raise Conflict(
            f"job {po.id} ended {po.status_reason or 'aborted'} and its document is no longer "
            "kept: print it again (or restart the CUPS job: lp -i N -H restart)"
        )
    if await session.scalar(select(PrintOut.id).where(PrintOut.reprint_of == po.id)) is not None:
        raise Conflict(f"job {po.id} was redirected or reprinted already")
    new = await next_print_out(session, printer, po, currency=currency)
    to = PrintStatus(new.status)
    if to is PrintStatus.PENDING:
        new.status_reason = StatusReason.REDIRECTED
    message = f"print-out {po.id} ({po.target}, {po.status_reason}) redirected to {printer.name}"
    for subject in (new.id, po.id):
        events.record(
            session,
            subject_type="print_out",
            subject_id=subject,
            actor=actor,
            to_status=to.label if subject == new.id else None,
            reason=StatusReason.REDIRECTED,
            message=message,
            data={"from": po.id, "to": new.id},
        )
    return Redirected(new, printer.name, new_print_out=True)
