"""Bearer-token authentication and role checks.

Handlers call ``require(request, *roles)`` first thing: no middleware, so an
unknown route is a 404 whether or not a token was sent, and ``/healthz`` needs
none. ``admin`` passes wherever a staff role does. The ``user`` role is the
only one bound to a person's data: handlers filter with ``Principal.user_name``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select

from billing.enums import Role
from billing.models import User
from proxy.exceptions import Forbidden, Unauthorized
from proxy.keys import READ_SESSIONS
from proxy.tokens import lookup_api_token

STAFF = frozenset({Role.ADMIN, Role.ACCOUNTS_EDITOR, Role.TICKET_OPERATOR})
# Who may read print-out history and accounts (the user role: its own only).
READERS = (Role.ADMIN, Role.ACCOUNTS_EDITOR, Role.TICKET_OPERATOR, Role.USER)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token and, when bound to one, its user."""

    token_id: int
    role: Role
    user_id: int | None
    user_name: str | None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF

    @property
    def own_data_only(self) -> bool:
        return self.role is Role.USER

    def describe(self) -> str:
        """The actor written into events and ledger rows."""
        who = self.user_name if self.user_name is not None else f"token-{self.token_id}"
        return f"api:{self.role.value}:{who}"


def allowed(role: Role, roles: tuple[Role, ...]) -> bool:
    return role in roles or (role is Role.ADMIN and any(r in STAFF for r in roles))


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("missing Authorization: Bearer token")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:  # the scheme is case-insensitive
        raise Unauthorized("malformed Authorization header; expected 'Bearer TOKEN'")
    return token


async def authenticate(request: web.Request) -> Principal:
    """The request's principal: 401 for a missing, malformed, unknown, revoked or
    expired token, and for a token whose user is disabled or deleted."""
    token = _bearer(request)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await lookup_api_token(session, token)
        if found is None:
            raise Unauthorized("invalid, revoked or expired token")
        user_name = None
        if found.user_id is not None:
            # A disabled or deleted user's tokens stop working at once.
            user_name = await session.scalar(
                select(User.name).where(
                    User.id == found.user_id, User.active.is_(True), User.deleted_at.is_(None)
                )
            )
            if user_name is None:
                raise Unauthorized("the token's user is disabled or deleted")
    if found.role == Role.USER.value and user_name is None:
        raise Unauthorized("token of role 'user' is not bound to an existing user")
    return Principal(
        token_id=found.id, role=Role(found.role), user_id=found.user_id, user_name=user_name
    )


async def require(request: web.Request, *roles: Role) -> Principal:
    """Authenticate and check the role: 401 without a valid token, 403 for a wrong role."""
    if not roles:
        raise ValueError("require() needs at least one role")  # a bug in the handler
    principal = await authenticate(request)
    if not allowed(principal.role, roles):
        raise Forbidden(f"role {principal.role.value!r} may not do this")
    return principal
