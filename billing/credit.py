"""Credit limits: may a job's estimated cost go on restricted accounts?

An account with a ``credit_limit`` (10.00: the balance may go down to
-10.00) is restricted; ``None`` is unlimited. A job passes when, on every
restricted account it charges, balance - reserved - its share >= -limit,
where ``reserved`` sums the shares of jobs that passed the check and are not
charged yet (they print now and are charged when they end). Passing reserves
the job's shares on its transactions (``AccountTransaction.reserved``); the
charge (ledger) or the job's end (canceled/aborted) releases them.

The restricted accounts' rows are locked (``SELECT … FOR UPDATE``, in id
order: no deadlocks) for the rest of the transaction, so two jobs checked at
once see each other's reservation and cannot together pass the limit. On
SQLite, writers are serialised anyway (the engine begins IMMEDIATE).

PaperCut-managed print-outs are never checked: PaperCut charges them
unconditionally (SPEC §8). The caller decides that, and when a job is checked:
at intake for direct printers, at release for hold and ticket printers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import ledger, prorata
from .enums import PrintStatus
from .models import Account, AccountTransaction, PrintOut
from .money import Currency

_NOT_RESERVING = (int(PrintStatus.CANCELED), int(PrintStatus.ABORTED))


@dataclass(frozen=True, slots=True)
class Shortfall:
    """The first restricted account the job would take below its limit."""

    account_type: str
    account: str
    balance: Decimal
    reserved: Decimal
    cost: Decimal  # this job's share on the account
    limit: Decimal

    def message(self, currency: Currency) -> str:
        fmt = currency.format
        reserved = f", {fmt(self.reserved)} reserved for jobs in flight" if self.reserved else ""
        return (
            f"insufficient balance on {self.account_type} account {self.account!r}: "
            f"balance {fmt(self.balance)} {currency.code}{reserved}, "
            f"this job costs {fmt(self.cost)}, credit limit {fmt(self.limit)} "
            f"(the balance may not go below {fmt(-self.limit)})"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    shares: dict[int, Decimal]  # account id -> the job's estimated share
    shortfall: Shortfall | None

    @property
    def ok(self) -> bool:
        return self.shortfall is None


async def reserved_on(
    session: AsyncSession, account_ids: Sequence[int], *, exclude: int | None = None
) -> dict[int, Decimal]:
    """What jobs in flight (passed, not charged, not ended without printing) hold."""
    out = dict.fromkeys(account_ids, Decimal(0))
    if not account_ids:
        return out
    stmt = (
        select(AccountTransaction.account_id, func.sum(AccountTransaction.reserved))
        .join(PrintOut, PrintOut.id == AccountTransaction.print_out_id)
        .where(
            AccountTransaction.account_id.in_(list(account_ids)),
            AccountTransaction.reserved.is_not(None),
            PrintOut.charged_at.is_(None),
            PrintOut.status.not_in(_NOT_RESERVING),
        )
        .group_by(AccountTransaction.account_id)
    )
    if exclude is not None:
        stmt = stmt.where(PrintOut.id != exclude)
    for account_id, total in await session.execute(stmt):
        out[account_id] = Decimal(total or 0)
    return out


async def check(
    session: AsyncSession,
    weights: Sequence[tuple[int, int]],
    cost: Decimal,
    currency: Currency,
    *,
    exclude: int | None = None,
) -> Verdict:
    """Would ``cost``, split by ``weights`` ((account id, weight)), pass every limit?

    Locks the restricted accounts' rows (see the module docstring). ``exclude``:
    a print-out whose own reservation is not counted (a re-check).
    """
    ids = [a for a, _ in weights]
    shares: dict[int, Decimal] = {}
    if weights:
        split = prorata.split(currency.quantize(cost), [w for _, w in weights], currency)
        for account_id, share in zip(ids, split, strict=True):
            shares[account_id] = shares.get(account_id, Decimal(0)) + share
    limited = list(
        await session.scalars(
            select(Account.id)
            .where(Account.id.in_(ids), Account.credit_limit.is_not(None))
            .order_by(Account.id)
        )
    )
    if not limited or cost <= 0:
        return Verdict(shares, None)
    locked = list(
        await session.scalars(
            select(Account).where(Account.id.in_(limited)).order_by(Account.id).with_for_update()
        )
    )
    balances = await ledger.balances(session, limited)
    reserved = await reserved_on(session, limited, exclude=exclude)
    for account in locked:
        limit = account.credit_limit
        if limit is None:  # lifted meanwhile
            continue
        share = shares[account.id]
        if balances[account.id] - reserved[account.id] - share < -limit:
            return Verdict(
                shares,
                Shortfall(
                    account.type,
                    account.path,
                    balances[account.id],
                    reserved[account.id],
                    share,
                    limit,
                ),
            )
    return Verdict(shares, None)


def reserve(transactions: Sequence[AccountTransaction], verdict: Verdict) -> None:
    """Hold the job's shares against the accounts (after a passing check)."""
    for txn in transactions:
        txn.reserved = verdict.shares.get(txn.account_id)
