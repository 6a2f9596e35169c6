"""Seed data for tests, built with the domain functions (never raw SQL).

Each helper takes a session and flushes; the caller owns the transaction
(``async with sessionmaker() as s, s.begin(): ...``), as a handler would.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts, charging, ledger, status
from billing.enums import AccountType, LedgerKind, PrinterMode, PrintStatus
from billing.models import Account, AccountTransaction, Printer, PrintIn, PrintOut
from billing.money import Currency
from proxy.tokens import create_api_token

EUR = Currency("EUR", 2)
# A fixed instant: tests that order or filter by time set created_at from it.
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


async def user(
    session: AsyncSession, name: str, *, groups: Sequence[str] = (), delegate: bool = False
) -> Account:
    """A user; returns its personal account. ``delegate``: she has the delegate right."""
    created = await accounts.create_user(session, name, groups=groups)
    created.can_delegate = delegate
    account = await accounts.find_account(session, AccountType.USER, name)
    assert account is not None
    return account


async def group(session: AsyncSession, name: str) -> Account:
    """A group; returns its group account."""
    await accounts.create_group(session, name)
    account = await accounts.find_account(session, AccountType.GROUP, name)
    assert account is not None
    return account


async def shared(session: AsyncSession, path: str) -> Account:
    return await accounts.create_shared_account(session, path)


async def printer(
    session: AsyncSession,
    name: str = "pp-direct",
    *,
    mode: PrinterMode = PrinterMode.DIRECT,
    target: str = "ipp://127.0.0.1:8631/ipp/print",
) -> Printer:
    found = Printer(name=name, mode=mode.value, target=target, cost_mono=Decimal("0.10"))
    session.add(found)
    await session.flush()
    return found


async def print_out(
    session: AsyncSession,
    printer: Printer,
    delegate: str,
    *,
    charged_to: Sequence[tuple[Account, int]] = (),
    title: str = "report.pdf",
    pages: int = 3,
    copies: int | None = None,
    created_at: dt.datetime | None = None,
) -> PrintOut:
    """A print-in and its pending print-out with one shadow transaction per delegator.

    ``charged_to`` is ``(account, weight)``; copies default to the total weight.
    """
    delegate_user = await accounts.user_by_name(session, delegate)
    copies = copies if copies is not None else max(1, sum(w for _, w in charged_to))
    pin = PrintIn(
        job_uuid=f"urn:uuid:{uuid.uuid4()}",
        printer_id=printer.id,
        delegate=delegate,
        delegate_user_id=delegate_user.id if delegate_user else None,
        title=title,
        sha256="0" * 64,
        size=1024,
        pages=pages,
        copies_requested=copies,
    )
    session.add(pin)
    await session.flush()
    po = PrintOut(
        print_in_id=pin.id,
        printer_id=printer.id,
        mode=printer.mode,
        target=printer.target,
        delegate=delegate,
        delegate_user_id=pin.delegate_user_id,
        title=title,
        pages=pages,
        copies=copies,
        currency=EUR.code,
    )
    if created_at is not None:
        po.created_at = created_at
    session.add(po)
    await session.flush()
    for account, weight in charged_to:
        session.add(
            AccountTransaction(
                print_out_id=po.id,
                account_id=account.id,
                weight=weight,
                amount=Decimal(0),
                idempotency_key=f"po:{po.id}:acct:{account.id}",
            )
        )
    await session.flush()
    return po


async def finish(
    session: AsyncSession, po: PrintOut, to: PrintStatus, *, reason: str | None = None
) -> None:
    """Move a print-out to ``to`` through the state machine (writes the event)."""
    assert await status.transition(session, po, to, actor="tracker", reason=reason)


async def charge(session: AsyncSession, po: PrintOut, cost: str) -> None:
    """Complete the print-out and charge ``cost`` pro rata, as the tracker would."""
    if po.status != PrintStatus.COMPLETED:
        await finish(session, po, PrintStatus.COMPLETED)
    assert await charging.charge(session, po, Decimal(cost), EUR, actor="tracker")


async def topup(session: AsyncSession, account: Account, amount: str, key: str) -> None:
    posting = ledger.Posting(account.id, Decimal(amount), LedgerKind.TOPUP, key, actor="test")
    assert await ledger.post(session, posting)


async def token(session: AsyncSession, role: str, user: str | None = None) -> str:
    return await create_api_token(session, role, user=user, label=f"test {role}")
