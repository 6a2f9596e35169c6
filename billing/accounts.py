"""Users, groups and accounts: who can be charged.

Every user has a personal account, every group a group account; shared
accounts stand alone and may have one level of sub-accounts (``Parent/Sub``).
Names cannot contain the characters that the delegation options use as syntax.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .enums import AccountType
from .exceptions import Conflict, InvalidInput, NotFound
from .models import Account, Group, User, group_members

MAX_NAME = 255
_FORBIDDEN = re.compile(r"[,:=/\\\"']")


def validate_name(kind: str, name: str) -> str:
    """A clean, non-empty name without option syntax or control characters."""
    if not isinstance(name, str):
        raise InvalidInput(f"{kind} name must be a string")
    name = name.strip()
    if not name:
        raise InvalidInput(f"{kind} name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"{kind} name is longer than {MAX_NAME} characters")
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise InvalidInput(f"{kind} name {name!r} contains control characters")
    if _FORBIDDEN.search(name) or any(ch.isspace() for ch in name):
        raise InvalidInput(f"{kind} name {name!r} must not contain spaces or , : = / \\ quotes")
    return name


def split_shared_path(path: str) -> tuple[str, str | None]:
    """``"Events/Gala"`` → ``("Events", "Gala")``; also accepts PaperCut's ``\\``."""
    parts = re.split(r"[/\\]", path.strip())
    if len(parts) == 1:
        return validate_name("shared account", parts[0]), None
    if len(parts) == 2:
        return validate_name("shared account", parts[0]), validate_name("sub-account", parts[1])
    raise InvalidInput(f"shared account {path!r}: at most one level of sub-account")


async def _flush(session: AsyncSession, what: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc


async def create_user(
    session: AsyncSession,
    name: str,
    *,
    email: str | None = None,
    full_name: str | None = None,
    groups: Sequence[str] = (),
    external_id: str | None = None,
) -> User:
    name = validate_name("user", name)
    if await user_by_name(session, name) is not None:
        raise Conflict(f"user {name!r} already exists")
    found = await find_groups(session, groups)
    user = User(name=name, email=email, full_name=full_name, external_id=external_id)
    session.add(user)
    await _flush(session, f"user {name!r}")
    session.add(Account(type=AccountType.USER.value, name=name, path=name, user_id=user.id))
    for group in found:
        await session.execute(group_members.insert().values(group_id=group.id, user_id=user.id))
    await _flush(session, f"account of user {name!r}")
    return user


async def create_group(
    session: AsyncSession, name: str, *, external_id: str | None = None
) -> Group:
    name = validate_name("group", name)
    if await session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise Conflict(f"group {name!r} already exists")
    group = Group(name=name, external_id=external_id)
    session.add(group)
    await _flush(session, f"group {name!r}")
    session.add(Account(type=AccountType.GROUP.value, name=name, path=name, group_id=group.id))
    await _flush(session, f"account of group {name!r}")
    return group


async def create_shared_account(session: AsyncSession, path: str) -> Account:
    """Create ``Parent`` or ``Parent/Sub`` (the parent is created when missing)."""
    parent_name, sub_name = split_shared_path(path)
    parent = await find_account(session, AccountType.SHARED, parent_name)
    if sub_name is None:
        if parent is not None:
            raise Conflict(f"shared account {parent_name!r} already exists")
        parent = Account(type=AccountType.SHARED.value, name=parent_name, path=parent_name)
        session.add(parent)
        await _flush(session, f"shared account {parent_name!r}")
        return parent
    if parent is None:
        parent = Account(type=AccountType.SHARED.value, name=parent_name, path=parent_name)
        session.add(parent)
        await _flush(session, f"shared account {parent_name!r}")
    sub = Account(
        type=AccountType.SHARED.value,
        name=sub_name,
        path=f"{parent_name}/{sub_name}",
        parent_id=parent.id,
    )
    session.add(sub)
    await _flush(session, f"shared account {sub.path!r}")
    return sub


async def find_account(session: AsyncSession, type_: AccountType, path: str) -> Account | None:
    if type_ is AccountType.SHARED:
        parent, sub = split_shared_path(path)
        path = parent if sub is None else f"{parent}/{sub}"
    return await session.scalar(
        select(Account).where(Account.type == type_.value, Account.path == path)
    )


async def find_groups(session: AsyncSession, names: Iterable[str]) -> list[Group]:
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = (await session.scalars(select(Group).where(Group.name.in_(wanted)))).all()
    missing = set(wanted) - {g.name for g in found}
    if missing:
        raise NotFound(f"unknown group(s): {', '.join(sorted(missing))}")
    return list(found)


async def user_by_name(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def group_member_ids(session: AsyncSession, group_id: int) -> list[int]:
    rows = await session.scalars(
        select(group_members.c.user_id)
        .where(group_members.c.group_id == group_id)
        .order_by(group_members.c.user_id)
    )
    return list(rows)
