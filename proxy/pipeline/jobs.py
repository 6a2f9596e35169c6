"""Recording a received job: print-in, print-out and shadow transactions at once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing import charging, events
from billing.cost import ticket_cost
from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import (
    AccountTransaction,
    Delegation,
    Printer,
    PrintIn,
    PrintOut,
    Reader,
    User,
    reader_printers,
)
from billing.money import Currency, parse_amount

from ..config import DelegationConfig
from ..pages import PageCount
from ..spool import SpooledFile
from . import credit_gate
from .delegation import (
    DelegationError,
    DelegationForbidden,
    DelegationRequest,
    delegation_from_json,
    parse_delegation,
)
from .options import job_options
from .resolve import Share, resolve

REASON_DELEGATION_INVALID = StatusReason.DELEGATION_INVALID  # tests import this name
MAX_TITLE = 255


@dataclass(frozen=True)
class IntakeJob:
    """What the backend told us about a job (already validated for shape)."""

    printer: str
    job_id: int | None
    job_uuid: str | None
    user: str
    title: str
    copies: int
    options: str
    content_type: str | None
    host: str | None
    # The sender's time-at-creation (seconds), part of ``origin_key``.
    time_at_creation: int | None = None
    # Set by the intake for a job without a job-uuid (``intake.origin_key``).
    origin_key: str | None = None
    # The backend sent this job before and got no answer (its attempt may have
    # been recorded): never a reprint, see ``intake._precheck``.
    resent: bool = False


def clean_title(title: str) -> tuple[str, str | None]:
    """A storable title and, when the title was bad, why."""
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:
        shown = title.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return shown[:MAX_TITLE], "the job title is not valid UTF-8"
    if len(title) > MAX_TITLE:
        return title[:MAX_TITLE], f"the job title is longer than {MAX_TITLE} characters"
    return title, None


def shadow(
    print_out: PrintOut, account_id: int, weight: int, status: PrintStatus
) -> AccountTransaction:
    """The zero-amount share row a print-out starts with; charging fills the amount in."""
    return AccountTransaction(
        print_out_id=print_out.id,
        account_id=account_id,
        weight=weight,
        amount=Decimal(0),
        status=int(status),
        idempotency_key=f"po:{print_out.id}:acct:{account_id}",
    )


async def _registered_delegation(
    session: AsyncSession, delegate: str, printer: Printer, print_in: PrintIn
) -> DelegationRequest | None:
    """Consume the delegate's registered delegation for this printer, if one is valid now."""
    now = utcnow()
    found = await session.scalar(
        select(Delegation)
        .where(
            Delegation.delegate == delegate,
            Delegation.printer_id == printer.id,
            Delegation.consumed_at.is_(None),
            Delegation.valid_from <= now,
            Delegation.valid_until > now,
        )
        .order_by(Delegation.id)
        .limit(1)
    )
    if found is None:
        return None
    # Compare-and-set: two jobs at once cannot both consume it.
    done = await session.execute(
        update(Delegation)
        .where(Delegation.id == found.id, Delegation.consumed_at.is_(None))
        .values(consumed_at=now, consumed_by_print_in_id=print_in.id)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return delegation_from_json(found.options)


def price_ticket(
    printer: Printer, print_in: PrintIn, print_out: PrintOut, currency: Currency
) -> None:
    """A job ticket's cost (the printer's rules and extras), on the print-out."""
    extras = [
        parse_amount(x.get("amount", "0"), field="ticket extra") for x in printer.ticket_extras
    ]
    breakdown = ticket_cost(
        charging.rules_of(printer),
        charging.job_spec(print_in, print_out),
        currency,
        extras,
    )
    print_out.ticket_cost = breakdown.total
    print_out.cost_detail = charging.breakdown_json(breakdown, currency)


async def record_job(
    session: AsyncSession,
    printer: Printer,
    job: IntakeJob,
    *,
    options: dict[str, str],
    spooled: SpooledFile,
    pages: PageCount,
    currency: Currency,
    options_problem: str | None = None,
    delegation: DelegationConfig | None = None,
) -> PrintOut:
    """Create the print-in, its print-out and the shadow transactions.

    A job whose delegation or title is invalid, whose delegate is unknown
    (``user-unknown``) or whose delegation is not allowed
    (``delegation-forbidden``, see resolve) is kept ``held`` with a reason and
    a message; nothing is lost and nothing prints or is charged.
    """
    title, title_problem = clean_title(job.title)
    asked = job_options(options, job.copies)
    delegate_user = await session.scalar(select(User).where(User.name == job.user))
    print_in = PrintIn(
        job_uuid=job.job_uuid,
        origin_key=job.origin_key,
        cups_job_id=job.job_id,
        printer_id=printer.id,
        delegate=job.user,
        delegate_user_id=delegate_user.id if delegate_user else None,
        title=title,
        options=job.options[:10_000],
        content_type=job.content_type,
        origin_host=job.host,
        copies_requested=job.copies,
        spool_path=str(spooled.path),
        sha256=spooled.sha256,
        size=spooled.size,
        pages=pages.pages,
        pages_estimated=pages.estimated,
        count_method=pages.method,
        color_pages=pages.color_pages,
        document_copies=pages.document_copies,
        color=bool(pages.color) and not asked.mono,
        duplex=bool(pages.duplex) or asked.duplex,
        media=asked.media or options.get("media") or options.get("pagesize"),
    )
    session.add(print_in)
    await session.flush()

    problem: str | None = options_problem
    shares: list[Share] = []
    reason = StatusReason.DELEGATION_INVALID
    try:
        if problem is not None:
            raise DelegationError(problem)
        request = parse_delegation(options)
        if request is None:
            request = await _registered_delegation(session, job.user, printer, print_in)
        shares = await resolve(session, request, job.user, policy=delegation)
    except DelegationError as exc:
        problem = str(exc)
    except DelegationForbidden as exc:
        problem, reason = exc.message, exc.reason
    if problem is None and title_problem is not None:
        problem = title_problem
        reason = StatusReason.TITLE_INVALID
    verdict = None
    if problem is None:  # a direct job that would pass a credit limit waits for a deposit
        weights = [(s.account_id, s.weight) for s in shares]
        verdict = await credit_gate.at_intake(
            session,
            printer,
            print_in,
            weights,
            currency,
            pages=asked.impressions(pages.pages),
            copies=asked.copies * max(1, sum(w for _, w in weights)),
        )
        if verdict is not None and verdict.shortfall is not None:
            problem = verdict.shortfall.message(currency)
            reason = StatusReason.INSUFFICIENT_BALANCE

    mode = printer.printer_mode
    status = PrintStatus.PENDING
    if problem is not None or mode in (PrinterMode.HOLD, PrinterMode.TICKET):
        status = PrintStatus.HELD
    now = utcnow()
    hold_until = None
    if status == PrintStatus.HELD and problem is None and mode is PrinterMode.HOLD:
        hold_until = now + timedelta(minutes=printer.hold_expiry_mins)
    tap_message = None
    if problem is None and mode is PrinterMode.DIRECT and printer.require_tap:
        status = PrintStatus.HELD
        hold_until, tap_message = await awaiting_tap(session, printer)
    print_out = PrintOut(
        print_in_id=print_in.id,
        printer_id=printer.id,
        mode=mode.value,
        target=printer.target,
        papercut=printer.papercut,
        status=int(status),
        status_reason=(
            reason
            if problem
            else StatusReason.AWAITING_TAP
            if tap_message
            else (StatusReason.held_for(mode) if status == PrintStatus.HELD else None)
        ),
        status_message=problem or tap_message,
        delegate=job.user,
        delegate_user_id=print_in.delegate_user_id,
        title=title,
        pages=asked.impressions(pages.pages),  # per copy, as asked; dispatch sets what prints
        copies=asked.copies * max(1, sum(s.weight for s in shares)),  # the copies rule
        currency=currency.code,
        hold_until=hold_until,
        next_action_at=now if status == PrintStatus.PENDING else hold_until,
        cost_rules=charging.rules_json(printer),
    )
    session.add(print_out)
    await session.flush()
    if mode is PrinterMode.TICKET:
        print_out.ticket_number = f"T-{print_out.id:06d}"
        price_ticket(printer, print_in, print_out, currency)
    shadows = [shadow(print_out, s.account_id, s.weight, status) for s in shares]
    session.add_all(shadows)
    credit_gate.reserve(shadows, verdict)
    events.record(
        session,
        subject_type="print_out",
        subject_id=print_out.id,
        actor=job.user,
        to_status=status.label,
        reason=print_out.status_reason,
        message=problem,
        data={
            "print_in": print_in.id,
            "cups_job_id": job.job_id,
            "pages": pages.pages,
            "count_method": pages.method,
            "color_pages": pages.color_pages,
            "document_copies": pages.document_copies,
        },
    )
    if pages.note is not None:  # Ghostscript could not do better: say so
        events.record(
            session,
            subject_type="print_out",
            subject_id=print_out.id,
            actor="intake",
            reason="pages-estimated" if pages.estimated else "pages-not-analysed",
            message=pages.note[:1000],
            data={"pages": pages.pages, "count_method": pages.method},
        )
    return print_out


async def awaiting_tap(session: AsyncSession, printer: Printer) -> tuple[dt.datetime, str]:
    """A ``--require-tap`` printer's job: until when it waits for its owner's tap, and
    what she is told (the backend's ``INFO:``, the API's status message)."""
    readers = (
        await session.scalars(
            select(Reader.reader_id)
            .join(reader_printers, reader_printers.c.reader_id == Reader.id)
            .where(reader_printers.c.printer_id == printer.id)
            .order_by(Reader.reader_id)
            .limit(4)
        )
    ).all()
    where = " or ".join(readers) if readers else "a card reader of this printer"
    window = printer.tap_window_secs
    return utcnow() + timedelta(seconds=window), f"tap your card at {where} within {window} s"


async def latest_print_out(session: AsyncSession, print_in_id: int) -> PrintOut | None:
    """The newest print-out of a print-in (a reprint is newer than what it reprints)."""
    return await session.scalar(
        select(PrintOut)
        .where(PrintOut.print_in_id == print_in_id)
        .order_by(PrintOut.id.desc())
        .limit(1)
    )


async def record_reprint(
    session: AsyncSession,
    printer: Printer,
    print_in: PrintIn,
    previous: PrintOut,
    *,
    spooled: SpooledFile,
    currency: Currency,
) -> PrintOut:
    """A new print-out of ``print_in`` (CUPS restarted the ended job): same payers
    and weights, the printer's current target and mode, charged again when it ends."""
    print_in.spool_path = str(spooled.path)
    print_in.spool_removed_at = None
    print_out = await next_print_out(session, printer, previous, currency=currency)
    status = PrintStatus(print_out.status)
    events.record(
        session,
        subject_type="print_out",
        subject_id=print_out.id,
        actor=previous.delegate,
        to_status=status.label,
        reason=StatusReason.REPRINT,
        message=f"CUPS restarted job {print_in.cups_job_id}: reprint of print-out {previous.id}",
        data={"print_in": print_in.id, "reprint_of": previous.id},
    )
    events.record(
        session,
        subject_type="print_out",
        subject_id=previous.id,
        actor=previous.delegate,
        reason=StatusReason.REPRINTED,
        message=f"printed again as print-out {print_out.id}",
        data={"reprint": print_out.id},
    )
    return print_out


async def next_print_out(
    session: AsyncSession, printer: Printer, previous: PrintOut, *, currency: Currency
) -> PrintOut:
    """A new print-out of ``previous``'s print-in on ``printer`` (its target, mode and
    hold expiry), with the same payers and weights, ``reprint_of`` naming ``previous``.
    A reprint and the redirect of an ended job make one; the caller writes the events."""
    mode = printer.printer_mode
    held = mode in (PrinterMode.HOLD, PrinterMode.TICKET)
    now = utcnow()
    hold_until = (
        now + timedelta(minutes=printer.hold_expiry_mins) if mode is PrinterMode.HOLD else None
    )
    status = PrintStatus.HELD if held else PrintStatus.PENDING
    print_out = PrintOut(
        print_in_id=previous.print_in_id,
        printer_id=printer.id,
        mode=mode.value,
        target=printer.target,
        papercut=printer.papercut,
        status=int(status),
        status_reason=StatusReason(mode.value) if held else None,
        delegate=previous.delegate,
        delegate_user_id=previous.delegate_user_id,
        title=previous.title,
        pages=previous.pages,
        copies=previous.copies,
        currency=currency.code,
        hold_until=hold_until,
        next_action_at=hold_until if held else now,
        reprint_of=previous.id,
        cost_rules=charging.rules_json(printer),  # the prices of the printer it goes to
        ticket_cost=previous.ticket_cost if mode is PrinterMode.TICKET else None,
        cost_detail=previous.cost_detail if mode is PrinterMode.TICKET else None,
    )
    if mode is PrinterMode.DIRECT and printer.require_tap:
        print_out.status = int(status := PrintStatus.HELD)
        print_out.status_reason = StatusReason.AWAITING_TAP
        print_out.hold_until, print_out.status_message = await awaiting_tap(session, printer)
        print_out.next_action_at = print_out.hold_until
    session.add(print_out)
    await session.flush()
    if mode is PrinterMode.TICKET:
        print_out.ticket_number = f"T-{print_out.id:06d}"
    shares = (
        await session.execute(
            select(AccountTransaction.account_id, AccountTransaction.weight)
            .where(AccountTransaction.print_out_id == previous.id)
            .order_by(AccountTransaction.id)
        )
    ).all()
    for account_id, weight in shares:
        session.add(shadow(print_out, account_id, weight, status))
    return print_out
