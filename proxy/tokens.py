"""API and reader tokens: random secrets shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.accounts import user_by_name
from billing.enums import Role
from billing.models import ApiToken

from .exceptions import BadRequest, NotFound

TOKEN_PREFIX = "pp_"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_hash(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


async def create_api_token(
    session: AsyncSession, role: str, *, user: str | None = None, label: str | None = None
) -> str:
    """Create a token with ``role`` (``user`` role needs ``user``); returns the secret."""
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
    session.add(
        ApiToken(token_hash=hash_token(secret), role=parsed.value, user_id=user_id, label=label)
    )
    await session.flush()
    return secret


async def lookup_api_token(session: AsyncSession, token: str) -> ApiToken | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    found = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if found is None or found.revoked_at is not None:
        return None
    return found
