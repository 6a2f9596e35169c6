"""Event rows: every status change and notable action, with time, actor and reason."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from .models import Event


def record(
    session: AsyncSession,
    *,
    subject_type: str,
    subject_id: int | str,
    actor: str,
    from_status: str | None = None,
    to_status: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    event = Event(
        subject_type=subject_type,
        subject_id=str(subject_id),
        actor=actor,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        message=message,
        data=data,
    )
    session.add(event)
    return event
