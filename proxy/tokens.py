"""API and reader tokens: random secrets shown once, stored only as SHA-256."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events
from billing.accounts import user_by_name
from billing.db import utcnow
from billing.enums import Role
from billing.models import ApiToken, User

from .exceptions import BadRequest, NotFound

TOKEN_PREFIX = "pp_"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_hash(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([mhdw])", re.ASCII)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``--expires``: an ISO date or date-time (UTC unless it says otherwise), or a
    duration from now (``30m``, ``12h``, ``90d``, ``2w``). A time in the past is refused."""
    now = now or utcnow()
    value = value.strip()
    match = _DURATION_RE.fullmatch(value)
    if match is not None:
        return now + dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"expires: {value[:40]!r} is neither a date (2027-01-01), a date-time"
            " (2027-01-01T08:00:00Z) nor a duration (30m, 12h, 90d, 2w)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    parsed = parsed.astimezone(dt.UTC)
    if parsed <= now:
        raise BadRequest(f"expires: {value!r} is in the past")
    return parsed


async def create_api_token(
    session: AsyncSession,
    role: str,
    *,
    user: str | None = None,
    label: str | None = None,
    expires_at: dt.datetime | None = None,
    actor: str = "admin",
) -> str:
    """Create a token with ``role`` (``user`` role needs ``user``); returns the secret.

    ``expires_at``: the token answers 401 from then on (None: until revoked).
    """
    try:
        parsed = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise BadRequest(f"unknown role {role!r} (one of: {allowed})") from None
    user_id = None
    if user is not None:
        found = await user_by_name(session, user)
        if found is None:
            raise NotFound(f"unknown user {user!r}")
        user_id = found.id
    elif parsed is Role.USER:
        raise BadRequest("a token with role 'user' needs --user")
    secret = new_secret()
    row = ApiToken(
        token_hash=hash_token(secret),
        role=parsed.value,
        user_id=user_id,
        label=label,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    events.record(
        session,
        subject_type="token",
        subject_id=row.id,
        actor=actor,
        reason="created",
        data={
            "role": parsed.value,
            "user": user,
            "label": label,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return secret


def usable(token: ApiToken, now: dt.datetime | None = None) -> bool:
    """Neither revoked nor expired."""
    if token.revoked_at is not None:
        return False
    return token.expires_at is None or token.expires_at > (now or utcnow())


async def lookup_api_token(session: AsyncSession, token: str) -> ApiToken | None:
    """The token's row if it is usable now: not revoked, not expired."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    found = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if found is None or not usable(found):
        return None
    return found


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: never its secret (only its hash is stored anyway)."""

    id: int
    role: str
    user: str | None
    label: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"


async def list_api_tokens(
    session: AsyncSession, *, include_revoked: bool = True
) -> list[TokenInfo]:
    stmt = (
        select(ApiToken, User.name)
        .outerjoin(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.id)
    )
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return [
        TokenInfo(t.id, t.role, name, t.label, t.created_at, t.expires_at, t.revoked_at)
        for t, name in await session.execute(stmt)
    ]


async def revoke_api_token(session: AsyncSession, ref: str, *, actor: str = "admin") -> list[int]:
    """Revoke a token by id or by label (every unrevoked token of that label).

    Returns the ids revoked; none found → NotFound. Revoking twice is a no-op
    that still names the token (its ``revoked_at`` stays the first one).
    """
    stmt = select(ApiToken)
    if ref.isdigit() and len(ref) <= 18:
        stmt = stmt.where(ApiToken.id == int(ref))
    else:
        stmt = stmt.where(ApiToken.label == ref)
    found = list((await session.scalars(stmt.order_by(ApiToken.id))).all())
    if not found:
        raise NotFound(f"no token with id or label {ref[:80]!r}")
    now = utcnow()
    revoked = []
    for token in found:
        if token.revoked_at is None:
            token.revoked_at = now
            events.record(
                session, subject_type="token", subject_id=token.id, actor=actor, reason="revoked"
            )
        revoked.append(token.id)
    await session.flush()
    return revoked
