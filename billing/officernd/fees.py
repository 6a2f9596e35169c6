"""Printing fees: negative PaperCut balances billed as OfficeRnD fees, once a day.

Every day (07:30 site time by default) each synced user's PaperCut balance is
read; a negative one becomes an OfficeRnD fee of that amount (``price`` =
-balance, quantity 1, on the ``fees_plan`` plan, for the member, dated the
site's day, ``isPersonal``), and then the PaperCut balance is adjusted by the
same amount, so it is zero (at -7.00: a fee of 7.00, then +7.00 in PaperCut).
Amounts are rounded *down* to the currency's decimals: a debt of -7.005 is
billed 7.00 and the 0.005 left waits until it adds up to a cent.

Exactly once per user per day, whatever crashes:

1. The intent is committed first: an outbox row keyed
   ``officernd:fee:<day>:<user>`` (unique) holding the amount and an
   unguessable marker ``[pp:<uuid>]``. A second run the same day finds the
   key taken and does nothing for that user.
2. The row is carried out by ``FeeHandler`` (kind ``officernd.fee``), here or
   by the service's outbox worker: it creates the fee (the marker is in its
   description) unless an earlier attempt may have happened and OfficeRnD
   already lists a fee with the marker that day, then adjusts PaperCut (the
   marker is in the comment) unless an earlier attempt may have happened and
   PaperCut's transaction log has the marker (``printlog.adjustment_applied``).
   A crash between the fee and the adjustment leaves the row pending; the
   next attempt finds the fee and only adjusts.

``[officernd] manage_fees = false`` ("Do not manage printing fees inside
OfficeRnD") turns all of this off; the summary says so.

This module also holds the in-process outbox runner (``drain``) that the
fees, the top-ups and the sync's re-creations share with the service's
outbox worker: rows are claimed the same way (``claim_until``, attempts
counted before acting), so the two never carry out one row at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import events, outbox
from billing.db import utcnow
from billing.enums import OutboxStatus
from billing.exceptions import InvalidInput
from billing.models import OutboxItem, User
from billing.money import Currency
from billing.officernd.client import OfficeRnDClient
from billing.officernd.exceptions import OfficeRnDError, OfficeRnDUnavailable
from billing.officernd.models import Fee
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError, PaperCutFault

__all__ = [
    "FEE_KIND",
    "AdjustmentCheck",
    "DrainResult",
    "FeeHandler",
    "FeesSummary",
    "NoTransactionLog",
    "claim_kind",
    "drain",
    "enqueue_many",
    "ensure_plan",
    "intent_key",
    "new_marker",
    "run_fees",
    "synced_users",
]

FEE_KIND = "officernd.fee"
FEE_NAME = "PaperCut printing"
MAX_KEY = 200  # outbox.idempotency_key is String(200)
MAX_ERRORS = 50
DEFAULT_CONCURRENCY = 16

# ``printlog.adjustment_applied`` bound to PaperCut's database: marker -> applied?
AdjustmentCheck = Callable[[str], Awaitable[bool]]
Progress = Callable[[int, int], None]


class NoTransactionLog(InvalidInput):
    """Exactly-once adjustments need PaperCut's transaction log (``[papercut] db_url``)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: papercut.db_url is not set; PaperCut's transaction log is needed to "
            "post adjustments exactly once"
        )


def new_marker() -> str:
    """An unguessable marker for a fee's description and an adjustment's comment."""
    return f"[pp:{uuid.uuid4().hex}]"


def intent_key(prefix: str, period: str, user: str) -> str:
    """``<prefix>:<period>:<user>`` (user lower-cased: PaperCut ignores case);
    a hash of the name when the key would not fit the column."""
    key = f"{prefix}:{period}:{user.lower()}"
    if len(key) <= MAX_KEY:
        return key
    digest = hashlib.sha256(user.lower().encode("utf-8")).hexdigest()
    return f"{prefix}:{period}:sha256:{digest}"


async def synced_users(session: AsyncSession) -> list[tuple[str, str]]:
    """(user name, member id) of every active user synced from OfficeRnD, by name."""
    rows = await session.execute(
        select(User.name, User.external_id)
        .where(User.external_id.is_not(None), User.active.is_(True))
        .order_by(User.name)
    )
    return [(name, str(ext)) for name, ext in rows.all()]


# --- the in-process outbox runner ---------------------------------------------------------

CHUNK = 500  # rows per statement: well under SQLite's and asyncpg's parameter limits


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def enqueue_many(
    session: AsyncSession, kind: str, rows: Sequence[tuple[str, dict[str, Any]]]
) -> set[str]:
    """``outbox.enqueue`` in bulk: add the rows whose key is new; the keys added."""
    keys = [key for key, _ in rows]
    existing: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        existing.update(
            await session.scalars(
                select(OutboxItem.idempotency_key).where(OutboxItem.idempotency_key.in_(chunk))
            )
        )
    fresh = [(key, payload) for key, payload in rows if key not in existing]
    if fresh:
        now = utcnow()
        # executemany: SQLAlchemy sends pages of multi-row INSERTs from one cached statement
        await session.execute(
            _insert(session)(OutboxItem).on_conflict_do_nothing(),
            [
                {
                    "kind": kind,
                    "idempotency_key": key,
                    "payload": payload,
                    "status": int(OutboxStatus.PENDING),
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for key, payload in fresh
            ],
        )
    return {key for key, _ in fresh}


async def claim_kind(
    session: AsyncSession,
    kind: str,
    worker: str,
    *,
    limit: int = 64,
    due_only: bool = True,
    keys: Collection[str] | None = None,
    exclude: Collection[int] = (),
) -> list[int]:
    """Claim pending rows of one kind (as ``outbox.claim``: commit before acting).

    ``due_only=False`` also takes rows waiting for a retry; ``keys`` limits
    the claim to those idempotency keys, ``exclude`` leaves rows out. Rows
    another worker holds are skipped.
    """
    now = utcnow()
    query = select(OutboxItem.id).where(
        OutboxItem.kind == kind,
        OutboxItem.status == int(OutboxStatus.PENDING),
        or_(OutboxItem.claim_until.is_(None), OutboxItem.claim_until < now),
    )
    if due_only:
        query = query.where(OutboxItem.next_attempt_at <= now)
    if keys is not None:
        query = query.where(OutboxItem.idempotency_key.in_(list(keys)))
    if exclude:
        query = query.where(OutboxItem.id.not_in(list(exclude)))
    query = query.order_by(OutboxItem.next_attempt_at, OutboxItem.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(await session.scalars(query))
    if ids:
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(ids))
            .values(
                claimed_by=worker[:64],
                claim_until=now + outbox.CLAIM_FOR,
                attempts=OutboxItem.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
    return ids


@dataclass
class DrainResult:
    done: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0  # left for a later run or the service's outbox worker
    errors: list[str] = field(default_factory=list)  # rows given up
    last_retry_error: str = ""


async def _attempt(handler: outbox.Handler, item: OutboxItem) -> tuple[str, str]:
    """One attempt, as the service's outbox worker makes it: ("done"|"retry"|"failed", error)."""
    try:
        # ``attempts`` counts this attempt: more than one means an earlier one may have acted.
        if item.attempts > 1 and await handler.already_applied(item):
            return "done", ""
        await handler.apply(item)
    except outbox.GiveUp as exc:
        return "failed", str(exc)
    except (outbox.Retry, OSError, TimeoutError) as exc:
        return "retry", str(exc) or type(exc).__name__
    return "done", ""


async def _settle(
    session: AsyncSession, outcomes: Sequence[tuple[OutboxItem, str, str]], retry_base: float
) -> None:
    done = [item.id for item, outcome, _ in outcomes if outcome == "done"]
    if done:  # as outbox.finish, in one statement
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(done))
            .values(
                status=int(OutboxStatus.DONE),
                done_at=utcnow(),
                claimed_by=None,
                claim_until=None,
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        )
    for item, outcome, error in outcomes:
        if outcome == "done":
            continue
        if outcome == "failed":
            await outbox.fail(session, item.id, error)
        else:
            pause = min(600.0, retry_base * 2 ** min(item.attempts - 1, 12))
            await session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item.id)
                .values(
                    next_attempt_at=utcnow() + timedelta(seconds=pause * random.uniform(0.5, 1)),
                    claimed_by=None,
                    claim_until=None,
                    last_error=error[:2000],
                )
                .execution_options(synchronize_session=False)
            )


async def _next_chance(session: AsyncSession, kind: str) -> float | None:
    """Seconds until a pending row of ``kind`` can be claimed; None when there is none."""
    now = utcnow()
    pending = (OutboxItem.kind == kind, OutboxItem.status == int(OutboxStatus.PENDING))
    free = await session.scalar(
        select(func.min(OutboxItem.next_attempt_at)).where(
            *pending, or_(OutboxItem.claim_until.is_(None), OutboxItem.claim_until < now)
        )
    )
    held = await session.scalar(
        select(func.min(OutboxItem.claim_until)).where(*pending, OutboxItem.claim_until >= now)
    )
    times = [t for t in (free, held) if t is not None]
    if not times:
        return None
    return max(0.0, (min(times) - now).total_seconds())


async def _keep_claims(
    sessions: async_sessionmaker[AsyncSession], ids: Sequence[int], worker: str
) -> None:
    """Renew our claim on ``ids`` while they run (a slow server must not let the
    service's outbox worker take a row we are still carrying out)."""
    while True:
        await asyncio.sleep(outbox.CLAIM_FOR.total_seconds() / 3)
        async with sessions() as session, session.begin():
            await session.execute(
                update(OutboxItem)
                .where(
                    OutboxItem.id.in_(ids),
                    OutboxItem.claimed_by == worker[:64],
                    OutboxItem.status == int(OutboxStatus.PENDING),
                )
                .values(claim_until=utcnow() + outbox.CLAIM_FOR)
                .execution_options(synchronize_session=False)
            )


async def run_items(
    sessions: async_sessionmaker[AsyncSession],
    ids: Sequence[int],
    handler: outbox.Handler,
    *,
    worker: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry_base: float = 1.0,
    result: DrainResult | None = None,
    progress: Callable[[], None] | None = None,
) -> DrainResult:
    """Carry out rows ``worker`` claimed (concurrently), then settle them in one transaction."""
    result = result or DrainResult()
    if not ids:
        return result
    async with sessions() as session:
        items = list(await session.scalars(select(OutboxItem).where(OutboxItem.id.in_(ids))))
    gate = asyncio.Semaphore(concurrency)

    async def one(item: OutboxItem) -> tuple[OutboxItem, str, str]:
        async with gate:
            outcome, error = await _attempt(handler, item)
        if progress is not None:
            progress()
        return item, outcome, error

    heartbeat = asyncio.create_task(_keep_claims(sessions, ids, worker))
    try:
        outcomes = await asyncio.gather(*(one(item) for item in items))
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    async with sessions() as session, session.begin():
        await _settle(session, outcomes, retry_base)
    for item, outcome, error in outcomes:
        if outcome == "done":
            result.done += 1
        elif outcome == "failed":
            result.failed += 1
        else:
            result.retried += 1
        if outcome == "failed" and len(result.errors) < MAX_ERRORS:
            result.errors.append(f"{item.idempotency_key}: {error}")
        elif outcome == "retry":
            result.last_retry_error = f"{item.idempotency_key}: {error}"
    return result


async def drain(
    sessions: async_sessionmaker[AsyncSession],
    kind: str,
    handler: outbox.Handler,
    *,
    worker: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: float = 0.0,
    retry_base: float = 1.0,
    due_only: bool = True,
    progress: Callable[[], None] | None = None,
) -> DrainResult:
    """Carry out the pending rows of ``kind`` in this process.

    Claims ``4 x concurrency`` rows at a time (the claim is renewed while they
    run). ``due_only=False`` first takes every pending row once, those waiting
    for a retry too (a sync finishing what a crashed run left). A row that
    fails for now is retried after a pause (``retry_base`` x 2^attempts,
    jittered) for up to ``wait`` seconds in all; after that it stays pending
    for the next run or the service's outbox worker.
    """
    result = DrainResult()
    deadline = time.monotonic() + wait
    batch = max(1, 4 * concurrency)
    seen: set[int] = set()  # with due_only=False: each row once, then it waits its turn
    while True:
        async with sessions() as session, session.begin():
            ids = await claim_kind(
                session,
                kind,
                worker,
                limit=batch,
                due_only=due_only,
                exclude=() if due_only else seen,
            )
        if not ids and not due_only:
            due_only = True
            continue
        if ids:
            seen.update(ids)
            await run_items(
                sessions,
                ids,
                handler,
                worker=worker,
                concurrency=concurrency,
                retry_base=retry_base,
                result=result,
                progress=progress,
            )
            continue
        left = deadline - time.monotonic()
        async with sessions() as session:
            chance = await _next_chance(session, kind)
        if chance is None or left <= 0 or chance > left:
            break
        await asyncio.sleep(max(chance, 0.01))
    async with sessions() as session:
        result.pending = int(
            await session.scalar(
                select(func.count()).where(
                    OutboxItem.kind == kind, OutboxItem.status == int(OutboxStatus.PENDING)
                )
            )
            or 0
        )
    return result


# --- fees ---------------------------------------------------------------------------------


def _fee(payload: dict[str, Any]) -> Fee:
    return Fee(
        name=str(payload["name"]),
        price=Decimal(str(payload["amount"])),
        date=str(payload["date"]),
        member_id=str(payload["member_id"]),
        plan_id=str(payload["plan_id"]) if payload.get("plan_id") else None,
        quantity=1,
        is_personal=True,
        description=str(payload["description"]),
    )


class FeeHandler:
    """Outbox handler for ``officernd.fee``: the fee in OfficeRnD, then PaperCut zeroed."""

    kind = FEE_KIND

    def __init__(
        self, officernd: OfficeRnDClient, papercut: PaperCutClient, applied: AdjustmentCheck
    ) -> None:
        self.officernd = officernd
        self.papercut = papercut
        self.applied = applied

    async def fee_exists(self, payload: dict[str, Any]) -> bool:
        """Whether OfficeRnD lists the member's fee with this marker on that day."""
        marker = str(payload["marker"])
        try:
            fees = await self.officernd.fees(
                date=str(payload["date"]), member=str(payload["member_id"])
            )
        except OfficeRnDError as exc:
            raise outbox.Retry(f"looking for the fee: {exc}") from exc
        return any(marker in str(f.get("description") or "") for f in fees)

    async def adjusted(self, payload: dict[str, Any]) -> bool:
        try:
            return await self.applied(str(payload["marker"]))
        except OSError as exc:
            raise outbox.Retry(f"reading PaperCut's transaction log: {exc}") from exc

    async def already_applied(self, item: OutboxItem) -> bool:
        return await self.fee_exists(item.payload) and await self.adjusted(item.payload)

    async def apply(self, item: OutboxItem) -> None:
        payload = item.payload
        earlier = item.attempts > 1  # an earlier attempt may have done either step
        if not (earlier and await self.fee_exists(payload)):
            try:
                await self.officernd.create_fee(_fee(payload))
            except OfficeRnDUnavailable as exc:
                raise outbox.Retry(str(exc)) from exc
            except OfficeRnDError as exc:
                if exc.status is None or exc.status in (401, 403, 408, 429):
                    raise outbox.Retry(str(exc)) from exc
                raise outbox.GiveUp(f"OfficeRnD refused the fee: {exc}") from exc
            except InvalidInput as exc:
                raise outbox.GiveUp(str(exc)) from exc
        if not (earlier and await self.adjusted(payload)):
            try:
                await self.papercut.adjust_user_account_balance(
                    str(payload["user"]), Decimal(str(payload["amount"])), str(payload["comment"])
                )
            except PaperCutError as exc:  # an unknown user waits for an admin, like charges
                raise outbox.Retry(str(exc)) from exc
            except InvalidInput as exc:
                raise outbox.GiveUp(str(exc)) from exc


async def ensure_plan(
    officernd: OfficeRnDClient, name: str, *, attempts: int = 5
) -> tuple[str, bool]:
    """The id of the plan called ``name`` (case ignored), created when missing: (id, created).

    Looked up again before every creation, so a creation whose answer was
    lost is found instead of being made twice.
    """
    for attempt in range(1, attempts + 1):
        plans = await officernd.plans()
        for plan in plans:
            if plan.name.strip().casefold() == name.strip().casefold():
                return plan.id, False
        try:
            created = await officernd.create_plan(name)
        except OfficeRnDUnavailable:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.2 * attempt)
            continue
        return created.id, True
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class FeesSummary:
    day: str
    managed: bool = True
    plan_id: str | None = None
    plan_created: bool = False
    users: int = 0  # synced users whose balance was read
    negative: int = 0
    enqueued: int = 0  # new intents for the day
    already: int = 0  # users with an intent for the day from an earlier run
    total: str = "0"  # sum of the new intents
    done: int = 0  # rows carried out in this run (earlier days' leftovers included)
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if not self.managed:
            return f"fees {self.day}: not managed in OfficeRnD (manage_fees = false); nothing done"
        return (
            f"fees {self.day}: {self.users} users read, {self.negative} negative, "
            f"{self.enqueued} new fee(s) totalling {self.total}, {self.already} already billed "
            f"today; done {self.done}, failed {self.failed}, pending {self.pending}, "
            f"errors {len(self.errors)}"
        )


async def _balances(
    papercut: PaperCutClient, users: Sequence[tuple[str, str]], concurrency: int
) -> tuple[dict[str, Decimal], list[str]]:
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(user: str) -> tuple[str, Decimal | None]:
        async with gate:
            try:
                return user, await papercut.get_user_account_balance(user)
            except PaperCutFault as exc:
                errors.append(f"{user}: {exc.fault_string}")
            except PaperCutError as exc:
                errors.append(f"{user}: {exc}")
        return user, None

    read = await asyncio.gather(*(one(user) for user, _ in users))
    return {user: bal for user, bal in read if bal is not None}, errors


async def run_fees(
    sessions: async_sessionmaker[AsyncSession],
    officernd: OfficeRnDClient,
    papercut: PaperCutClient,
    applied: AdjustmentCheck | None,
    *,
    day: date,
    currency: Currency,
    plan_name: str = "PaperCut Fees",
    manage: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: float = 60.0,
    retry_base: float = 1.0,
    worker: str = "officernd-fees",
) -> FeesSummary:
    """Bill the day's negative balances (see the module doc); an event row records it.

    ``day`` is the site's date (``[officernd] timezone``). ``applied`` (PaperCut's
    transaction log) is required unless fees are not managed. Commits its own
    transactions: the intents before any remote call, then each batch.
    """
    summary = FeesSummary(day=day.isoformat(), managed=manage)
    if not manage:
        async with sessions() as session, session.begin():
            _record(session, summary)
        return summary
    if applied is None:
        raise NoTransactionLog("fees")
    summary.plan_id, summary.plan_created = await ensure_plan(officernd, plan_name)
    async with sessions() as session:
        users = await synced_users(session)
    balances, errors = await _balances(papercut, users, concurrency)
    summary.users = len(balances)
    summary.errors += errors[:MAX_ERRORS]
    members = dict(users)
    intents: list[tuple[str, dict[str, Any]]] = []
    amounts: dict[str, Decimal] = {}
    for user, balance in balances.items():
        amount = (-balance).quantize(currency.quantum, ROUND_DOWN)
        if amount <= 0:
            continue
        marker = new_marker()
        key = intent_key("officernd:fee", day.isoformat(), user)
        amounts[key] = amount
        intents.append(
            (
                key,
                {
                    "user": user,
                    "member_id": members[user],
                    "amount": str(amount),
                    "balance": str(balance),
                    "date": day.isoformat(),
                    "plan_id": summary.plan_id,
                    "name": FEE_NAME,
                    "description": (
                        f"PaperCut printing: balance {balance.normalize():f} on "
                        f"{day.isoformat()} ({user}) {marker}"
                    ),
                    "comment": f"OfficeRnD fee of {day.isoformat()} {marker}",
                    "marker": marker,
                },
            )
        )
    summary.negative = len(intents)
    async with sessions() as session, session.begin():
        added = await enqueue_many(session, FEE_KIND, intents)
    summary.enqueued, summary.already = len(added), len(intents) - len(added)
    total = sum((amounts[key] for key in added), Decimal(0))
    summary.total = f"{total:f}"
    handler = FeeHandler(officernd, papercut, applied)
    result = await drain(
        sessions,
        FEE_KIND,
        handler,
        worker=worker,
        concurrency=concurrency,
        wait=wait,
        retry_base=retry_base,
    )
    summary.done, summary.failed, summary.pending = result.done, result.failed, result.pending
    summary.errors += result.errors[: MAX_ERRORS - len(summary.errors)]
    async with sessions() as session, session.begin():
        _record(session, summary)
    return summary


def _record(session: AsyncSession, summary: FeesSummary) -> None:
    events.record(
        session,
        subject_type="officernd-fees",
        subject_id=summary.day,
        actor="officernd",
        reason="fees" if summary.managed else "not-managed",
        message=summary.line(),
        data=summary.as_dict(),
    )
