"""Deposits and debits by hand: one ledger entry per idempotency key.

``POST /accounts/{id}/adjustments`` and ``proxyprint account adjust`` post
here. The amount is signed (a deposit raises the balance, a debit lowers it)
and goes through the ledger as an ``adjustment`` with the reason as its
comment; the caller's key makes a retried request one entry (the ledger key
is ``adjustment:<account id>:<key>``). The same key with another amount is a
Conflict, never a second entry.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from . import events, ledger
from .enums import LedgerKind
from .exceptions import Conflict, InvalidInput, LedgerError
from .models import Account, LedgerEntry
from .money import Currency

MAX_KEY = 150
MAX_REASON = 500


async def adjust(
    session: AsyncSession,
    account: Account,
    amount: Decimal,
    *,
    reason: str,
    key: str,
    actor: str,
    currency: Currency,
) -> tuple[LedgerEntry, bool]:
    """Post the adjustment; returns the entry and whether it is new (False: a replay)."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidInput(f"reason: required, 1..{MAX_REASON} characters")
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise InvalidInput(f"idempotency_key: required, 1..{MAX_KEY} characters")
    if currency.quantize(amount) != amount:
        raise InvalidInput(f"amount: at most {currency.decimals} decimals")
    if amount == 0:
        raise InvalidInput("amount: must not be zero (positive: a deposit, negative: a debit)")
    ledger_key = f"adjustment:{account.id}:{key}"
    try:
        new = await ledger.post(
            session,
            ledger.Posting(
                account_id=account.id,
                amount=amount,
                kind=LedgerKind.ADJUSTMENT,
                key=ledger_key,
                actor=actor,
                comment=reason.strip(),
            ),
        )
    except LedgerError as exc:
        raise Conflict(f"idempotency_key {key!r} was already used for another adjustment") from exc
    entry = await ledger.entry_by_key(session, ledger_key)
    assert entry is not None
    if new:
        events.record(
            session,
            subject_type="account",
            subject_id=account.id,
            actor=actor,
            reason="deposit" if amount > 0 else "debit",
            message=reason.strip(),
            data={"amount": currency.format(amount), "entry": entry.id, "key": key},
        )
    return entry, new
