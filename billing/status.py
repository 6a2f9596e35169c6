"""The print-out state machine: one guarded function per status change.

A print-out and its transactions share one status. ``transition`` is a
compare-and-set on the row (``UPDATE … WHERE status = <from>``), so two workers
or instances can never both move the same print-out.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from . import events
from .db import utcnow
from .enums import FINAL_STATUSES, PrintStatus
from .models import AccountTransaction, PrintOut

S = PrintStatus
_ACTIVE = {S.PENDING, S.HELD, S.PROCESSING, S.STOPPED}

ALLOWED: dict[PrintStatus, frozenset[PrintStatus]] = {
    S.PENDING: frozenset(_ACTIVE | FINAL_STATUSES | {S.PENDING_EXTERNAL}) - {S.PENDING},
    S.HELD: frozenset(_ACTIVE | FINAL_STATUSES | {S.PENDING_EXTERNAL}) - {S.HELD},
    S.PROCESSING: frozenset(_ACTIVE | FINAL_STATUSES) - {S.PROCESSING},
    S.STOPPED: frozenset(_ACTIVE | FINAL_STATUSES) - {S.STOPPED},
    S.PENDING_EXTERNAL: FINAL_STATUSES,
    S.CANCELED: frozenset(),
    S.ABORTED: frozenset(),
    S.COMPLETED: frozenset(),
}


def can_transition(current: PrintStatus, to: PrintStatus) -> bool:
    return to in ALLOWED[current]


async def transition(
    session: AsyncSession,
    print_out: PrintOut,
    to: PrintStatus,
    *,
    actor: str,
    reason: str | None = None,
    message: str | None = None,
) -> bool:
    """Move ``print_out`` (and its transactions) to ``to``; False if not possible.

    Not possible: the same status, a change the state machine forbids, or
    another worker changed the row first. Writes one event when it happens.
    """
    current = PrintStatus(print_out.status)
    if not can_transition(current, to):
        return False
    now = utcnow()
    values: dict[str, object] = {
        "status": int(to),
        "status_reason": reason,
        "status_message": message,
    }
    if to in FINAL_STATUSES:
        values["ended_at"] = now
        values["next_action_at"] = None
        values["claimed_by"] = None
        values["claim_until"] = None
    result = await session.execute(
        update(PrintOut)
        .where(PrintOut.id == print_out.id, PrintOut.status == int(current))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await session.execute(
        update(AccountTransaction)
        .where(AccountTransaction.print_out_id == print_out.id)
        .values(status=int(to))
        .execution_options(synchronize_session=False)
    )
    # Mirror the UPDATE in memory without marking the objects dirty (no second UPDATE).
    for key, value in values.items():
        set_committed_value(print_out, key, value)
    for txn in print_out.__dict__.get("transactions", ()):  # only when already loaded
        set_committed_value(txn, "status", int(to))
    events.record(
        session,
        subject_type="print_out",
        subject_id=print_out.id,
        actor=actor,
        from_status=current.label,
        to_status=to.label,
        reason=reason,
        message=message,
    )
    return True
