"""The print-out state machine: guarded transitions, events, shared status."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, status
from billing.enums import AccountType, PrintStatus
from billing.models import AccountTransaction, Event, Printer, PrintIn, PrintOut


async def _print_out(session: AsyncSession) -> PrintOut:
    await accounts.create_user(session, "alice")
    account = await accounts.find_account(session, AccountType.USER, "alice")
    assert account is not None
    printer = Printer(name="pp", mode="direct", target="ipp://127.0.0.1:1/ipp/print")
    session.add(printer)
    await session.flush()
    pin = PrintIn(
        job_uuid="urn:uuid:1",
        printer_id=printer.id,
        delegate="alice",
        title="t",
        sha256="0" * 64,
        size=10,
        pages=1,
    )
    session.add(pin)
    await session.flush()
    po = PrintOut(
        print_in_id=pin.id,
        printer_id=printer.id,
        mode="direct",
        target=printer.target,
        delegate="alice",
        title="t",
        pages=1,
        copies=1,
        currency="EUR",
    )
    session.add(po)
    await session.flush()
    session.add(
        AccountTransaction(
            print_out_id=po.id,
            account_id=account.id,
            weight=1,
            amount=Decimal(0),
            idempotency_key=f"po:{po.id}:acct:{account.id}",
        )
    )
    await session.commit()
    return po


async def test_transitions_are_guarded_and_evented(session: AsyncSession) -> None:
    po = await _print_out(session)
    S = PrintStatus
    assert await status.transition(session, po, S.PROCESSING, actor="tracker")
    assert not await status.transition(session, po, S.PROCESSING, actor="tracker")
    assert await status.transition(session, po, S.COMPLETED, actor="tracker")
    # Final states are final.
    for to in S:
        assert not await status.transition(session, po, to, actor="x")
    await session.commit()
    txn = await session.scalar(select(AccountTransaction))
    assert txn is not None and txn.status == S.COMPLETED
    events = (await session.scalars(select(Event).order_by(Event.id))).all()
    assert [(e.from_status, e.to_status) for e in events] == [
        ("pending", "processing"),
        ("processing", "completed"),
    ]
    assert po.ended_at is not None


async def test_pending_external_only_ends(session: AsyncSession) -> None:
    po = await _print_out(session)
    S = PrintStatus
    assert await status.transition(session, po, S.PENDING_EXTERNAL, actor="dispatch")
    assert not await status.transition(session, po, S.PROCESSING, actor="x")
    assert await status.transition(session, po, S.CANCELED, actor="papercut", reason="expired")
    assert po.status_reason == "expired"


async def test_compare_and_set_beats_a_stale_copy(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    po = await _print_out(session)
    async with sessionmaker() as other, other.begin():
        stale = await other.get(PrintOut, po.id)
        assert stale is not None
    assert await status.transition(session, po, PrintStatus.CANCELED, actor="operator")
    await session.commit()
    async with sessionmaker() as other, other.begin():
        # `stale` still says pending; the row does not, so nothing happens.
        assert not await status.transition(other, stale, PrintStatus.COMPLETED, actor="tracker")
    await session.refresh(po)
    assert po.status == PrintStatus.CANCELED
