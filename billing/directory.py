"""Administration of users, groups and accounts: list, show, edit, disable, delete.

Domain functions (a session in, never a commit). Delete is soft: the row, its
ledger and its events stay; ``deleted_at`` is set and the user, group or
account stops working (tokens 401, cards unknown, no new charges). Every
change is an event naming its actor and, for edits, each field's old and new
value (``data = {"field": [old, new]}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import events
from .db import utcnow
from .enums import AccountType
from .exceptions import InvalidInput, NotFound
from .models import Account, Group, User, group_members
from .money import parse_amount


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def record_change(
    session: AsyncSession,
    subject_type: str,
    subject_id: int | str,
    *,
    actor: str,
    reason: str,
    changes: Mapping[str, tuple[Any, Any]] | None = None,
    message: str | None = None,
) -> None:
    """One event for an administrative change (``changes``: field -> (old, new))."""
    data = None
    if changes:
        data = {k: [_plain(old), _plain(new)] for k, (old, new) in changes.items()}
    events.record(
        session,
        subject_type=subject_type,
        subject_id=subject_id,
        actor=actor,
        reason=reason,
        message=message,
        data=data,
    )


def apply_changes(row: Any, wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set the attributes that differ; returns them as field -> (old, new)."""
    changed: dict[str, tuple[Any, Any]] = {}
    for field, value in wanted.items():
        old = getattr(row, field)
        if old != value:
            setattr(row, field, value)
            changed[field] = (old, value)
    return changed


# --- users -----------------------------------------------------------------------

USER_FIELDS = frozenset({"email", "full_name"})


async def get_user(session: AsyncSession, name: str, *, deleted: bool = False) -> User:
    """The user ``name`` (NotFound if missing, or deleted unless ``deleted``)."""
    user = await session.scalar(select(User).where(User.name == name))
    if user is None or (user.deleted_at is not None and not deleted):
        raise NotFound(f"unknown user {str(name)[:255]!r}")
    return user


async def list_users(session: AsyncSession, *, deleted: bool = False) -> list[User]:
    stmt = select(User).order_by(User.name)
    if not deleted:
        stmt = stmt.where(User.deleted_at.is_(None))
    return list((await session.scalars(stmt)).all())


async def groups_of_users(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {uid: [] for uid in user_ids}
    if user_ids:
        rows = await session.execute(
            select(group_members.c.user_id, Group.name)
            .join(Group, Group.id == group_members.c.group_id)
            .where(group_members.c.user_id.in_(list(user_ids)))
            .order_by(Group.name)
        )
        for uid, name in rows:
            out[uid].append(name)
    return out


async def edit_user(
    session: AsyncSession, name: str, wanted: Mapping[str, Any], *, actor: str
) -> User:
    """Change ``email`` / ``full_name`` (None clears); one event with the changes."""
    unknown = set(wanted) - USER_FIELDS
    if unknown:
        raise InvalidInput(f"user fields {sorted(unknown)} cannot be edited")
    for field, value in wanted.items():
        longest = 320 if field == "email" else 255
        if value is not None and (not isinstance(value, str) or len(value) > longest):
            raise InvalidInput(f"user {field} must be a string of at most {longest} characters")
    user = await get_user(session, name)
    changed = apply_changes(user, {k: (v or None) for k, v in wanted.items()})
    if changed:
        record_change(session, "user", user.name, actor=actor, reason="updated", changes=changed)
    await session.flush()
    return user


async def set_user_active(session: AsyncSession, name: str, active: bool, *, actor: str) -> User:
    """Enable or disable a user: a disabled user's tokens answer 401, her cards 404,
    and she cannot be charged for new jobs (existing ones stay)."""
    user = await get_user(session, name)
    if user.active != active:
        user.active = active
        record_change(
            session,
            "user",
            user.name,
            actor=actor,
            reason="enabled" if active else "disabled",
            changes={"active": (not active, active)},
        )
        await session.flush()
    return user


async def delete_user(session: AsyncSession, name: str, *, actor: str) -> User:
    """Soft delete: the user, her account and history stay; she is disabled for good."""
    user = await get_user(session, name)
    now = utcnow()
    user.deleted_at = now
    user.active = False
    account = await session.scalar(select(Account).where(Account.user_id == user.id))
    if account is not None:
        account.active = False
        account.deleted_at = now
    record_change(session, "user", user.name, actor=actor, reason="deleted")
    await session.flush()
    return user


# --- groups ----------------------------------------------------------------------


async def get_group(session: AsyncSession, name: str, *, deleted: bool = False) -> Group:
    group = await session.scalar(select(Group).where(Group.name == name))
    if group is None or (group.deleted_at is not None and not deleted):
        raise NotFound(f"unknown group {str(name)[:255]!r}")
    return group


async def list_groups(session: AsyncSession, *, deleted: bool = False) -> list[Group]:
    stmt = select(Group).order_by(Group.name)
    if not deleted:
        stmt = stmt.where(Group.deleted_at.is_(None))
    return list((await session.scalars(stmt)).all())


async def group_member_names(session: AsyncSession, group_id: int) -> list[str]:
    rows = await session.scalars(
        select(User.name)
        .join(group_members, group_members.c.user_id == User.id)
        .where(group_members.c.group_id == group_id)
        .order_by(User.name)
    )
    return list(rows)


async def edit_group_members(
    session: AsyncSession,
    name: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    actor: str,
) -> Group:
    """Add and remove members (unknown users → NotFound; already in/out: no-op)."""
    group = await get_group(session, name)
    current = set(await group_member_names(session, group.id))
    added = [n for n in dict.fromkeys(add) if n not in current]
    removed = [n for n in dict.fromkeys(remove) if n in current]
    for user_name in added:
        user = await get_user(session, user_name)
        await session.execute(group_members.insert().values(group_id=group.id, user_id=user.id))
    for user_name in remove:
        await get_user(session, user_name, deleted=True)  # an unknown name is an error
    if removed:
        ids = select(User.id).where(User.name.in_(removed)).scalar_subquery()
        await session.execute(
            delete(group_members).where(
                group_members.c.group_id == group.id, group_members.c.user_id.in_(ids)
            )
        )
    if added or removed:
        record_change(
            session,
            "group",
            group.name,
            actor=actor,
            reason="members-changed",
            changes={"members": (sorted(current), sorted((current | set(added)) - set(removed)))},
        )
    await session.flush()
    return group


async def set_group_active(session: AsyncSession, name: str, active: bool, *, actor: str) -> Group:
    """A disabled group (and its account) cannot be charged for new jobs."""
    group = await get_group(session, name)
    if group.active != active:
        group.active = active
        account = await session.scalar(select(Account).where(Account.group_id == group.id))
        if account is not None:
            account.active = active
        record_change(
            session,
            "group",
            group.name,
            actor=actor,
            reason="enabled" if active else "disabled",
            changes={"active": (not active, active)},
        )
        await session.flush()
    return group


async def delete_group(session: AsyncSession, name: str, *, actor: str) -> Group:
    """Soft delete: the group's account and history stay; its members are released."""
    group = await get_group(session, name)
    now = utcnow()
    group.deleted_at, group.active = now, False
    account = await session.scalar(select(Account).where(Account.group_id == group.id))
    if account is not None:
        account.active, account.deleted_at = False, now
    members = await group_member_names(session, group.id)
    await session.execute(delete(group_members).where(group_members.c.group_id == group.id))
    record_change(
        session,
        "group",
        group.name,
        actor=actor,
        reason="deleted",
        changes={"members": (members, [])} if members else None,
    )
    await session.flush()
    return group


# --- accounts --------------------------------------------------------------------

ACCOUNT_FIELDS = frozenset({"credit_limit"})
LIMIT_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?", re.ASCII)


def parse_account_ref(ref: str) -> tuple[AccountType | None, str]:
    """``"type:name"`` → (type, name); a plain name → (None, name)."""
    kind, sep, rest = ref.partition(":")
    if sep:
        try:
            return AccountType(kind), rest
        except ValueError:
            pass
    return None, ref


async def find_accounts(session: AsyncSession, ref: str) -> list[Account]:
    """Accounts an API or CLI reference names: an id, ``type:name`` or a name.

    A plain name may match accounts of several types (user alice and shared
    alice): all of them are returned, the caller decides.
    """
    if ref.isdigit() and len(ref) <= 18:
        found = await session.get(Account, int(ref))
        return [found] if found is not None else []
    type_, name = parse_account_ref(ref)
    stmt = select(Account).where(Account.path == name.replace("\\", "/"))
    if type_ is not None:
        stmt = stmt.where(Account.type == type_.value)
    return list((await session.scalars(stmt.order_by(Account.id))).all())


async def get_account(session: AsyncSession, ref: str, *, deleted: bool = False) -> Account:
    """Exactly one account by id, ``type:name`` or name (ambiguous → InvalidInput)."""
    found = [a for a in await find_accounts(session, ref) if deleted or a.deleted_at is None]
    if not found:
        raise NotFound(f"unknown account {ref[:255]!r}")
    if len(found) > 1:
        kinds = ", ".join(f"{a.type}:{a.path}" for a in found)
        raise InvalidInput(f"account {ref!r} is ambiguous; name one of: {kinds}")
    return found[0]


def parse_credit_limit(value: Any) -> Decimal | None:
    """A credit limit: a non-negative decimal string, or None (unlimited)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput('credit_limit must be a decimal string such as "10.00", or null')
    amount = parse_amount(value, field="credit_limit")
    if amount < 0:
        raise InvalidInput("credit_limit must not be negative (10.00 lets a balance reach -10.00)")
    return amount


async def edit_account(
    session: AsyncSession, account: Account, wanted: Mapping[str, Any], *, actor: str
) -> Account:
    """Change an account's ``credit_limit`` (a Decimal or None); one event."""
    unknown = set(wanted) - ACCOUNT_FIELDS
    if unknown:
        raise InvalidInput(f"account fields {sorted(unknown)} cannot be edited")
    changed = apply_changes(account, wanted)
    if changed:
        record_change(
            session, "account", account.id, actor=actor, reason="updated", changes=changed
        )
    await session.flush()
    return account


async def set_account_active(
    session: AsyncSession, account: Account, active: bool, *, actor: str
) -> Account:
    if account.active != active:
        account.active = active
        record_change(
            session,
            "account",
            account.id,
            actor=actor,
            reason="enabled" if active else "disabled",
            changes={"active": (not active, active)},
        )
        await session.flush()
    return account


async def delete_account(session: AsyncSession, account: Account, *, actor: str) -> Account:
    """Soft delete a shared account (personal and group accounts go with their owner)."""
    if account.type != AccountType.SHARED.value:
        raise InvalidInput(
            f"{account.type} account {account.path!r} is deleted with its {account.type}"
        )
    now = utcnow()
    account.active, account.deleted_at = False, now
    record_change(session, "account", account.id, actor=actor, reason="deleted")
    await session.flush()
    return account
