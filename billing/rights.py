"""Rights to charge (SPEC §3): the ``delegate`` right and accounts' access lists.

What these functions store, ``proxy.pipeline.resolve`` checks at every job
and every registered delegation. Each change is an event with its actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import events
from .accounts import find_account, find_groups, split_shared_path, user_by_name
from .enums import AccountType
from .exceptions import InvalidInput, NotFound
from .models import (
    Account,
    Group,
    User,
    account_access_groups,
    account_access_users,
    group_members,
)

GROUP_MARK = "@"
"""In an access list, ``@sales`` names the group sales (every member)."""


def open_to(user_id: int | None) -> ColumnElement[bool]:
    """The accounts whose access lists let ``user_id`` charge them: open ones,
    and restricted ones that list her or a group she is in (None, no user:
    open ones only). The only place the rule is written: the resolver checks
    with it, the delegate form suggests with it."""
    if user_id is None:
        return Account.access_restricted.is_(False)
    her_groups = select(group_members.c.group_id).where(group_members.c.user_id == user_id)
    return or_(
        Account.access_restricted.is_(False),
        Account.id.in_(
            select(account_access_users.c.account_id).where(
                account_access_users.c.user_id == user_id
            )
        ),
        Account.id.in_(
            select(account_access_groups.c.account_id).where(
                account_access_groups.c.group_id.in_(her_groups)
            )
        ),
    )


async def set_user_delegate(session: AsyncSession, name: str, on: bool, *, actor: str) -> User:
    """Grant (``on``) or withdraw the user's own ``delegate`` right."""
    user = await user_by_name(session, name)
    if user is None:
        raise NotFound(f"unknown user {name!r}")
    if user.can_delegate != on:
        user.can_delegate = on
        events.record(
            session,
            subject_type="user",
            subject_id=user.name,
            actor=actor,
            reason="delegate-granted" if on else "delegate-withdrawn",
        )
    await session.flush()
    return user


async def set_group_delegate(session: AsyncSession, name: str, on: bool, *, actor: str) -> Group:
    """Grant or withdraw the ``delegate`` right of every member of the group."""
    group = await session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"unknown group {name!r}")
    if group.can_delegate != on:
        group.can_delegate = on
        events.record(
            session,
            subject_type="group",
            subject_id=group.name,
            actor=actor,
            reason="delegate-granted" if on else "delegate-withdrawn",
        )
    await session.flush()
    return group


async def find_chargeable(session: AsyncSession, ref: str) -> Account:
    """A shared account by path, or a group account as ``group:NAME``.

    ``shared:PATH`` is accepted too. Personal accounts have no access list.
    """
    kind, sep, name = ref.partition(":")
    type_ = AccountType.SHARED
    if sep and kind in (AccountType.GROUP.value, AccountType.SHARED.value):
        type_ = AccountType(kind)
    else:
        name = ref
    if type_ is AccountType.SHARED:
        split_shared_path(name)  # InvalidInput for a malformed path
    account = await find_account(session, type_, name)
    if account is None:
        raise NotFound(f"unknown {type_.value} account {name!r}")
    return account


@dataclass(frozen=True)
class Access:
    """An account's access list: ``restricted`` False = open."""

    restricted: bool
    users: tuple[str, ...]
    groups: tuple[str, ...]

    def describe(self) -> str:
        if not self.restricted:
            return "open"
        names = [*self.users, *(GROUP_MARK + g for g in self.groups)]
        return "restricted to " + (", ".join(names) if names else "no one")


async def access_of(session: AsyncSession, account: Account) -> Access:
    users = await session.scalars(
        select(User.name)
        .join(account_access_users, account_access_users.c.user_id == User.id)
        .where(account_access_users.c.account_id == account.id)
        .order_by(User.name)
    )
    groups = await session.scalars(
        select(Group.name)
        .join(account_access_groups, account_access_groups.c.group_id == Group.id)
        .where(account_access_groups.c.account_id == account.id)
        .order_by(Group.name)
    )
    return Access(bool(account.access_restricted), tuple(users), tuple(groups))


async def set_access(
    session: AsyncSession, account: Account, entries: Sequence[str] | None, *, actor: str
) -> Access:
    """Restrict ``account`` to ``entries`` (``alice``, ``@sales``), or open it (None).

    The list given replaces the old one. Opening keeps no list.
    """
    if account.type == AccountType.USER.value:
        raise InvalidInput("a personal account has no access list")
    await session.execute(
        delete(account_access_users).where(account_access_users.c.account_id == account.id)
    )
    await session.execute(
        delete(account_access_groups).where(account_access_groups.c.account_id == account.id)
    )
    if entries is None:
        account.access_restricted = False
    else:
        user_names = [e for e in dict.fromkeys(entries) if not e.startswith(GROUP_MARK)]
        group_names = [e[1:] for e in dict.fromkeys(entries) if e.startswith(GROUP_MARK)]
        if any(not n for n in group_names):
            raise InvalidInput("an access list entry '@' needs a group name")
        users = (await session.scalars(select(User).where(User.name.in_(user_names)))).all()
        missing = set(user_names) - {u.name for u in users}
        if missing:
            raise NotFound(f"unknown user(s): {', '.join(sorted(missing))}")
        for user in users:
            await session.execute(
                account_access_users.insert().values(account_id=account.id, user_id=user.id)
            )
        for group in await find_groups(session, group_names):
            await session.execute(
                account_access_groups.insert().values(account_id=account.id, group_id=group.id)
            )
        account.access_restricted = True
    await session.flush()
    access = await access_of(session, account)
    events.record(
        session,
        subject_type="account",
        subject_id=account.id,
        actor=actor,
        reason="access-changed",
        message=f"{account.type} account {account.path}: {access.describe()}",
        data={"users": list(access.users), "groups": list(access.groups)},
    )
    return access
