"""The balance allowance: a fixed amount added to each synced user's PaperCut balance
once per period (``[officernd] allowance_amount`` / ``allowance_period``).

Periods: ``daily`` (``2024-06-03``), ``weekly`` (ISO week, ``2024-W23``),
``monthly`` (``2024-06``). Each user's top-up for a period is one outbox row
keyed ``officernd:topup:<period>:<user>``, committed before PaperCut is
called, so a job that runs every day adds a weekly allowance once a week, and
a restart or a second instance never adds it twice. The adjustment's comment
carries an unguessable marker; a row whose earlier attempt may have reached
PaperCut is looked up there (``printlog.adjustment_applied``) before it is
sent again. An allowance of 0 turns top-ups off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import events, outbox
from billing.exceptions import InvalidInput
from billing.models import OutboxItem
from billing.officernd.fees import (
    DEFAULT_CONCURRENCY,
    MAX_ERRORS,
    AdjustmentCheck,
    NoTransactionLog,
    intent_key,
    retry_policy,
    synced_users,
)
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError

__all__ = ["PERIODS", "TOPUP_KIND", "TopupHandler", "TopupSummary", "period_key", "run_topups"]

TOPUP_KIND = "officernd.topup"
PERIODS = ("daily", "weekly", "monthly")


def period_key(period: str, day: date) -> str:
    """The period ``day`` falls in: ``2024-06-03``, ``2024-W23`` (ISO week) or ``2024-06``."""
    if period == "daily":
        return day.isoformat()
    if period == "weekly":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if period == "monthly":
        return f"{day.year:04d}-{day.month:02d}"
    raise InvalidInput(f"allowance period {period!r}: use daily, weekly or monthly")


class TopupHandler:
    """Outbox handler for ``officernd.topup``: one allowance adjustment in PaperCut."""

    kind = TOPUP_KIND

    def __init__(self, papercut: PaperCutClient, applied: AdjustmentCheck) -> None:
        self.papercut = papercut
        self.applied = applied

    async def already_applied(self, item: OutboxItem) -> bool:
        try:
            return await self.applied(str(item.payload["marker"]))
        except OSError as exc:
            raise outbox.Retry(f"reading PaperCut's transaction log: {exc}") from exc

    async def apply(self, item: OutboxItem) -> None:
        payload = item.payload
        try:
            await self.papercut.adjust_user_account_balance(
                str(payload["user"]), Decimal(str(payload["amount"])), str(payload["comment"])
            )
        except PaperCutError as exc:
            raise outbox.Retry(str(exc)) from exc
        except InvalidInput as exc:
            raise outbox.GiveUp(str(exc)) from exc


@dataclass
class TopupSummary:
    period: str
    amount: str
    enabled: bool = True
    users: int = 0
    enqueued: int = 0
    already: int = 0  # users topped up for this period by an earlier run
    done: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if not self.enabled:
            return "top-ups: allowance_amount is 0; nothing done"
        return (
            f"top-ups {self.period}: +{self.amount} for {self.enqueued} user(s), "
            f"{self.already} already topped up; done {self.done}, failed {self.failed}, "
            f"pending {self.pending}"
        )


async def run_topups(
    sessions: async_sessionmaker[AsyncSession],
    papercut: PaperCutClient,
    applied: AdjustmentCheck | None,
    *,
    amount: Decimal,
    period: str,
    day: date,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: float = 60.0,
    retry_base: float = 1.0,
    worker: str = "officernd-topup",
) -> TopupSummary:
    """Add the allowance for the period ``day`` falls in, once per user; an event records it."""
    key_period = period_key(period, day)
    summary = TopupSummary(period=key_period, amount=f"{amount:f}", enabled=amount != 0)
    if amount != 0:
        if applied is None:
            raise NoTransactionLog("top-ups")
        async with sessions() as session:
            users = await synced_users(session)
        summary.users = len(users)
        intents = []
        for user, _member in users:
            marker = outbox.new_marker()
            payload = {
                "user": user,
                "amount": f"{amount:f}",
                "period": key_period,
                "marker": marker,
                "comment": f"OfficeRnD {period} allowance {key_period} {marker}",
            }
            intents.append((intent_key("officernd:topup", key_period, user), payload))
        async with sessions() as session, session.begin():
            added = await outbox.enqueue_many(session, TOPUP_KIND, intents)
        summary.enqueued, summary.already = len(added), len(intents) - len(added)
        result = await outbox.drain(
            sessions,
            TOPUP_KIND,
            TopupHandler(papercut, applied),
            worker=worker,
            concurrency=concurrency,
            wait=wait,
            policy=retry_policy(retry_base),
        )
        summary.done, summary.failed, summary.pending = result.done, result.failed, result.pending
        summary.errors = result.errors[:MAX_ERRORS]
    async with sessions() as session, session.begin():
        events.record(
            session,
            subject_type="officernd-topup",
            subject_id=key_period,
            actor="officernd",
            reason="topup" if summary.enabled else "disabled",
            message=summary.line(),
            data=summary.as_dict(),
        )
    return summary
