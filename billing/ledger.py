"""The append-only ledger: post with an idempotency key, reverse by compensation.

An account's balance is the sum of its entries. That sum is also kept as a
running total (``account_balances``), added to in the same transaction as
each new entry and only when the entry is new, so a balance is one row to
read however long the ledger; ``verify`` recomputes the sums and names any
account whose total disagrees. Idempotency rests on unique constraints
(``INSERT … ON CONFLICT DO NOTHING``), not on read-then-write, so concurrent
posts of one key leave one row (and one addition to the total).

Lock order: the additions to the totals are gathered and written just before
the transaction commits, in account id order, so two transactions that charge
overlapping accounts (two instances ending different jobs, each a batch of
print-outs) wait for each other's total rows in the same order and never
deadlock, and each row stays locked only for the commit. Inside a savepoint
an addition is written at once, so that rolling the savepoint back undoes it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Insert,
    Select,
    delete,
    event,
    func,
    insert,
    literal_column,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from .db import Money, utcnow
from .enums import LedgerKind
from .exceptions import InvalidAmount, LedgerError
from .models import AccountBalance, LedgerEntry

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Posting:
    """What to post; ``amount`` is signed (a charge lowers the balance)."""

    account_id: int
    amount: Decimal
    kind: LedgerKind
    key: str
    pages: int = 0
    print_out_id: int | None = None
    transaction_id: int | None = None
    actor: str = "system"
    comment: str | None = None


def _insert(session: AsyncSession | Session) -> type[Insert]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert  # type: ignore[return-value]
    if dialect == "sqlite":
        return sqlite.insert  # type: ignore[return-value]
    raise LedgerError(f"unsupported database dialect {dialect}")


_PENDING = "ledger.pending_totals"


def _upsert_totals(
    session: AsyncSession | Session, account_id: int, amount: Decimal, pages: int
) -> Insert:
    stmt = _insert(session)(AccountBalance).values(
        account_id=account_id, balance=amount, pages=pages
    )
    totals = AccountBalance.__table__.c
    return stmt.on_conflict_do_update(  # type: ignore[attr-defined,no-any-return]
        index_elements=[totals.account_id],
        set_={
            "balance": totals.balance + stmt.excluded.balance,  # type: ignore[attr-defined]
            "pages": totals.pages + stmt.excluded.pages,  # type: ignore[attr-defined]
        },
    )


def _pending(session: AsyncSession | Session) -> dict[int, tuple[Decimal, int]]:
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    found: dict[int, tuple[Decimal, int]] = sync.info.setdefault(_PENDING, {})
    return found


async def _add_to_totals(
    session: AsyncSession, account_id: int, amount: Decimal, pages: int
) -> None:
    """Add a new entry's amount and pages to its account's running totals
    (at commit, see the module's lock order)."""
    if session.in_nested_transaction():
        await session.execute(_upsert_totals(session, account_id, amount, pages))
        return
    pending = _pending(session)
    was_amount, was_pages = pending.get(account_id, (Decimal(0), 0))
    pending[account_id] = (was_amount + amount, was_pages + pages)


@event.listens_for(Session, "before_commit")
def _write_totals(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    for account_id in sorted(pending):
        amount, pages = pending[account_id]
        session.execute(_upsert_totals(session, account_id, amount, pages))


@event.listens_for(Session, "after_transaction_end")
def _forget_totals(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back or closed: nothing to write
        session.info.pop(_PENDING, None)


def _validate(posting: Posting) -> None:
    amount = posting.amount
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidAmount(f"ledger amount must be a finite Decimal, got {amount!r}")
    if posting.kind is LedgerKind.CHARGE and amount > 0:
        raise InvalidAmount("a charge must not raise a balance (amount must be <= 0)")
    if not posting.key or len(posting.key) > MAX_KEY_LENGTH:
        raise LedgerError(f"idempotency key must be 1..{MAX_KEY_LENGTH} characters")


async def post(session: AsyncSession, posting: Posting) -> bool:
    """Post one entry; True if it was new, False if its key was already posted.

    A key already posted with a different account or amount is a bug upstream
    and raises LedgerError rather than being silently ignored.
    """
    _validate(posting)
    insert = _insert(session)
    stmt = (
        insert(LedgerEntry)
        .values(
            account_id=posting.account_id,
            amount=posting.amount,
            kind=posting.kind.value,
            pages=posting.pages,
            idempotency_key=posting.key,
            print_out_id=posting.print_out_id,
            transaction_id=posting.transaction_id,
            actor=posting.actor,
            comment=posting.comment,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()  # type: ignore[attr-defined]
    )
    result = await session.execute(stmt)
    if result.rowcount == 1:  # type: ignore[attr-defined]
        await _add_to_totals(session, posting.account_id, posting.amount, posting.pages)
        return True
    existing = await entry_by_key(session, posting.key)
    if existing is None:  # lost to a conflict on another unique column
        raise LedgerError(f"posting {posting.key!r} conflicts with an existing entry")
    if existing.account_id != posting.account_id or existing.amount != posting.amount:
        raise LedgerError(
            f"idempotency key {posting.key!r} was already used for account "
            f"{existing.account_id} amount {existing.amount}"
        )
    return False


async def post_many(session: AsyncSession, postings: Iterable[Posting]) -> int:
    """Post several entries (in account id order: the lock order); returns how
    many were new."""
    count = 0
    for posting in sorted(postings, key=lambda p: p.account_id):
        count += await post(session, posting)
    return count


async def entry_by_key(session: AsyncSession, key: str) -> LedgerEntry | None:
    return await session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))


async def reverse_entry(
    session: AsyncSession, entry: LedgerEntry, *, actor: str, comment: str | None = None
) -> bool:
    """Compensate ``entry`` with an opposite one; False if already reversed."""
    if entry.kind == LedgerKind.REVERSAL.value:
        raise LedgerError(f"entry {entry.id} is itself a reversal")
    insert = _insert(session)
    stmt = (
        insert(LedgerEntry)
        .values(
            account_id=entry.account_id,
            amount=-entry.amount,
            kind=LedgerKind.REVERSAL.value,
            pages=-entry.pages,
            idempotency_key=f"reverse:{entry.id}",
            print_out_id=entry.print_out_id,
            transaction_id=entry.transaction_id,
            reverses_id=entry.id,
            actor=actor,
            comment=comment,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()  # type: ignore[attr-defined]
    )
    result = await session.execute(stmt)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await _add_to_totals(session, entry.account_id, -entry.amount, -entry.pages)
    return True


async def reverse_print_out(
    session: AsyncSession,
    print_out_id: int,
    *,
    actor: str,
    comment: str | None = None,
    transaction_ids: Collection[int] | None = None,
) -> int:
    """Reverse every not-yet-reversed entry of a print-out; returns how many.

    ``transaction_ids``: only the entries of these transactions (a partial
    reversal: some accounts' shares); None: all of them.
    """
    reversed_ids = select(LedgerEntry.reverses_id).where(LedgerEntry.reverses_id.is_not(None))
    stmt = select(LedgerEntry).where(
        LedgerEntry.print_out_id == print_out_id,
        LedgerEntry.kind != LedgerKind.REVERSAL.value,
        LedgerEntry.id.not_in(reversed_ids),
    )
    if transaction_ids is not None:
        stmt = stmt.where(LedgerEntry.transaction_id.in_(list(transaction_ids)))
    entries: Sequence[LedgerEntry] = (
        await session.scalars(stmt.order_by(LedgerEntry.account_id, LedgerEntry.id))
    ).all()
    count = 0
    for entry in entries:
        count += await reverse_entry(session, entry, actor=actor, comment=comment)
    return count


async def reversed_by_transaction(
    session: AsyncSession, print_out_ids: Sequence[int]
) -> dict[int, Decimal]:
    """Per transaction of these print-outs: what its reversals gave back (positive)."""
    found: dict[int, Decimal] = {}
    if not print_out_ids:
        return found
    rows = await session.execute(
        select(LedgerEntry.transaction_id, func.sum(LedgerEntry.amount))
        .where(
            LedgerEntry.print_out_id.in_(list(print_out_ids)),
            LedgerEntry.kind == LedgerKind.REVERSAL.value,
            LedgerEntry.transaction_id.is_not(None),
        )
        .group_by(LedgerEntry.transaction_id)
    )
    for transaction_id, total in rows:
        if transaction_id is not None:  # filtered on it
            found[transaction_id] = Decimal(total)
    return found


async def reversals_of(session: AsyncSession, entry_ids: Sequence[int]) -> dict[int, Decimal]:
    """Per entry among ``entry_ids`` that was reversed: its reversal's amount."""
    if not entry_ids:
        return {}
    rows = await session.execute(
        select(LedgerEntry.reverses_id, LedgerEntry.amount).where(
            LedgerEntry.reverses_id.in_(list(entry_ids))
        )
    )
    return {reversed_id: amount for reversed_id, amount in rows if reversed_id is not None}


async def balance(session: AsyncSession, account_id: int) -> Decimal:
    return (await totals(session, account_id))[0]


async def balances(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, Decimal]:
    """Balances of several accounts in one query (absent = 0)."""
    result: dict[int, Decimal] = dict.fromkeys(account_ids, Decimal(0))
    if not account_ids:
        return result
    rows = await session.execute(
        select(AccountBalance.account_id, AccountBalance.balance).where(
            AccountBalance.account_id.in_(list(account_ids))
        )
    )
    for account_id, total in rows:
        result[account_id] = Decimal(total)
    for account_id, (amount, _) in _pending(session).items():
        if account_id in result:  # posted in this transaction, not yet written
            result[account_id] += amount
    return result


async def totals(session: AsyncSession, account_id: int) -> tuple[Decimal, int]:
    """The account's balance and page counter (pages charged less pages reversed)."""
    row = (
        await session.execute(
            select(AccountBalance.balance, AccountBalance.pages).where(
                AccountBalance.account_id == account_id
            )
        )
    ).one_or_none()
    amount, pages = (Decimal(0), 0) if row is None else (Decimal(row.balance), int(row.pages))
    more_amount, more_pages = _pending(session).get(account_id, (Decimal(0), 0))
    return amount + more_amount, pages + more_pages


async def page_count(session: AsyncSession, account_id: int) -> int:
    return (await totals(session, account_id))[1]


@dataclass(frozen=True)
class Mismatch:
    """An account whose running totals disagree with the sums of its entries."""

    account_id: int
    stored: tuple[Decimal, int]
    summed: tuple[Decimal, int]


def _sums() -> Select[int, Decimal, int]:
    return select(
        LedgerEntry.account_id, func.sum(LedgerEntry.amount), func.sum(LedgerEntry.pages)
    ).group_by(LedgerEntry.account_id)


async def verify(session: AsyncSession) -> list[Mismatch]:
    """Every account whose running totals are not the sums of its entries.

    One statement (the totals and the entries side by side, summed per
    account): one snapshot of both, so a charge committed meanwhile by a
    running service is seen whole or not at all, never as a false mismatch.
    """
    zero = literal_column("0", BigInteger())
    both = union_all(
        select(
            AccountBalance.account_id.label("account_id"),
            AccountBalance.balance.label("stored"),
            AccountBalance.pages.label("stored_pages"),
            zero.label("summed"),
            zero.label("summed_pages"),
        ),
        select(LedgerEntry.account_id, zero, zero, LedgerEntry.amount, LedgerEntry.pages),
    ).subquery()
    stored, stored_pages = func.sum(both.c.stored), func.sum(both.c.stored_pages)
    summed, summed_pages = func.sum(both.c.summed), func.sum(both.c.summed_pages)
    rows = await session.execute(
        select(
            both.c.account_id,
            type_coerce(stored, Money),
            stored_pages,
            type_coerce(summed, Money),
            summed_pages,
        )
        .group_by(both.c.account_id)
        .having(or_(stored != summed, stored_pages != summed_pages))
        .order_by(both.c.account_id)
    )
    return [
        Mismatch(account_id, (Decimal(a), int(p)), (Decimal(b), int(q)))
        for account_id, a, p, b, q in rows
    ]


async def rebuild_totals(conn: AsyncConnection) -> None:
    """Recompute every running total from the entries (after a bulk load that
    wrote ``ledger_entries`` directly, as the benchmarks' history does)."""
    await conn.execute(delete(AccountBalance))
    await conn.execute(
        insert(AccountBalance).from_select(["account_id", "balance", "pages"], _sums())
    )
