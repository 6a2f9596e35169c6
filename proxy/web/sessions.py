"""Server-side web sessions in the database (``web_sessions``).

The cookie holds a random secret; the row holds its SHA-256, the session's
CSRF token and its times. Every request looks the row up joined to its user,
so revoking the row (sign-out) or disabling the user ends the session at
once, on every instance sharing the database. An open event stream checks
its session on each of the live feed's polls (``live_roles``), by the same rule.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import Role
from billing.models import User, WebSession
from proxy.config import WebConfig
from proxy.tokens import hash_token

COOKIE = "pp_session"
SECRET_PREFIX = "pps_"
# last_seen_at is written at most this often per session (reads stay reads).
TOUCH_EVERY = dt.timedelta(seconds=60)
# Ended sessions are kept this long (who signed in from where), then deleted.
KEEP_ENDED = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Found:
    """A live session and whose it is."""

    session_id: int
    user_id: int
    user_name: str
    role: Role
    csrf: str
    stale: bool  # last_seen_at is older than TOUCH_EVERY


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession, user: User, *, address: str | None, config: WebConfig
) -> tuple[str, WebSession]:
    """A new session for ``user``; returns the cookie's secret and the row.

    Sessions that expired more than KEEP_ENDED ago go at the same time.
    """
    secret = new_secret()
    now = utcnow()
    await session.execute(delete(WebSession).where(WebSession.expires_at < now - KEEP_ENDED))
    row = WebSession(
        token_hash=hash_token(secret),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        address=(address or "")[:64] or None,
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(hours=config.session_hours),
    )
    session.add(row)
    await session.flush()
    return secret, row


def _live(now: dt.datetime, config: WebConfig) -> ColumnElement[bool]:
    """A live session (joined to its user): not revoked, not expired, not idle, user active."""
    return and_(
        WebSession.revoked_at.is_(None),
        WebSession.expires_at > now,
        WebSession.last_seen_at > now - dt.timedelta(minutes=config.idle_mins),
        User.active.is_(True),
    )


def _role(value: str) -> Role | None:
    try:
        return Role(value)
    except ValueError:
        return None


async def lookup(session: AsyncSession, secret: str, config: WebConfig) -> Found | None:
    """The live session of ``secret`` (``_live``) with a known role, or None."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None
    now = utcnow()
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == hash_token(secret), _live(now, config))
        )
    ).first()
    if row is None:
        return None
    ws, user = row
    role = _role(user.web_role)
    if role is None:
        return None
    return Found(
        session_id=ws.id,
        user_id=user.id,
        user_name=user.name,
        role=role,
        csrf=ws.csrf_token,
        stale=now - ws.last_seen_at >= TOUCH_EVERY,
    )


async def live_roles(
    session: AsyncSession, session_ids: Collection[int], config: WebConfig
) -> dict[int, Role]:
    """Which of these sessions are still live, each with its user's role now: one query."""
    if not session_ids:
        return {}
    rows = await session.execute(
        select(WebSession.id, User.web_role)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id.in_(list(session_ids)), _live(utcnow(), config))
    )
    return {sid: role for sid, value in rows if (role := _role(value)) is not None}


async def touch(session: AsyncSession, session_id: int) -> None:
    await session.execute(
        update(WebSession).where(WebSession.id == session_id).values(last_seen_at=utcnow())
    )


async def revoke(session: AsyncSession, session_id: int) -> None:
    await session.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user(session: AsyncSession, user_id: int) -> int:
    """End every session of a user (password changed, user disabled); returns how many."""
    result = await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
