"""Charging a print-out: cost → pro-rata shares → ledger; and reversing it.

Both are idempotent: ``charged_at``/``reversed_at`` are set with a
compare-and-set, and every ledger posting carries a key derived from the
transaction, so a retry after a crash never charges twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from . import events, ledger, prorata
from .cost import CostBreakdown, CostRules, JobSpec, MediaPrice, compute
from .db import utcnow
from .enums import LedgerKind, PrinterMode, PrintStatus
from .exceptions import Conflict, InvalidInput
from .models import AccountTransaction, Printer, PrintIn, PrintOut
from .money import Currency, parse_amount


def rules_of(printer: Printer) -> CostRules:
    return CostRules(
        mono=printer.cost_mono,
        color=printer.cost_color,
        duplex_discount=printer.duplex_discount,
        media=dict(printer.media_costs or {}),
    )


def rules_json(printer: Printer) -> dict[str, Any]:
    """The printer's prices now, as a print-out keeps them (decimal strings)."""
    return {
        "mono": str(printer.cost_mono),
        "color": str(printer.cost_color),
        "duplex_discount": str(printer.duplex_discount),
        "media": dict(printer.media_costs or {}),
    }


def rules_for(printer: Printer, print_out: PrintOut) -> CostRules:
    """The prices a print-out is charged at: those of its arrival, else the printer's."""
    kept = print_out.cost_rules
    if not kept:
        return rules_of(printer)
    return CostRules(
        mono=parse_amount(kept["mono"], field="cost_rules.mono"),
        color=parse_amount(kept["color"], field="cost_rules.color"),
        duplex_discount=parse_amount(kept["duplex_discount"], field="cost_rules.duplex_discount"),
        media=kept.get("media") or {},
    )


def color_priced(printer: Printer) -> bool:
    """Does a colour page cost other than a mono one on this printer (any media)?

    Only then is colour measured per page at the intake (so only then can a
    PDF, PostScript or JPEG page be charged as colour). A colour price of 0
    beside a mono price above 0 is a colour price never set (``printer add``
    defaults it to 0), not free colour: such a price does not count.
    """
    try:
        rules = rules_of(printer)
    except InvalidInput:  # the cost rules will say so when the job is charged
        return True
    prices = [MediaPrice(rules.mono, rules.color), *rules.media.values()]
    return any(p.mono != p.color and not (p.color == 0 < p.mono) for p in prices)


def job_spec(print_in: PrintIn, print_out: PrintOut, impressions: int | None = None) -> JobSpec:
    """What a print-out printed, for the cost rules.

    Copies: the print-out's copies times the copies the document sets itself
    (``print_in.document_copies``: PostScript ``NumCopies``/``#copies``, PJL
    ``COPIES``: the printer prints each copy the document asks for, so each is
    charged). Colour pages: as measured at the intake (None: not measured,
    every page of a colour job is colour), at most the pages printed.
    ``impressions``: the printer's own count of all copies' impressions,
    charged instead of ours when it is trusted (``[charging] trust``); the
    colour ones among them are our colour pages times the copies, at most all.
    """
    copies = print_out.copies * max(1, print_in.document_copies or 1)
    color_pages = print_in.color_pages
    if impressions is not None:
        return JobSpec(
            pages=impressions,
            copies=1,
            color=print_in.color,
            duplex=print_in.duplex,
            media=print_in.media,
            color_pages=None if color_pages is None else min(impressions, color_pages * copies),
        )
    if color_pages is not None:
        color_pages = min(color_pages, print_out.pages)
    return JobSpec(
        pages=print_out.pages,
        copies=copies,
        color=print_in.color,
        duplex=print_in.duplex,
        media=print_in.media,
        color_pages=color_pages,
    )


def printer_cost(
    printer: Printer,
    print_in: PrintIn,
    print_out: PrintOut,
    currency: Currency,
    impressions: int | None = None,
) -> CostBreakdown:
    """The cost of a print-out under the cost rules it arrived under (``rules_for``)."""
    return compute(
        rules_for(printer, print_out), job_spec(print_in, print_out, impressions), currency
    )


CostDetail = list[dict[str, object]]


async def cost_for(
    session: AsyncSession,
    print_out: PrintOut,
    currency: Currency,
    *,
    logged: Decimal | None = None,
    impressions: int | None = None,
) -> tuple[Decimal, CostDetail]:
    """The one cost of a completed print-out, with the detail stored beside it.

    A job ticket costs its ticket cost (fixed when it arrived); otherwise the
    cost the target logged (``logged``: PaperCut's ``usage_cost``), else the
    proxy printer's cost rules over our count, or over the printer's
    ``impressions`` when the caller trusts them.
    """
    if print_out.mode == PrinterMode.TICKET.value and print_out.ticket_cost is not None:
        return print_out.ticket_cost, _one_line("job ticket cost", print_out.ticket_cost, currency)
    if logged is not None:
        return logged, _one_line("PaperCut usage cost", logged, currency)
    printer = await session.get(Printer, print_out.printer_id)
    print_in = await session.get(PrintIn, print_out.print_in_id)
    if printer is None or print_in is None:
        raise Conflict(f"print-out {print_out.id} has lost its printer or print-in")
    breakdown = printer_cost(printer, print_in, print_out, currency, impressions)
    return breakdown.total, breakdown_json(breakdown, currency)


def _one_line(description: str, amount: Decimal, currency: Currency) -> CostDetail:
    return [{"description": description, "amount": currency.format(amount)}]


def breakdown_json(breakdown: CostBreakdown, currency: Currency) -> list[dict[str, object]]:
    return [
        {
            "description": line.description,
            "quantity": line.quantity,
            "unit_price": str(line.unit_price),
            # Lines are exact (a rounding line keeps their sum equal to the total).
            "amount": str(line.amount),
        }
        for line in breakdown.lines
    ]


async def transactions_of(session: AsyncSession, print_out_id: int) -> Sequence[AccountTransaction]:
    return (
        await session.scalars(
            select(AccountTransaction)
            .where(AccountTransaction.print_out_id == print_out_id)
            .order_by(AccountTransaction.id)
        )
    ).all()


def transaction_key(txn: AccountTransaction) -> str:
    return f"charge:po:{txn.print_out_id}:txn:{txn.id}"


async def charge(
    session: AsyncSession,
    print_out: PrintOut,
    cost: Decimal,
    currency: Currency,
    *,
    actor: str,
    detail: CostDetail | None = None,
) -> bool:
    """Split ``cost`` pro rata over the print-out's transactions and post them.

    Only a completed print-out is charged; False if it was charged already.
    """
    if print_out.status != PrintStatus.COMPLETED:
        raise Conflict(f"print-out {print_out.id} is not completed; nothing to charge")
    cost = currency.quantize(cost)
    now = utcnow()
    claimed = await session.execute(
        update(PrintOut)
        .where(PrintOut.id == print_out.id, PrintOut.charged_at.is_(None))
        .values(charged_at=now, cost=cost, cost_detail=detail)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for key, value in (("charged_at", now), ("cost", cost), ("cost_detail", detail)):
        set_committed_value(print_out, key, value)  # written by the UPDATE above
    txns = await transactions_of(session, print_out.id)
    shares = prorata.split(cost, [t.weight for t in txns], currency) if txns else []
    postings = []
    for txn, share in zip(txns, shares, strict=True):
        txn.amount = share
        postings.append(
            ledger.Posting(
                account_id=txn.account_id,
                amount=-share,
                kind=LedgerKind.CHARGE,
                key=transaction_key(txn),
                pages=print_out.pages * txn.weight,
                print_out_id=print_out.id,
                transaction_id=txn.id,
                actor=actor,
                comment=f"print-out {print_out.id}: {print_out.title}"[:500],
            )
        )
    await ledger.post_many(session, postings)
    events.record(
        session,
        subject_type="print_out",
        subject_id=print_out.id,
        actor=actor,
        reason="charged",
        message=f"{currency.format(cost)} {currency.code} over {len(txns)} transaction(s)",
    )
    return True


MAX_REASON = 500


async def reverse(
    session: AsyncSession,
    print_out: PrintOut,
    *,
    actor: str,
    reason: str | None = None,
    transaction_ids: Sequence[int] | None = None,
) -> int:
    """Reverse a charged print-out's counters and costs by compensating entries.

    ``transaction_ids``: a partial reversal, only these transactions' shares
    (each one compensating entry); None: every transaction. ``reason`` goes
    into the entries' comment and the event. Returns how many ledger entries
    were reversed: 0 when they were reversed already (twice is a no-op). A
    print-out that was never charged → Conflict; a transaction that is not
    the print-out's → InvalidInput.
    """
    if print_out.charged_at is None:
        raise Conflict(f"print-out {print_out.id} was never charged; nothing to reverse")
    if reason is not None:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InvalidInput(f"reason: 1..{MAX_REASON} characters")
    wanted: list[int] | None = None
    if transaction_ids is not None:
        own = {t.id for t in await transactions_of(session, print_out.id)}
        wanted = list(dict.fromkeys(transaction_ids))
        foreign = [t for t in wanted if t not in own]
        if not wanted or foreign:
            raise InvalidInput(
                f"transactions: {foreign or 'none'} not among print-out {print_out.id}'s"
                f" transactions {sorted(own)}"
            )
    comment = f"reversal of print-out {print_out.id}" + (f": {reason}" if reason else "")
    count = await ledger.reverse_print_out(
        session, print_out.id, actor=actor, comment=comment[:500], transaction_ids=wanted
    )
    if count:
        now = utcnow()
        await session.execute(
            update(PrintOut)
            .where(PrintOut.id == print_out.id)
            .values(reversed_at=now)
            .execution_options(synchronize_session=False)
        )
        print_out.reversed_at = now
        events.record(
            session,
            subject_type="print_out",
            subject_id=print_out.id,
            actor=actor,
            reason="reversed",
            message=f"{count} ledger entries reversed" + (f": {reason}" if reason else ""),
            data={"transactions": wanted, "reason": reason},
        )
    return count
