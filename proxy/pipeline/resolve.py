"""Resolve a delegation (or a personal print) to accounts and weights.

And check the rights to charge (SPEC §3): the delegate must be a known,
active user; without the ``delegate`` right (her own, or one of her groups')
she charges only herself; other users only as ``[delegation] users`` allows;
a restricted group or shared account only when she is on its access list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import rights
from billing.accounts import split_shared_path
from billing.enums import AccountType
from billing.exceptions import InvalidInput
from billing.models import (
    Account,
    Group,
    User,
    group_members,
)

from ..config import DelegationConfig
from .delegation import (
    DelegationError,
    DelegationForbidden,
    DelegationRequest,
    Entry,
    UnknownDelegate,
)

MAX_COPIES = 9999


@dataclass(frozen=True)
class Share:
    account_id: int
    weight: int


def _clip(names: Iterable[str]) -> str:
    shown = sorted(set(names))
    text = ", ".join(shown[:5]) + (" …" if len(shown) > 5 else "")
    return text[:150]


async def _user_accounts(session: AsyncSession, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """name -> (user id, account id) of the active users among ``names``."""
    rows = await session.execute(
        select(User.name, User.id, Account.id)
        .join(Account, Account.user_id == User.id)
        .where(User.name.in_(names), User.active.is_(True))
    )
    return {name: (user_id, account_id) for name, user_id, account_id in rows}


async def _group_accounts(
    session: AsyncSession, names: Sequence[str]
) -> dict[str, tuple[int, int, bool]]:
    """name -> (group id, account id, access restricted)."""
    rows = await session.execute(
        select(Group.name, Group.id, Account.id, Account.access_restricted)
        .join(Account, Account.group_id == Group.id)
        .where(Group.name.in_(names), Account.active.is_(True))
    )
    return {name: (group_id, account_id, bool(r)) for name, group_id, account_id, r in rows}


@dataclass(frozen=True)
class _Delegate:
    user_id: int
    name: str
    account_id: int
    group_ids: frozenset[int]
    may_delegate: bool


async def _delegate(session: AsyncSession, name: str, *, groups: bool = True) -> _Delegate:
    """The delegate as a known, active user, else UnknownDelegate.

    ``groups``: also her groups and whether one gives the delegate right
    (what the rights checks of a delegation need; a personal print does not).
    """
    row = (
        await session.execute(
            select(User.id, User.active, User.can_delegate, Account.id)
            .join(Account, Account.user_id == User.id)
            .where(User.name == name)
        )
    ).first()
    if row is None or not row[1]:
        why = "is not a known user" if row is None else "is disabled"
        raise UnknownDelegate(
            f"the delegate {name[:40]!a} {why}; an admin adds (or enables) the user, "
            "then rechecks the job"
        )
    user_id, _, own_right, account_id = row
    found = (
        (
            await session.execute(
                select(Group.id, Group.can_delegate)
                .join(group_members, group_members.c.group_id == Group.id)
                .where(group_members.c.user_id == user_id)
            )
        ).all()
        if groups
        else []
    )
    return _Delegate(
        user_id=user_id,
        name=name,
        account_id=account_id,
        group_ids=frozenset(g for g, _ in found),
        may_delegate=bool(own_right) or any(bool(right) for _, right in found),
    )


async def _guest(session: AsyncSession, delegate: str, path: str, asked: bool) -> list[Share]:
    """An unknown user's job charged to the configured guest account."""
    if asked:
        raise DelegationForbidden(
            f"{delegate[:40]!a} is not a known user and prints on the guest account "
            f"{path} only: a delegation needs a known user with the delegate right"
        )
    account_id = await session.scalar(
        select(Account.id).where(
            Account.type == AccountType.SHARED.value,
            Account.path == path,
            Account.active.is_(True),
        )
    )
    if account_id is None:
        raise UnknownDelegate(
            f"{delegate[:40]!a} is not a known user and the guest "
            f"account {path} ([delegation] unknown_user) does not exist"
        )
    return [Share(account_id, 1)]


@dataclass
class _Charged:
    """Whom a delegation charges besides the delegate herself, for the rights check."""

    users: dict[int, str]  # user id -> name (other users)
    accounts: dict[int, tuple[str, bool]]  # group/shared account id -> (label, restricted)

    def labels(self) -> list[str]:
        return [*self.users.values(), *(label for label, _ in self.accounts.values())]


async def _check_rights(
    session: AsyncSession, who: _Delegate, charged: _Charged, policy: DelegationConfig
) -> None:
    """DelegationForbidden naming everything that is missing; None when allowed."""
    if not charged.users and not charged.accounts:
        return  # she charges only herself
    missing: list[str] = []
    if not who.may_delegate:
        missing.append(
            f"{who.name} lacks the delegate right (needed to charge {_clip(charged.labels())})"
        )
    if charged.users and policy.users == "none":
        missing.append(
            "no one may charge other users ([delegation] users = none): "
            + _clip(charged.users.values())
        )
    elif charged.users and policy.users == "same-group":
        sharing = set(
            await session.scalars(
                select(group_members.c.user_id).where(
                    group_members.c.user_id.in_(list(charged.users)),
                    group_members.c.group_id.in_(list(who.group_ids)),
                )
            )
        )
        outside = [name for uid, name in charged.users.items() if uid not in sharing]
        if outside:
            missing.append(
                f"{_clip(outside)} not in a group of {who.name}'s ([delegation] users = same-group)"
            )
    restricted = [aid for aid, (_, r) in charged.accounts.items() if r]
    if restricted:
        listed = set(
            await session.scalars(
                select(Account.id).where(Account.id.in_(restricted), rights.open_to(who.user_id))
            )
        )
        outside = [charged.accounts[aid][0] for aid in restricted if aid not in listed]
        if outside:
            missing.append(f"{who.name} is not on the access list of {_clip(outside)}")
    if missing:
        raise DelegationForbidden("; ".join(missing))


def _shared_path(name: str) -> str:
    try:
        parent, sub = split_shared_path(name)
    except InvalidInput as exc:
        raise DelegationError(f"shared-accounts: {exc}") from exc
    return parent if sub is None else f"{parent}/{sub}"


async def resolve(
    session: AsyncSession,
    request: DelegationRequest | None,
    delegate: str,
    *,
    policy: DelegationConfig | None = None,
    check_rights: bool = True,
) -> list[Share]:
    """Accounts and weights for a job; DelegationError names what is unknown.

    No delegation = a personal print: the delegate is the only delegator.
    One account named twice (say alice and a group alice is in) gets the sum.
    With ``check_rights`` (not for an admin replacing a held job's
    delegation), an unknown delegate raises UnknownDelegate and a delegation
    she may not make DelegationForbidden; names are resolved first, so an
    unknown name is ``delegation-invalid`` whatever the rights.
    """
    policy = policy or DelegationConfig()
    who: _Delegate | None = None
    if check_rights:
        guest = policy.guest_account
        try:
            who = await _delegate(session, delegate, groups=request is not None)
        except UnknownDelegate:
            if guest is None:
                raise
            return await _guest(session, delegate, guest, request is not None)
        if request is None:  # a personal print: her own account, no right needed
            return [Share(who.account_id, 1)]
    if request is None:
        request = DelegationRequest(users=(Entry(delegate, 1),))
    weights: dict[int, int] = {}
    charged = _Charged(users={}, accounts={})

    def other_user(user_id: int, name: str) -> None:
        if who is None or user_id != who.user_id:
            charged.users[user_id] = name

    def add(account_id: int, copies: int) -> None:
        weights[account_id] = weights.get(account_id, 0) + copies

    if request.users:
        found = await _user_accounts(session, [e.name for e in request.users])
        missing = [e.name for e in request.users if e.name not in found]
        if missing:
            raise DelegationError(f"delegators: unknown user(s) {_clip(missing)}")
        for e in request.users:
            user_id, account_id = found[e.name]
            other_user(user_id, e.name)
            add(account_id, e.copies)

    group_names = [e.name for e in (*request.groups, *request.group_members)]
    groups = await _group_accounts(session, group_names) if group_names else {}
    missing = [n for n in group_names if n not in groups]
    if missing:
        raise DelegationError(f"delegator groups: unknown group(s) {_clip(missing)}")
    for e in request.groups:
        _, account_id, restricted = groups[e.name]
        charged.accounts[account_id] = (f"group {e.name}", restricted)
        add(account_id, e.copies)
    for e in request.group_members:
        members = (
            await session.execute(
                select(User.id, User.name, Account.id)
                .join(User, Account.user_id == User.id)
                .join(group_members, group_members.c.user_id == User.id)
                .where(group_members.c.group_id == groups[e.name][0], User.active.is_(True))
                .order_by(User.name)
            )
        ).all()
        if not members:
            raise DelegationError(f"delegator-group-members: group {e.name} has no members")
        for user_id, name, account_id in members:
            other_user(user_id, name)
            add(account_id, e.copies)

    if request.shared:
        paths = {e.name: _shared_path(e.name) for e in request.shared}
        rows = await session.execute(
            select(Account.path, Account.id, Account.access_restricted).where(
                Account.type == AccountType.SHARED.value,
                Account.path.in_(set(paths.values())),
                Account.active.is_(True),
            )
        )
        by_path = {path: (account_id, bool(r)) for path, account_id, r in rows}
        missing = [n for n, p in paths.items() if p not in by_path]
        if missing:
            raise DelegationError(f"shared-accounts: unknown account(s) {_clip(missing)}")
        for e in request.shared:
            account_id, restricted = by_path[paths[e.name]]
            charged.accounts[account_id] = (f"shared account {paths[e.name]}", restricted)
            add(account_id, e.copies)

    total = sum(weights.values())
    if total > MAX_COPIES:
        raise DelegationError(f"delegation asks for {total} copies; the limit is {MAX_COPIES}")
    if who is not None:
        await _check_rights(session, who, charged, policy)
    return [Share(account_id, weight) for account_id, weight in weights.items()]
