"""Ledger and accounts on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, ledger
from billing.enums import AccountType, LedgerKind
from billing.exceptions import Conflict, InvalidAmount, InvalidInput, LedgerError, NotFound
from billing.models import Account, LedgerEntry, User


async def _account(session: AsyncSession, name: str) -> Account:
    await accounts.create_user(session, name)
    account = await accounts.find_account(session, AccountType.USER, name)
    assert account is not None
    return account


def _charge(account: Account, amount: str, key: str, pages: int = 0) -> ledger.Posting:
    return ledger.Posting(account.id, -Decimal(amount), LedgerKind.CHARGE, key, pages=pages)


async def test_post_is_idempotent_and_balance_is_derived(session: AsyncSession) -> None:
    alice = await _account(session, "alice")
    assert await ledger.post(session, _charge(alice, "0.30", "po:1:alice", pages=3))
    assert not await ledger.post(session, _charge(alice, "0.30", "po:1:alice", pages=3))
    assert await ledger.post(session, _charge(alice, "1.25", "po:2:alice", pages=5))
    await session.commit()
    assert await ledger.balance(session, alice.id) == Decimal("-1.55")
    assert await ledger.page_count(session, alice.id) == 8
    assert await ledger.totals(session, alice.id) == (await ledger.balance(session, alice.id), 8)
    count = await session.scalar(select(func.count()).select_from(LedgerEntry))
    assert count == 2


async def test_same_key_different_amount_is_an_error(session: AsyncSession) -> None:
    alice = await _account(session, "alice")
    await ledger.post(session, _charge(alice, "0.30", "k"))
    with pytest.raises(LedgerError, match="already used"):
        await ledger.post(session, _charge(alice, "0.31", "k"))


async def test_reverse_twice_changes_nothing(session: AsyncSession) -> None:
    alice = await _account(session, "alice")
    bob = await _account(session, "bob")
    await ledger.post(session, ledger.Posting(alice.id, Decimal("10"), LedgerKind.TOPUP, "t"))
    for acc, amount in ((alice, "0.40"), (bob, "0.80")):
        await ledger.post(
            session,
            ledger.Posting(
                acc.id, -Decimal(amount), LedgerKind.CHARGE, f"po:7:{acc.name}", pages=4
            ),
        )
    await session.commit()
    before = await ledger.balances(session, [alice.id, bob.id])
    assert before == {alice.id: Decimal("9.60"), bob.id: Decimal("-0.80")}

    # The charges carry no print_out_id here; reverse them entry by entry.
    entries = (await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "charge"))).all()
    for entry in entries:
        assert await ledger.reverse_entry(session, entry, actor="admin")
        assert not await ledger.reverse_entry(session, entry, actor="admin")
    await session.commit()
    after = await ledger.balances(session, [alice.id, bob.id])
    assert after == {alice.id: Decimal("10"), bob.id: Decimal("0")}
    assert await ledger.page_count(session, alice.id) == 0
    reversal = (
        await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "reversal"))
    ).first()
    assert reversal is not None
    with pytest.raises(LedgerError, match="itself a reversal"):
        await ledger.reverse_entry(session, reversal, actor="admin")


async def test_bad_postings_write_nothing(session: AsyncSession) -> None:
    alice = await _account(session, "alice")
    with pytest.raises(InvalidAmount):
        await ledger.post(session, _charge(alice, "-1", "positive-charge"))
    with pytest.raises(InvalidAmount):
        await ledger.post(
            session, ledger.Posting(alice.id, Decimal("NaN"), LedgerKind.ADJUSTMENT, "nan")
        )
    with pytest.raises(LedgerError):
        await ledger.post(session, _charge(alice, "1", ""))
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(LedgerEntry)) == 0


async def test_money_is_exact_on_both_backends(session: AsyncSession) -> None:
    alice = await _account(session, "alice")
    # 0.1 + 0.2 as floats is 0.30000000000000004; as ledger money it is 0.3.
    for i, amount in enumerate(["0.1", "0.2", "0.000001", "123456789.123456"]):
        await ledger.post(
            session, ledger.Posting(alice.id, Decimal(amount), LedgerKind.ADJUSTMENT, f"a{i}")
        )
    await session.commit()
    total = await ledger.balance(session, alice.id)
    assert total == Decimal("123456789.423457")
    assert isinstance(total, Decimal)


async def test_concurrent_posts_of_one_key_leave_one_entry(
    sessionmaker: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    async with sessionmaker() as session, session.begin():
        alice = await _account(session, "alice")

    async def post_once() -> bool:
        async with sessionmaker() as s, s.begin():
            return await ledger.post(s, _charge(alice, "0.50", "po:42:alice"))

    # SQLite serialises writers; PostgreSQL races them for real.
    results = await asyncio.gather(*(post_once() for _ in range(8)))
    assert results.count(True) == 1
    async with sessionmaker() as session:
        rows = await session.scalar(
            select(func.count()).where(LedgerEntry.idempotency_key == "po:42:alice")
        )
        assert rows == 1
        assert await ledger.balance(session, alice.id) == Decimal("-0.50")


async def test_accounts_directory(session: AsyncSession) -> None:
    await accounts.create_group(session, "sales")
    user = await accounts.create_user(session, "carol", email="c@example.org", groups=["sales"])
    group = await session.scalar(select(User).where(User.id == user.id))
    assert group is not None
    sub = await accounts.create_shared_account(session, "Events/Gala")
    assert sub.path == "Events/Gala"
    parent = await accounts.find_account(session, AccountType.SHARED, "Events")
    assert parent is not None and sub.parent_id == parent.id
    assert await accounts.find_account(session, AccountType.SHARED, "Events\\Gala") is not None
    members = await accounts.group_member_ids(
        session,
        (await accounts.find_groups(session, ["sales"]))[0].id,
    )
    assert members == [user.id]
    with pytest.raises(Conflict):
        await accounts.create_user(session, "carol")
    with pytest.raises(Conflict):
        await accounts.create_shared_account(session, "Events")
    with pytest.raises(NotFound):
        await accounts.create_user(session, "dave", groups=["nope"])
    for bad in ["", "a,b", "x:2", "has space", "a" * 300, "tab\there", "a/b/c"]:
        with pytest.raises(InvalidInput):
            await accounts.create_user(session, bad)
    with pytest.raises(InvalidInput):
        await accounts.create_shared_account(session, "a/b/c")
    await session.commit()
    # The failed attempts left nothing behind.
    names = set((await session.scalars(select(User.name))).all())
    assert names == {"carol"}
    paths = set((await session.scalars(select(Account.path))).all())
    assert paths == {"sales", "carol", "Events", "Events/Gala"}


async def test_running_totals_are_the_sums_of_the_entries(session: AsyncSession) -> None:
    """Posts, replays, reversals: the stored totals move only with new entries,
    ``verify`` finds nothing; a total changed behind the ledger's back is named
    and ``rebuild_totals`` puts it right."""
    from billing.models import AccountBalance

    alice = await _account(session, "alice")
    bob = await _account(session, "bob")
    carol = await _account(session, "carol")  # never posted to: no row, balance 0
    await ledger.post(session, ledger.Posting(alice.id, Decimal("5.00"), LedgerKind.TOPUP, "t1"))
    await ledger.post_many(
        session,
        [_charge(bob, "0.45", "po:1:bob", pages=3), _charge(alice, "0.15", "po:1:alice", 1)],
    )
    assert not await ledger.post(session, _charge(alice, "0.15", "po:1:alice", 1))  # replay
    entry = await ledger.entry_by_key(session, "po:1:bob")
    assert entry is not None
    assert await ledger.reverse_entry(session, entry, actor="admin")
    assert not await ledger.reverse_entry(session, entry, actor="admin")
    await session.commit()

    assert await ledger.totals(session, alice.id) == (Decimal("4.85"), 1)
    assert await ledger.totals(session, bob.id) == (Decimal("0"), 0)
    assert await ledger.totals(session, carol.id) == (Decimal("0"), 0)
    assert await ledger.balances(session, [alice.id, bob.id, carol.id]) == {
        alice.id: Decimal("4.85"),
        bob.id: Decimal("0"),
        carol.id: Decimal("0"),
    }
    stored = (await session.execute(select(AccountBalance.account_id))).scalars().all()
    assert sorted(stored) == sorted([alice.id, bob.id])
    assert await ledger.verify(session) == []

    # A total written around billing.ledger: verify names it, rebuild repairs it.
    await session.execute(
        AccountBalance.__table__.update()
        .where(AccountBalance.account_id == alice.id)
        .values(balance=Decimal("100"))
    )
    await session.commit()
    [wrong] = await ledger.verify(session)
    assert wrong.account_id == alice.id
    assert wrong.stored == (Decimal("100"), 1) and wrong.summed == (Decimal("4.85"), 1)
    await ledger.rebuild_totals(await session.connection())
    await session.commit()
    assert await ledger.verify(session) == []
    assert await ledger.balance(session, alice.id) == Decimal("4.85")


async def test_concurrent_charges_in_opposite_orders_keep_exact_totals(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Batches of print-outs ending at once, one charging alice then bob, the
    next bob then alice, each batch one transaction (as the tracker ends them;
    PostgreSQL races them for real): the totals are written at commit in
    account order, so none deadlocks, and every total is the sum of its
    entries to the cent."""
    async with sessionmaker() as session, session.begin():
        alice = await _account(session, "alice")
        bob = await _account(session, "bob")

    async def charge(i: int) -> None:
        first, second = (alice, bob) if i % 2 else (bob, alice)
        async with sessionmaker() as s, s.begin():
            await ledger.post(s, _charge(first, "0.10", f"po:{i}:a", 1))
            await asyncio.sleep(0.01)  # the next print-out of the batch: others run
            await ledger.post(s, _charge(second, "0.05", f"po:{i}:b", 1))

    await asyncio.gather(*(charge(i) for i in range(40)))
    async with sessionmaker() as session:
        assert await ledger.verify(session) == []
        balances = await ledger.balances(session, [alice.id, bob.id])
        assert sum(balances.values()) == Decimal("-6.00")  # 40 × (0.10 + 0.05)
        assert balances[alice.id] == Decimal("-3.00")  # 20 × 0.10 + 20 × 0.05


async def test_totals_read_in_the_posting_transaction_and_undone_by_rollback(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A balance read in the transaction that posted includes what it posted
    (written only at commit); a rolled-back transaction, or savepoint, leaves
    the totals as they were."""
    async with sessionmaker() as session, session.begin():
        alice = await _account(session, "alice")
        await ledger.post(session, ledger.Posting(alice.id, Decimal("5"), LedgerKind.TOPUP, "t"))
        assert await ledger.totals(session, alice.id) == (Decimal("5"), 0)
        await ledger.post(session, _charge(alice, "0.30", "po:1", 2))
        assert await ledger.balances(session, [alice.id]) == {alice.id: Decimal("4.70")}
        assert await ledger.totals(session, alice.id) == (Decimal("4.70"), 2)

    async with sessionmaker() as session:
        async with session.begin():
            await ledger.post(session, _charge(alice, "1.00", "po:2", 1))
            assert await ledger.balance(session, alice.id) == Decimal("3.70")
            await session.rollback()
        async with session.begin():
            async with session.begin_nested() as savepoint:
                await ledger.post(session, _charge(alice, "2.00", "po:3", 1))
                assert await ledger.balance(session, alice.id) == Decimal("2.70")
                await savepoint.rollback()
            await ledger.post(session, _charge(alice, "0.20", "po:4", 1))
        assert await ledger.totals(session, alice.id) == (Decimal("4.50"), 3)
        assert await ledger.verify(session) == []


async def test_verify_beside_a_charging_service_finds_no_false_mismatch(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """``verify`` read while charges commit (as ``db verify`` beside a running
    service): each look sees every charge whole or not at all. The charges go
    on until every look is done, so each look has commits around it."""
    async with sessionmaker() as session, session.begin():
        alice = await _account(session, "alice")
    looked, started = asyncio.Event(), asyncio.Event()
    charged = 0

    async def charge() -> None:
        nonlocal charged
        while not looked.is_set():
            async with sessionmaker() as s, s.begin():
                await ledger.post(s, _charge(alice, "0.01", f"po:{charged}", 1))
            charged += 1
            started.set()
            await asyncio.sleep(0)

    async def look() -> list[list[ledger.Mismatch]]:
        seen = []
        await started.wait()  # the first charge is in: the looks run beside them
        for _ in range(30):
            async with sessionmaker() as s:
                seen.append(await ledger.verify(s))
        looked.set()
        return seen

    _, seen = await asyncio.gather(charge(), look())
    assert len(seen) == 30 and all(found == [] for found in seen)
    async with sessionmaker() as session:
        assert await ledger.totals(session, alice.id) == (Decimal("-0.01") * charged, charged)
