"""Resolve a delegation (or a personal print) to accounts and weights."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.accounts import split_shared_path
from billing.enums import AccountType
from billing.exceptions import InvalidInput
from billing.models import Account, Group, User, group_members

from .delegation import DelegationError, DelegationRequest, Entry

MAX_COPIES = 9999


@dataclass(frozen=True)
class Share:
    account_id: int
    weight: int


def _clip(names: Iterable[str]) -> str:
    shown = sorted(set(names))
    text = ", ".join(shown[:5]) + (" …" if len(shown) > 5 else "")
    return text[:150]


async def _user_accounts(session: AsyncSession, names: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(User.name, Account.id)
        .join(Account, Account.user_id == User.id)
        .where(User.name.in_(names), User.active.is_(True))
    )
    return {name: account_id for name, account_id in rows}


async def _group_accounts(
    session: AsyncSession, names: Sequence[str]
) -> dict[str, tuple[int, int]]:
    rows = await session.execute(
        select(Group.name, Group.id, Account.id)
        .join(Account, Account.group_id == Group.id)
        .where(Group.name.in_(names), Account.active.is_(True))
    )
    return {name: (group_id, account_id) for name, group_id, account_id in rows}


def _shared_path(name: str) -> str:
    try:
        parent, sub = split_shared_path(name)
    except InvalidInput as exc:
        raise DelegationError(f"shared-accounts: {exc}") from exc
    return parent if sub is None else f"{parent}/{sub}"


async def resolve(
    session: AsyncSession, request: DelegationRequest | None, delegate: str
) -> list[Share]:
    """Accounts and weights for a job; DelegationError names what is unknown.

    No delegation = a personal print: the delegate is the only delegator.
    One account named twice (say alice and a group alice is in) gets the sum.
    """
    if request is None:
        request = DelegationRequest(users=(Entry(delegate, 1),))
    weights: dict[int, int] = {}

    def add(account_id: int, copies: int) -> None:
        weights[account_id] = weights.get(account_id, 0) + copies

    if request.users:
        found = await _user_accounts(session, [e.name for e in request.users])
        missing = [e.name for e in request.users if e.name not in found]
        if missing:
            raise DelegationError(f"delegators: unknown user(s) {_clip(missing)}")
        for e in request.users:
            add(found[e.name], e.copies)

    group_names = [e.name for e in (*request.groups, *request.group_members)]
    groups = await _group_accounts(session, group_names) if group_names else {}
    missing = [n for n in group_names if n not in groups]
    if missing:
        raise DelegationError(f"delegator groups: unknown group(s) {_clip(missing)}")
    for e in request.groups:
        add(groups[e.name][1], e.copies)
    for e in request.group_members:
        members = await session.scalars(
            select(Account.id)
            .join(User, Account.user_id == User.id)
            .join(group_members, group_members.c.user_id == User.id)
            .where(group_members.c.group_id == groups[e.name][0], User.active.is_(True))
            .order_by(User.name)
        )
        member_accounts = list(members)
        if not member_accounts:
            raise DelegationError(f"delegator-group-members: group {e.name} has no members")
        for account_id in member_accounts:
            add(account_id, e.copies)

    if request.shared:
        paths = {e.name: _shared_path(e.name) for e in request.shared}
        rows = await session.execute(
            select(Account.path, Account.id).where(
                Account.type == AccountType.SHARED.value,
                Account.path.in_(set(paths.values())),
                Account.active.is_(True),
            )
        )
        by_path = {path: account_id for path, account_id in rows}
        missing = [n for n, p in paths.items() if p not in by_path]
        if missing:
            raise DelegationError(f"shared-accounts: unknown account(s) {_clip(missing)}")
        for e in request.shared:
            add(by_path[paths[e.name]], e.copies)

    total = sum(weights.values())
    if total > MAX_COPIES:
        raise DelegationError(f"delegation asks for {total} copies; the limit is {MAX_COPIES}")
    return [Share(account_id, weight) for account_id, weight in weights.items()]
