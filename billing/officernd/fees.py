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
   ``name``, e.g. ``PaperCut printing 2024-06-03 [pp:...]``) unless an earlier
   attempt may have happened and OfficeRnD already lists a fee of the member
   with the marker in its name, then adjusts PaperCut (the
   marker is in the comment) unless an earlier attempt may have happened and
   PaperCut's transaction log has the marker (``printlog.adjustment_applied``).
   A crash between the fee and the adjustment leaves the row pending; the
   next attempt finds the fee and only adjusts.

Why the name: the marker must be in a field the fee API documents and gives
back on read, or a lost answer could not be told from a fee never made.
OfficeRnD's fee object (developer.officernd.com/reference/fees) documents
``name`` ("The name of the charge. It will appear in the invoice line item"),
``price``, ``quantity``, ``date``, ``team``, ``member``, ``office``,
``plan``, ``refundable``, ``billInAdvance``, ``shouldUseValueCredits``,
``isPersonal``, ``source`` and read-only fields; no ``description``. So the
marker is the invoice line's reference, and the search is by ``member``
(fees are documented as queryable by location, company or member), not by
date, whose stored form (a date-time) the client does not control.

``[officernd] manage_fees = false`` ("Do not manage printing fees inside
OfficeRnD") turns all of this off; the summary says so.

The rows are carried out by ``billing.outbox``'s runner, here (``drain``) as
in the service's outbox worker, so the two never carry out one row at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import events, outbox
from billing.exceptions import InvalidInput
from billing.models import OutboxItem, User
from billing.money import Currency
from billing.officernd.client import OfficeRnDClient
from billing.officernd.exceptions import OfficeRnDError, OfficeRnDUnavailable
from billing.officernd.models import Fee
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError, PaperCutFault
from billing.retry import RetryPolicy

__all__ = [
    "FEE_KIND",
    "AdjustmentCheck",
    "FeeHandler",
    "FeesSummary",
    "NoTransactionLog",
    "ensure_plan",
    "intent_key",
    "retry_policy",
    "run_fees",
    "synced_users",
]

FEE_KIND = "officernd.fee"
FEE_NAME = "PaperCut printing"
MAX_KEY = 200  # outbox.idempotency_key is String(200)
MAX_ERRORS = outbox.MAX_ERRORS
DEFAULT_CONCURRENCY = outbox.DEFAULT_CONCURRENCY

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


def retry_policy(retry_base: float) -> RetryPolicy:
    """The outbox's policy with the first pause ``retry_base`` seconds (tests go fast)."""
    return RetryPolicy.forever(backoff=retry_base, max_backoff=outbox.RETRY.max_backoff)


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
        office_id=str(payload["office"]) if payload.get("office") else None,
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
        """Whether OfficeRnD lists a fee of the member with this marker in its name."""
        marker = str(payload["marker"])
        try:
            fees = await self.officernd.fees(member=str(payload["member_id"]))
        except OfficeRnDError as exc:
            raise outbox.Retry(f"looking for the fee: {exc}") from exc
        return any(marker in str(f.get("name") or "") for f in fees)

    async def adjusted(self, payload: dict[str, Any]) -> bool:
        try:
            return await self.applied(str(payload["marker"]))
        except OSError as exc:
            raise outbox.Retry(f"reading PaperCut's transaction log: {exc}") from exc

    async def already_applied(self, item: OutboxItem) -> bool:
        return await self.fee_exists(item.payload) and await self.adjusted(item.payload)

    async def apply(self, item: OutboxItem) -> None:
        payload = item.payload
        earlier = outbox.may_have_been_applied(item)  # either step may be done
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
    office: str = "",
    manage: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: float = 60.0,
    retry_base: float = 1.0,
    worker: str = "officernd-fees",
) -> FeesSummary:
    """Bill the day's negative balances (see the module doc); an event row records it.

    ``office`` is the fees' ``office`` (the API requires one; "": each member's
    own office, read from the members list when there is a fee to create).
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
        marker = outbox.new_marker()
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
                    "name": f"{FEE_NAME} {day.isoformat()} {marker}",
                    "comment": f"OfficeRnD fee of {day.isoformat()} {marker}",
                    "marker": marker,
                },
            )
        )
    summary.negative = len(intents)
    if intents:
        offices: dict[str, str | None] = {}
        if not office:
            offices = {m.id: m.office_id for m in await officernd.members()}
        for _, payload in intents:
            payload["office"] = office or offices.get(str(payload["member_id"])) or ""
    async with sessions() as session, session.begin():
        added = await outbox.enqueue_many(session, FEE_KIND, intents)
    summary.enqueued, summary.already = len(added), len(intents) - len(added)
    total = sum((amounts[key] for key in added), Decimal(0))
    summary.total = f"{total:f}"
    handler = FeeHandler(officernd, papercut, applied)
    result = await outbox.drain(
        sessions,
        FEE_KIND,
        handler,
        worker=worker,
        concurrency=concurrency,
        wait=wait,
        policy=retry_policy(retry_base),
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
