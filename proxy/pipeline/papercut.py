"""PaperCut-managed targets (SavaPage A.3.2, A.3.3).

A print-out to a PaperCut-managed queue goes out under a unique document name
and waits ``pending_external`` with zero shadow transactions. The monitor reads
PaperCut's print log in batches (one query per tick for every pending name),
ends the print-out as PaperCut did, charges the cost pro rata (PaperCut's
``usage_cost``, or the ticket cost for a job ticket), and queues one PaperCut
adjustment per transaction in the outbox, in the same database transaction.

No double charge: PaperCut itself charges every job it tracks (its
``usage_cost``, to the job's charged account). proxyprint's PaperCut-managed
queues charge the clearing shared account (``[papercut] clearing_account``,
set up by ``papercut fix``): per completed print-out, the clearing account is
credited PaperCut's ``usage_cost`` and each charged transaction's account is
debited its share, so the clearing account nets to zero and all PaperCut
balance changes add up to minus the print-out's cost.

Exactly once: each adjustment's comment carries a unique random marker
``[pp:<uuid>]``. The outbox commits the attempt before calling PaperCut;
a row that may have been applied (an earlier attempt exists) is first looked
up in PaperCut's ``tbl_account_transaction`` by that marker and only re-sent
when it is not there.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from decimal import Decimal

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from billing import events, outbox
from billing.db import utcnow
from billing.enums import AccountType, PrintStatus, StatusReason
from billing.exceptions import InvalidInput
from billing.models import Account, AccountTransaction, OutboxItem, PrintOut
from billing.papercut import printlog
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError

from .. import metrics
from ..keys import CONFIG, PAPERCUT, PRINTLOG, SESSIONS
from ..metrics_registry import TRACKER_PAPERCUT
from . import lifecycle

log = logging.getLogger(__name__)

ADJUST_KIND = "papercut.adjust"
HOLD_RULE = (
    "PaperCut's print log still showed the job held after its hold timeout"
    " ([papercut] hold_timeout_mins + missing_after_mins): read as expired, not charged"
)
COMMIT_EVERY = 50
MAX_DOCUMENT_NAME = 255
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._\-()\[\]+,@]")


def document_name(title: str, unique: uuid.UUID | None = None) -> str:
    """``<title>.proxyprint.<uuid>``: ASCII, at most 255 characters, unique."""
    suffix = f".proxyprint.{(unique or uuid.uuid4()).hex}"
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    ascii_title = _UNSAFE.sub("_", ascii_title).strip() or "job"
    return ascii_title[: MAX_DOCUMENT_NAME - len(suffix)] + suffix


def adjustment_comment(po: PrintOut, mark: str) -> str:
    """PaperCut keeps at most 255 characters; the marker must survive intact."""
    title = _UNSAFE.sub(
        "_", unicodedata.normalize("NFKD", po.title).encode("ascii", "ignore").decode()
    )
    title = title.replace("[", "(").replace("]", ")")[:80]
    return f"proxyprint print-out {po.id}: {title} {mark}"


async def _credit_clearing(
    session: AsyncSession, po: PrintOut, clearing: str, usage_cost: Decimal
) -> None:
    """Queue the clearing account's credit of what PaperCut charged it for ``po``."""
    if not clearing or usage_cost == 0:
        return
    mark = outbox.new_marker()
    await outbox.enqueue(
        session,
        kind=ADJUST_KIND,
        key=f"papercut:po:{po.id}:clearing",
        print_out_id=po.id,
        payload={
            "account_type": AccountType.SHARED.value,
            "name": clearing,
            "amount": str(usage_cost),
            "comment": adjustment_comment(po, mark),
            "marker": mark,
            "user_account": "",
        },
    )


async def _charge_to_papercut(session: AsyncSession, po: PrintOut, account_name: str) -> None:
    """Queue one PaperCut adjustment per charged transaction (same DB transaction)."""
    rows = await session.execute(
        select(AccountTransaction, Account)
        .join(Account, Account.id == AccountTransaction.account_id)
        .where(AccountTransaction.print_out_id == po.id)
        .order_by(AccountTransaction.id)
    )
    for txn, account in rows.all():
        if txn.amount == 0:
            continue
        key = f"papercut:po:{po.id}:txn:{txn.id}"
        mark = outbox.new_marker()  # kept from the first enqueue: the key is unique
        await outbox.enqueue(
            session,
            kind=ADJUST_KIND,
            key=key,
            print_out_id=po.id,
            payload={
                "account_type": account.type,
                "name": account.path,
                "amount": str(-txn.amount),
                "comment": adjustment_comment(po, mark),
                "marker": mark,
                "user_account": account_name,
            },
        )


Decided = Mapping[str, tuple[printlog.PrintLogRow, printlog.Outcome]]


async def apply_outcomes(app: web.Application, decided: Decided) -> int:
    """End the print-outs whose rows are decided (``printlog.decide``); how many changed.

    One database transaction per ``COMMIT_EVERY`` print-outs: a burst of
    releases in PaperCut never holds the write lock for long.
    """
    names = [n for n, (_row, verdict) in decided.items() if verdict.is_final]
    changed = 0
    for start in range(0, len(names), COMMIT_EVERY):
        changed += await _apply_chunk(app, decided, names[start : start + COMMIT_EVERY])
    return changed


def change_for(
    row: printlog.PrintLogRow, verdict: printlog.Outcome | None = None
) -> lifecycle.Change:
    """How a decided row ends its print-out (cost: PaperCut's, or the ticket's)."""
    verdict = verdict or row.outcome
    if verdict is printlog.Outcome.PRINTED:
        return lifecycle.Change(
            PrintStatus.COMPLETED, StatusReason.PRINTED, logged_cost=row.usage_cost
        )
    if verdict is printlog.Outcome.EXPIRED:
        if row.outcome is not printlog.Outcome.EXPIRED:  # the rule, not PaperCut's TIMEOUT
            return lifecycle.Change(PrintStatus.CANCELED, StatusReason.EXPIRED, HOLD_RULE)
        return lifecycle.Change(PrintStatus.CANCELED, StatusReason.EXPIRED)
    if verdict is printlog.Outcome.DENIED:
        return lifecycle.Change(PrintStatus.CANCELED, StatusReason.denied(row.denied_reason))
    return lifecycle.Change(PrintStatus.CANCELED, StatusReason.CANCELED_IN_PAPERCUT)


async def _apply_chunk(app: web.Application, decided: Decided, names: list[str]) -> int:
    account = app[CONFIG].papercut.account
    clearing = app[CONFIG].papercut.clearing_account
    changed = 0
    async with lifecycle.ending(app) as ends:
        pos = (
            await ends.session.scalars(
                select(PrintOut).where(
                    PrintOut.document_name.in_(names),
                    PrintOut.status == int(PrintStatus.PENDING_EXTERNAL),
                )
            )
        ).all()
        for po in pos:
            row, verdict = decided[po.document_name or ""]
            change = change_for(row, verdict)
            if not await ends.apply(po, change, actor="papercut"):
                continue
            if change.to is PrintStatus.COMPLETED:
                # A row already refunded: PaperCut gave the clearing account its cost back.
                credit = Decimal(0) if row.refunded else row.usage_cost
                await _credit_clearing(ends.session, po, clearing, credit)
                await _charge_to_papercut(ends.session, po, account)
            changed += 1
    return changed


async def _flag_missing(app: web.Application, missing: list[int]) -> None:
    """Flag print-outs PaperCut never logged; nothing is charged, an admin looks."""
    if not missing:
        return
    async with app[SESSIONS]() as session, session.begin():
        for po in await session.scalars(select(PrintOut).where(PrintOut.id.in_(missing))):
            if po.status_reason == StatusReason.NOT_IN_PRINT_LOG:
                continue
            po.status_reason = StatusReason.NOT_IN_PRINT_LOG
            po.status_message = "PaperCut's print log has no row for this job; check PaperCut"
            events.record(
                session,
                subject_type="print_out",
                subject_id=po.id,
                actor="papercut",
                reason=StatusReason.NOT_IN_PRINT_LOG,
                message=po.status_message,
            )


async def _unflag(app: web.Application, logged: list[int]) -> None:
    """A flagged print-out whose row has appeared (held): no longer missing."""
    if not logged:
        return
    async with app[SESSIONS]() as session, session.begin():
        for po in await session.scalars(select(PrintOut).where(PrintOut.id.in_(logged))):
            if po.status_reason != StatusReason.NOT_IN_PRINT_LOG:
                continue
            po.status_reason = None
            po.status_message = None
            events.record(
                session,
                subject_type="print_out",
                subject_id=po.id,
                actor="papercut",
                reason="in-print-log",
                message="PaperCut's print log has the job now (held)",
            )


async def monitor_tick(app: web.Application) -> int:
    """One tick: one print-log query (per 1,000 names) for every pending document."""
    async with app[SESSIONS]() as session:
        pending = (
            await session.execute(
                select(
                    PrintOut.id,
                    PrintOut.document_name,
                    PrintOut.dispatched_at,
                    PrintOut.status_reason,
                ).where(
                    PrintOut.status == int(PrintStatus.PENDING_EXTERNAL),
                    PrintOut.document_name.is_not(None),
                )
            )
        ).all()
    if not pending:
        metrics.tracker_ticked(app, TRACKER_PAPERCUT)
        return 0
    rows = await printlog.fetch(app[PRINTLOG], [p.document_name for p in pending])
    settings = app[CONFIG].papercut
    hold_timeout = timedelta(minutes=settings.hold_timeout_mins)
    missing_after = timedelta(minutes=settings.missing_after_mins)
    now = utcnow()
    decided: dict[str, tuple[printlog.PrintLogRow, printlog.Outcome]] = {}
    missing: list[int] = []
    logged: list[int] = []  # flagged missing earlier, held in the log now
    for p in pending:
        row = rows.get(p.document_name)
        # Not yet sent (no dispatch time): never missing, never expired by the rule.
        age = now - p.dispatched_at if p.dispatched_at is not None else timedelta(0)
        verdict = printlog.decide(row, age, hold_timeout=hold_timeout, missing_after=missing_after)
        if row is not None and verdict.is_final:
            decided[p.document_name] = (row, verdict)
        elif verdict is printlog.Outcome.MISSING and p.dispatched_at is not None:
            missing.append(p.id)
        elif row is not None and p.status_reason == StatusReason.NOT_IN_PRINT_LOG:
            logged.append(p.id)
    changed = await apply_outcomes(app, decided)
    await _unflag(app, logged)
    await _flag_missing(app, missing)
    metrics.tracker_ticked(app, TRACKER_PAPERCUT)
    return changed


class PaperCutAdjustments:
    """The outbox handler that posts adjustments to PaperCut (unconditionally)."""

    def __init__(self, client: PaperCutClient, printlog_engine: AsyncEngine) -> None:
        self.client = client
        self.printlog = printlog_engine

    async def already_applied(self, item: OutboxItem) -> bool:
        return await printlog.adjustment_applied(self.printlog, str(item.payload["marker"]))

    async def apply(self, item: OutboxItem) -> None:
        p = item.payload
        amount = Decimal(str(p["amount"]))
        try:
            if p["account_type"] == AccountType.USER.value:
                await self.client.adjust_user_account_balance(
                    str(p["name"]), amount, str(p["comment"]), str(p.get("user_account") or "")
                )
                return
            name = str(p["name"])
            if not await self.client.is_shared_account_exists(name):
                await self.client.add_new_shared_account(name)
            await self.client.adjust_shared_account_account_balance(name, amount, str(p["comment"]))
        except PaperCutError as exc:
            # Retried until it succeeds (a fault, e.g. an unknown user, waits for an admin).
            raise outbox.Retry(str(exc)) from exc
        except InvalidInput as exc:  # a payload PaperCut cannot take: an admin must look
            raise outbox.GiveUp(str(exc)) from exc


async def papercut_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PaperCut client and print-log engine, when ``[papercut]`` is configured."""
    config = app[CONFIG].papercut
    client = PaperCutClient(
        config.url, config.token, retry_writes=False, timeout=config.timeout_secs
    )
    # PaperCut's database is read, never written: a plain engine, not ours
    # (whose SQLite transactions take the write lock at BEGIN); any of its databases.
    engine = printlog.log_engine(config.db_url)
    app[PAPERCUT] = client
    metrics.watch_client(app, "papercut", client)
    app[PRINTLOG] = engine
    yield
    await client.close()
    await engine.dispose()
