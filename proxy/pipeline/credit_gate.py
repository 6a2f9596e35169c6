"""Where jobs meet credit limits (billing.credit): at intake and at release.

A direct job is checked when it arrives (held ``insufficient-balance`` when it
would take a restricted account below its limit); a hold or ticket job when
it is released (refused with the same message; it stays held). PaperCut-managed
jobs are never checked: PaperCut charges them unconditionally. Passing reserves
the job's estimated shares until it is charged or ends without printing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from billing import charging, credit
from billing.enums import PrinterMode, StatusReason
from billing.models import AccountTransaction, Printer, PrintIn, PrintOut
from billing.money import Currency

from ..exceptions import Conflict


class InsufficientBalance(Conflict):
    """A release the credit limit refuses; the message states balance, cost and limit."""

    code = StatusReason.INSUFFICIENT_BALANCE.value


async def at_intake(
    session: AsyncSession,
    printer: Printer,
    print_in: PrintIn,
    weights: Sequence[tuple[int, int]],
    currency: Currency,
    *,
    pages: int,
    copies: int,
) -> credit.Verdict | None:
    """The verdict for a direct job about to be recorded (``pages`` per copy and
    ``copies`` as its print-out will have them); None when not checked."""
    if printer.papercut or printer.printer_mode is not PrinterMode.DIRECT or not weights:
        return None
    planned = PrintOut(pages=pages, copies=copies)  # transient: never added to the session
    estimate = charging.printer_cost(printer, print_in, planned, currency).total
    return await credit.check(session, weights, estimate, currency)


def reserve(transactions: Sequence[AccountTransaction], verdict: credit.Verdict | None) -> None:
    if verdict is not None and verdict.ok:
        credit.reserve(transactions, verdict)


async def at_release(session: AsyncSession, po: PrintOut, currency: Currency) -> None:
    """Check (and reserve) a held job about to be released; InsufficientBalance if not."""
    if po.papercut:
        return
    txns = list(await charging.transactions_of(session, po.id))
    if not txns:
        return
    if po.mode == PrinterMode.TICKET.value and po.ticket_cost is not None:
        estimate = po.ticket_cost
    else:
        printer = await session.get(Printer, po.printer_id)
        print_in = await session.get(PrintIn, po.print_in_id)
        if printer is None or print_in is None:
            raise Conflict(f"print-out {po.id} has lost its printer or print-in")
        estimate = charging.printer_cost(printer, print_in, po, currency).total
    verdict = await credit.check(
        session, [(t.account_id, t.weight) for t in txns], estimate, currency, exclude=po.id
    )
    if verdict.shortfall is not None:
        why = verdict.shortfall.message(currency)
        raise InsufficientBalance(f"job {po.id} not released: {why}")
    credit.reserve(txns, verdict)
