"""The local mirror of the synced members, and the sync's state rows.

Every synced member is a local user (``external_id`` = member id) in a local
group per company (``external_id`` = company id; the individual members' group
has ``INDIVIDUALS_ID``), so delegation and NFC cards work for them; users who
leave are deactivated. Local group names are the PaperCut names made valid
(``[Individual Member]`` -> ``[Individual_Member]``); the PaperCut names are
kept in the state row ``officernd-state/groups`` (which ``proxy.usersource``
reads too). The initial sync's marker is the state row ``officernd-sync/initial``.

``load_mirror`` reads what a run starts from (the mirror, the state rows, the
re-creations other workers hold); ``apply_mirror`` and ``save_state`` write
them back. They take a session and do not commit: ``run_sync`` is the boundary.
Apart from the PaperCut side because this is the only part of the sync that
touches local users and groups.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts
from billing.db import utcnow
from billing.enums import AccountType, OutboxStatus
from billing.exceptions import InvalidInput
from billing.models import Account, Group, OutboxItem, ScheduledRun, User, group_members
from billing.officernd.filter import DesiredUser
from billing.officernd.writes import RECREATE_KIND

__all__ = [
    "GROUPS_JOB",
    "GROUPS_PERIOD",
    "INDIVIDUALS_ID",
    "INITIAL_PERIOD",
    "SYNC_JOB",
    "Mirror",
    "MirrorResult",
    "apply_mirror",
    "group_map",
    "load_mirror",
    "local_group_name",
    "save_state",
]

SYNC_JOB = "officernd-sync"  # ScheduledRun(SYNC_JOB, "initial"): the initial sync's marker
INITIAL_PERIOD = "initial"
GROUPS_JOB = "officernd-state"  # ScheduledRun(GROUPS_JOB, "groups"): PaperCut group names
GROUPS_PERIOD = "groups"
INDIVIDUALS_ID = "officernd:individuals"
_LOCAL_BAD = re.compile(r"[\s,:=/\\\"']+")


def local_group_name(papercut_name: str) -> str:
    """A PaperCut group name made a valid local name: ``Acme Labs`` -> ``Acme_Labs``."""
    text = "".join(
        " " if unicodedata.category(ch)[0] == "C" else ch
        for ch in unicodedata.normalize("NFC", papercut_name)
    )
    name = _LOCAL_BAD.sub("_", text).strip("_")[: accounts.MAX_NAME - 20]
    return name or "company"


async def group_map(session: AsyncSession) -> dict[str, str]:
    """The PaperCut group name of each mirrored group, by its external id."""
    row = await session.scalar(
        select(ScheduledRun.summary).where(
            ScheduledRun.job == GROUPS_JOB, ScheduledRun.period == GROUPS_PERIOD
        )
    )
    groups = (row or {}).get("groups", {})
    return {str(k): str(v) for k, v in groups.items()} if isinstance(groups, dict) else {}


async def _former_groups(session: AsyncSession) -> set[str]:
    row = await session.scalar(
        select(ScheduledRun.summary).where(
            ScheduledRun.job == GROUPS_JOB, ScheduledRun.period == GROUPS_PERIOD
        )
    )
    former = (row or {}).get("former", [])
    return {str(g) for g in former} if isinstance(former, list) else set()


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def save_state(
    session: AsyncSession, job: str, period: str, summary: dict[str, Any], state: str
) -> None:
    """Upsert a ScheduledRun row used as a marker / small state."""
    insert = _insert(session)
    await session.execute(
        insert(ScheduledRun)
        .values(job=job, period=period, state=state, started_at=utcnow(), summary=summary)
        .on_conflict_do_update(
            index_elements=["job", "period"],
            set_={"state": state, "summary": summary, "finished_at": utcnow()},
        )
    )


@dataclass
class MirrorResult:
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    errors: list[str] = field(default_factory=list)


async def _ensure_groups(
    session: AsyncSession, needed: Mapping[str, str], result: MirrorResult
) -> dict[str, int]:
    """Local group id per external id (created when missing); ``needed``: ext -> PaperCut name.

    Created in bulk, each with its group account as ``accounts.create_group`` does.
    """
    rows = (await session.execute(select(Group.id, Group.name, Group.external_id))).all()
    by_ext = {str(r.external_id): int(r.id) for r in rows if r.external_id is not None}
    names = {str(r.name).casefold() for r in rows}
    new: list[tuple[str, str]] = []  # (local name, external id)
    for ext, papercut_name in sorted(needed.items()):
        if ext in by_ext:
            continue
        base = local_group_name(papercut_name)
        tail = re.sub(r"[^A-Za-z0-9]", "", ext)
        for name in (base, f"{base}-{tail[-8:]}", f"{base}-{tail}"):
            if name.casefold() not in names:
                break
        try:
            name = accounts.validate_name("group", name)
        except InvalidInput as exc:
            result.errors.append(f"local group {papercut_name!r}: {exc}")
            continue
        names.add(name.casefold())
        new.append((name, ext))
    if new:
        # Core, not the unit of work: one multi-row INSERT per page instead of one per row.
        inserted = await session.execute(
            insert(Group).returning(Group.id, Group.external_id),
            [{"name": name, "external_id": ext} for name, ext in new],
        )
        created = {str(ext): int(gid) for gid, ext in inserted.all()}
        await session.execute(
            insert(Account),
            [
                {
                    "type": AccountType.GROUP.value,
                    "name": name,
                    "path": name,
                    "group_id": created[ext],
                }
                for name, ext in new
            ],
        )
        by_ext.update(created)
    return by_ext


async def apply_mirror(  # noqa: PLR0912 (one pass over users: create, update, leave; each branch one field)
    session: AsyncSession,
    desired: Sequence[DesiredUser],
    leaving: Collection[str],
    groups: Mapping[str, str],
) -> MirrorResult:
    """Make the local users and groups mirror the synced members (no commit).

    ``desired``: the members now in PaperCut as wanted; ``leaving``: member ids
    whose users are gone (deactivated, out of their synced groups);
    ``groups``: external id -> PaperCut group name of every group needed.
    A local user with the same name and no link is adopted. New users and
    groups are inserted in bulk, each with its personal / group account, as
    ``billing.accounts.create_user`` / ``create_group`` make them.
    """
    result = MirrorResult()
    group_ids = await _ensure_groups(session, groups, result)
    managed = set(group_ids.values())
    users = list(await session.scalars(select(User)))
    by_ext = {u.external_id: u for u in users if u.external_id is not None}
    leaving_set = set(leaving)
    by_name = {u.name.casefold(): u for u in users}
    current: dict[int, set[int]] = {}
    if managed:
        rows = await session.execute(
            select(group_members.c.user_id, group_members.c.group_id).where(
                group_members.c.group_id.in_(managed)
            )
        )
        for user_id, group_id in rows.all():
            current.setdefault(int(user_id), set()).add(int(group_id))
    created: list[tuple[str, DesiredUser, int | None]] = []  # (name, member, group id)
    adds: list[dict[str, int]] = []
    drops: list[tuple[int, set[int]]] = []
    for want in desired:
        target = group_ids.get(INDIVIDUALS_ID if want.company_id is None else want.company_id)
        user = by_ext.get(want.member_id)
        if user is None:
            user = by_name.get(want.username.casefold())
            if user is not None and user.external_id is not None:
                if user.external_id not in leaving_set:
                    result.errors.append(f"local user {user.name!r} belongs to another member")
                    continue
                by_ext.pop(user.external_id, None)  # the name passes to the new member
                leaving_set.discard(user.external_id)
            if user is None:
                try:
                    name = accounts.validate_name("user", want.username)
                except InvalidInput as exc:
                    result.errors.append(f"local user {want.username!r}: {exc}")
                    continue
                created.append((name, want, target))
                continue
            user.external_id = want.member_id
            by_ext[want.member_id] = user
            result.updated += 1
        elif (user.email or "", user.full_name or "", user.active) != (
            want.email,
            want.full_name,
            True,
        ):
            result.updated += 1
        if (user.email or "") != want.email:
            user.email = want.email or None
        if (user.full_name or "") != want.full_name:
            user.full_name = want.full_name or None
        if not user.active:
            user.active = True
        have = current.get(user.id, set())
        if target is not None and target not in have:
            adds.append({"user_id": user.id, "group_id": target})
        extra = have - {target} if target is not None else set()
        if extra:
            drops.append((user.id, extra))
    for member_id in leaving_set:
        user = by_ext.get(member_id)
        if user is None:
            continue
        if user.active:
            user.active = False
            result.deactivated += 1
        if current.get(user.id):
            drops.append((user.id, current[user.id]))
    await session.flush()
    if created:
        # Core, not the unit of work: one multi-row INSERT per page instead of one per row.
        rows = await session.execute(
            insert(User).returning(User.id, User.name),
            [
                {
                    "name": name,
                    "email": want.email or None,
                    "full_name": want.full_name or None,
                    "external_id": want.member_id,
                    "active": True,
                }
                for name, want, _ in created
            ],
        )
        ids = {str(name): int(uid) for uid, name in rows.all()}
        await session.execute(
            insert(Account),
            [
                {"type": AccountType.USER.value, "name": name, "path": name, "user_id": ids[name]}
                for name, _, _ in created
            ],
        )
        adds += [{"user_id": ids[n], "group_id": g} for n, _, g in created if g is not None]
        result.created = len(created)
    for user_id, gids in drops:
        await session.execute(
            delete(group_members).where(
                group_members.c.user_id == user_id, group_members.c.group_id.in_(gids)
            )
        )
    if adds:
        await session.execute(group_members.insert(), adds)
    return result


# --- what a run starts from -------------------------------------------------------------


@dataclass
class Mirror:
    links: dict[str, str]  # member id -> user name (every linked local user)
    users: dict[str, tuple[str, str, bool]]  # member id -> (email, full name, active)
    unlinked_names: set[str]  # local users without a link
    groups: dict[str, str]  # PaperCut group names by external id (last sync)
    former_groups: set[str]
    initial_done: bool
    initial_token: str | None
    held: set[str]  # users (casefold) with a re-creation another worker holds


async def load_mirror(session: AsyncSession) -> Mirror:
    """What a run starts from: the mirror, the state rows, the re-creations held."""
    rows = (
        await session.execute(
            select(User.name, User.external_id, User.email, User.full_name, User.active)
        )
    ).all()
    links: dict[str, str] = {}
    users: dict[str, tuple[str, str, bool]] = {}
    unlinked: set[str] = set()
    for name, ext, email, full_name, active in rows:
        if ext is None:
            unlinked.add(str(name))
            continue
        links[str(ext)] = str(name)
        users[str(ext)] = (email or "", full_name or "", bool(active))
    initial = (
        await session.execute(
            select(ScheduledRun.state, ScheduledRun.summary).where(
                ScheduledRun.job == SYNC_JOB, ScheduledRun.period == INITIAL_PERIOD
            )
        )
    ).first()
    token = None
    if initial is not None and isinstance(initial.summary, dict):
        token = initial.summary.get("token")
    held_rows = await session.scalars(
        select(OutboxItem.payload).where(
            OutboxItem.kind == RECREATE_KIND,
            OutboxItem.status == int(OutboxStatus.PENDING),
        )
    )
    return Mirror(
        links=links,
        users=users,
        unlinked_names=unlinked,
        groups=await group_map(session),
        former_groups=await _former_groups(session),
        initial_done=initial is not None and initial.state == "done",
        initial_token=str(token) if token else None,
        held={str(p.get("user", "")).casefold() for p in held_rows},
    )
