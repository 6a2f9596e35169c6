"""OfficeRnD -> PaperCut member sync, and the local mirror of the synced members.

Companies become PaperCut groups, their members users in those groups,
individual members users in ``[Individual Member]`` (``billing.officernd.filter``
decides who and under which names).

Initial sync (until one has finished; ``initial=True`` forces it):

* PaperCut has no users: every wanted member is created
  (``addNewInternalUser`` + group), the groups first.
* PaperCut has users (the "second flow"): each PaperCut user is matched to an
  OfficeRnD member (our mirror's link, the member's e-mail as the user name,
  the fallback name, or the user's ``email`` property). Matched but not wanted
  -> deleted. Matched and wanted -> **re-created**, keeping its user name and
  balance (everything else is reset). Not matched -> moved to
  ``UNLINKED_MEMBERS_TO_OFFICERND`` (out of every other group). Wanted members
  without a user are created.

  A re-creation is crash-safe: the balance is read and committed in an
  outbox row (kind ``officernd.recreate``, with a marker) *before* the user is
  deleted; after the delete the row is marked ``deleted`` (committed) before
  the user is created again; the balance comes back as an adjustment carrying
  the marker, sent only when PaperCut's transaction log does not have it yet.
  A crash anywhere leaves a pending row that the next sync (or the service's
  outbox worker) finishes first, so no balance is ever lost or restored twice.

Regular sync: the differences only. PaperCut's users and the members of the
groups we manage are read (paged lists, one call per group); names and
e-mails are compared with our mirror (what we last wrote to PaperCut), so an
unchanged run makes **no write call**. Then: missing users created, moved
members moved between groups, changed names/e-mails updated, users of members
no longer wanted (former members, excluded companies, deleted members)
deleted. PaperCut users we do not know are left alone (the initial sync put
them in the unlinked group). Groups are created when needed, never deleted.

PaperCut calls run concurrently, at most ``concurrency`` at once. Writes that
are safe to repeat (groups, memberships, properties) are retried; a create or
delete whose answer was lost is checked (``isUserExists``) before another try.

The mirror: every synced member is a local user (``external_id`` = member id)
in a local group per company (``external_id`` = company id; the individual
members' group has ``officernd:individuals``), so delegation and NFC cards
work for them; users who leave are deactivated. Local group names are the
PaperCut names made valid (``[Individual Member]`` -> ``[Individual_Member]``);
the PaperCut names are kept in the state row ``officernd-state/groups``
(which ``proxy.usersource`` reads too).

Transactions: ``run_sync`` is a boundary (like a worker loop): it commits the
intents before acting and the mirror, state and event at the end;
``apply_mirror`` takes a session and does not commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, events, outbox
from billing.db import utcnow
from billing.enums import AccountType, OutboxStatus
from billing.exceptions import BillingError, InvalidInput
from billing.models import Account, Group, OutboxItem, ScheduledRun, User, group_members
from billing.officernd.client import OfficeRnDClient
from billing.officernd.fees import (
    MAX_ERRORS,
    AdjustmentCheck,
    DrainResult,
    claim_kind,
    drain,
    intent_key,
    new_marker,
    run_items,
)
from billing.officernd.filter import (
    INDIVIDUAL_GROUP,
    UNLINKED_GROUP,
    DesiredUser,
    MemberFilter,
    email_user_name,
    fallback_user_name,
    group_names,
)
from billing.officernd.models import Company, Member, Plan
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError, PaperCutFault, PaperCutUnavailable

__all__ = [
    "GROUPS_JOB",
    "INDIVIDUALS_ID",
    "INITIAL_PERIOD",
    "RECREATE_KIND",
    "SYNC_JOB",
    "MirrorResult",
    "Recreator",
    "SyncSummary",
    "apply_mirror",
    "group_map",
    "link_members",
    "local_group_name",
    "run_sync",
]

log = logging.getLogger(__name__)

RECREATE_KIND = "officernd.recreate"
SYNC_JOB = "officernd-sync"  # ScheduledRun(SYNC_JOB, "initial"): the initial sync's marker
INITIAL_PERIOD = "initial"
GROUPS_JOB = "officernd-state"  # ScheduledRun(GROUPS_JOB, "groups"): PaperCut group names
GROUPS_PERIOD = "groups"
INDIVIDUALS_ID = "officernd:individuals"
DEFAULT_CONCURRENCY = 16
WRITE_ATTEMPTS = 6
WRITE_BACKOFF = 0.05  # seconds before the 1st retry of a write; doubles, at most 2 s
# PaperCut's built-in groups: never "moved out of".
BUILTIN_GROUPS = frozenset({"[all users]", "[internal users]"})
_LOCAL_BAD = re.compile(r"[\s,:=/\\\"']+")

Progress = Callable[[int, int], None]
T = TypeVar("T")


# --- the summary --------------------------------------------------------------------------


@dataclass
class SyncSummary:
    initial: bool = False
    second_flow: bool = False
    members: int = 0  # OfficeRnD members read
    wanted: int = 0  # members Member Management wants in PaperCut
    created: int = 0
    recreated: int = 0  # second flow: deleted and created again, balance kept
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unlinked: int = 0
    groups_created: int = 0
    skipped: int = 0  # users held by another worker's pending re-creation
    errors: int = 0
    error_details: list[str] = field(default_factory=list)
    removed_balances: dict[str, str] = field(default_factory=dict)
    mirror_created: int = 0
    mirror_updated: int = 0
    mirror_deactivated: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_details) < MAX_ERRORS:
            self.error_details.append(what)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        kind = (
            "initial (second flow)"
            if self.second_flow
            else ("initial" if self.initial else "regular")
        )
        return (
            f"sync {kind}: {self.wanted} of {self.members} members wanted; "
            f"created {self.created}, re-created {self.recreated}, updated {self.updated}, "
            f"moved {self.moved}, removed {self.removed}, unlinked {self.unlinked}, "
            f"groups created {self.groups_created}, errors {self.errors}"
        )


# --- PaperCut calls: bounded, with safe retries --------------------------------------------


class _PaperCut:
    """Every PaperCut call of a sync goes through here: at most ``concurrency`` at once."""

    def __init__(self, client: PaperCutClient, concurrency: int) -> None:
        self.client = client
        self.gate = asyncio.Semaphore(concurrency)

    async def read(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self.gate:  # the client retries reads itself
            return await call(*args)

    async def write(
        self,
        call: Callable[..., Awaitable[None]],
        *args: Any,
        done: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """A write that is safe to repeat, or whose effect ``done()`` can check.

        After a lost answer (``PaperCutUnavailable``) the write is retried,
        but first ``done()`` is asked whether it took effect; a fault after
        such an uncertain attempt is forgiven when ``done()`` says so.
        """
        uncertain = False
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self.gate:
                    await call(*args)
                return
            except PaperCutUnavailable as exc:
                if not exc.retryable or attempt == WRITE_ATTEMPTS:
                    raise
                uncertain = True
            except PaperCutFault:
                if uncertain and done is not None and await done():
                    return
                raise
            await asyncio.sleep(random.uniform(0.5, 1.0) * min(2.0, WRITE_BACKOFF * 2**attempt))
            if done is not None and await done():
                return

    async def exists(self, user: str) -> bool:
        return await self.read(self.client.is_user_exists, user)

    async def create_user(self, user: DesiredUser | dict[str, Any]) -> None:
        if isinstance(user, DesiredUser):
            name, full_name, email = user.username, user.full_name, user.email
        else:
            name, full_name, email = str(user["user"]), str(user["full_name"]), str(user["email"])

        async def created() -> bool:
            return await self.exists(name)

        async def create(name: str) -> None:
            # A random password: members sign in through the user directory, not with it.
            await self.client.add_new_internal_user(
                name, secrets.token_urlsafe(24), full_name=full_name, email=email
            )

        await self.write(create, name, done=created)

    async def delete_user(self, name: str) -> None:
        async def gone() -> bool:
            return not await self.exists(name)

        await self.write(self.client.delete_existing_user, name, done=gone)

    async def add_to_group(self, name: str, group: str) -> None:
        await self.write(self.client.add_user_to_group, name, group)

    async def remove_from_group(self, name: str, group: str) -> None:
        await self.write(self.client.remove_user_from_group, name, group)


# --- re-creation (the second flow), crash-safe through the outbox --------------------------


class Recreator:
    """Outbox handler for ``officernd.recreate``: delete + create a user, balance kept.

    The payload: ``user``, ``full_name``, ``email``, ``group``, ``balance``
    (read before the delete), ``phase`` (``read`` until the delete is done and
    committed, then ``deleted``) and ``marker``. Every step checks PaperCut
    first, so running it again after a crash at any point finishes the job.
    Without ``applied`` (no PaperCut database), a restored balance is detected
    by the re-created user's balance no longer being zero.
    """

    kind = RECREATE_KIND

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        papercut: PaperCutClient,
        applied: AdjustmentCheck | None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        calls: _PaperCut | None = None,
    ) -> None:
        self.sessions = sessions
        self.pc = calls or _PaperCut(papercut, concurrency)
        self.applied = applied

    async def already_applied(self, item: OutboxItem) -> bool:
        return False  # ``apply`` checks every step itself

    async def _save(self, item_id: int, payload: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id)
                .values(payload=payload)
                .execution_options(synchronize_session=False)
            )

    async def _restored(self, payload: dict[str, Any]) -> bool:
        if self.applied is not None:
            return await self.applied(str(payload["marker"]))
        balance = await self.pc.read(self.pc.client.get_user_account_balance, str(payload["user"]))
        return balance != 0

    async def apply(self, item: OutboxItem) -> None:
        payload = dict(item.payload)
        user = str(payload["user"])
        first = item.attempts <= 1  # the balance was read just before the row was written
        try:
            exists = True if first else await self.pc.exists(user)
            if payload["phase"] != "deleted":
                if exists:
                    if not first:  # a later attempt: the balance now is the one to keep
                        balance = await self.pc.read(self.pc.client.get_user_account_balance, user)
                        payload["balance"] = f"{balance:f}"
                    await self.pc.delete_user(user)
                    exists = False
                payload["phase"] = "deleted"
                await self._save(item.id, payload)
            if not exists:
                await self.pc.create_user(payload)
            await self.pc.add_to_group(user, str(payload["group"]))
            balance = Decimal(str(payload["balance"]))
            if balance != 0 and not (not first and await self._restored(payload)):
                await self.pc.client.adjust_user_account_balance(
                    user, balance, str(payload["comment"])
                )
        except PaperCutError as exc:
            raise outbox.Retry(f"re-creating {user}: {exc}") from exc
        except (BillingError, ValueError) as exc:
            raise outbox.GiveUp(f"re-creating {user}: {exc}") from exc


# --- matching PaperCut users to members ------------------------------------------------------


def link_members(
    members: Iterable[Member],
    mirror: Mapping[str, str],
    candidates: Iterable[str],
    emails: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Member id -> the existing user name that belongs to it.

    ``mirror``: our links (member id -> local user name), kept for members
    OfficeRnD still has. Then each other candidate name (PaperCut users,
    local users without a link) belongs to the member whose e-mail it is,
    whose fallback name it is, or (``emails``: user -> its e-mail in
    PaperCut) whose e-mail the user has; the lowest member id wins a tie.
    """
    ordered = sorted(members, key=lambda m: m.id)
    ids = {m.id for m in ordered}
    links = {mid: name for mid, name in mirror.items() if mid in ids}
    linked = {name.casefold() for name in links.values()}
    by_name: dict[str, str] = {}
    by_email: dict[str, str] = {}
    for member in ordered:
        if member.id in links:
            continue
        as_email = email_user_name(member.email)
        if as_email is not None:
            by_name.setdefault(as_email.casefold(), member.id)
        for fallback in (fallback_user_name(member), fallback_user_name(member, whole_id=True)):
            by_name.setdefault(fallback.casefold(), member.id)
        if member.email and member.email.strip():
            by_email.setdefault(member.email.strip().casefold(), member.id)
    for name in sorted(set(candidates)):
        key = name.casefold()
        if key in linked:
            continue
        mid = by_name.get(key)
        if mid is None and emails and emails.get(name):
            mid = by_email.get(emails[name].strip().casefold())
        if mid is not None and mid not in links:
            links[mid] = name
            linked.add(key)
    return links


# --- the local mirror --------------------------------------------------------------------------


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


async def _save_state(
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


async def apply_mirror(
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


# --- the sync ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Update:
    name: str  # as PaperCut has it
    want: DesiredUser
    props: bool  # full name / e-mail to set
    add: bool  # to add to its group
    drop: list[str]  # managed groups to leave
    moved: bool  # from another company's group


@dataclass
class _Mirror:
    links: dict[str, str]  # member id -> user name (every linked local user)
    users: dict[str, tuple[str, str, bool]]  # member id -> (email, full name, active)
    unlinked_names: set[str]  # local users without a link
    groups: dict[str, str]  # PaperCut group names by external id (last sync)
    former_groups: set[str]
    initial_done: bool
    initial_token: str | None
    held: set[str]  # users (casefold) with a re-creation another worker holds


async def _load_mirror(session: AsyncSession) -> _Mirror:
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
    return _Mirror(
        links=links,
        users=users,
        unlinked_names=unlinked,
        groups=await group_map(session),
        former_groups=await _former_groups(session),
        initial_done=initial is not None and initial.state == "done",
        initial_token=str(token) if token else None,
        held={str(p.get("user", "")).casefold() for p in held_rows},
    )


class _Run:
    """One sync run's state (see ``run_sync``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        papercut: PaperCutClient,
        applied: AdjustmentCheck | None,
        *,
        concurrency: int,
        progress: Progress | None,
        worker: str,
    ) -> None:
        self.sessions = sessions
        self.pc = _PaperCut(papercut, concurrency)
        self.recreator = Recreator(sessions, papercut, applied, calls=self.pc)
        self.concurrency = concurrency
        self.progress = progress
        self.worker = worker
        self.summary = SyncSummary()
        self.done = 0
        self.total = 0
        self.failed_members: set[str] = set()

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    async def guarded(self, what: str, member_id: str | None, action: Awaitable[None]) -> bool:
        try:
            await action
        except (PaperCutError, BillingError) as exc:
            self.summary.error(f"{what}: {exc}")
            if member_id is not None:
                self.failed_members.add(member_id)
            return False
        finally:
            self.tick()
        return True

    # --- PaperCut state ---------------------------------------------------------------

    async def memberships(
        self, pc_groups: Sequence[str], managed: set[str]
    ) -> dict[str, dict[str, str]]:
        """user (casefold) -> {group casefold: group name} over the managed groups."""
        ours = [g for g in pc_groups if g.casefold() in managed]
        lists = await asyncio.gather(
            *(self.pc.read(self.pc.client.all_group_members, g) for g in ours)
        )
        result: dict[str, dict[str, str]] = {}
        for group, names in zip(ours, lists, strict=True):
            for name in names:
                result.setdefault(name.casefold(), {})[group.casefold()] = group
        return result

    async def emails(self, names: Sequence[str]) -> dict[str, str]:
        async def one(name: str) -> tuple[str, str]:
            try:
                return name, await self.pc.read(self.pc.client.get_user_property, name, "email")
            except PaperCutFault:
                return name, ""

        return dict(await asyncio.gather(*(one(n) for n in names)))

    # --- actions --------------------------------------------------------------------------

    async def create(self, want: DesiredUser) -> None:
        await self.pc.create_user(want)
        await self.pc.add_to_group(want.username, want.group)

    async def update(
        self, name: str, want: DesiredUser, *, props: bool, add: bool, remove: Sequence[str]
    ) -> None:
        if props:
            await self.pc.write(
                self.pc.client.set_user_properties,
                name,
                {"full-name": want.full_name, "email": want.email},
            )
        if add:
            await self.pc.add_to_group(name, want.group)
        for group in remove:
            await self.pc.remove_from_group(name, group)

    async def remove(self, name: str) -> None:
        try:
            balance = await self.pc.read(self.pc.client.get_user_account_balance, name)
            self.summary.removed_balances[name] = f"{balance:f}"
        except PaperCutFault:
            return  # already gone
        await self.pc.delete_user(name)

    async def unlink(self, name: str) -> None:
        groups = await self.pc.read(self.pc.client.get_user_groups, name)
        for group in groups:
            if group.casefold() != UNLINKED_GROUP.casefold() and (
                group.casefold() not in BUILTIN_GROUPS
            ):
                await self.pc.remove_from_group(name, group)
        if UNLINKED_GROUP.casefold() not in {g.casefold() for g in groups}:
            await self.pc.add_to_group(name, UNLINKED_GROUP)

    # --- re-creations -------------------------------------------------------------------

    async def recreate_all(self, wants: Sequence[DesiredUser], token: str) -> set[str]:
        """Re-create ``wants`` (second flow) in batches; the member ids that succeeded."""
        ok: set[str] = set()
        batch = 4 * self.concurrency
        for start in range(0, len(wants), batch):
            chunk = wants[start : start + batch]
            balances = await asyncio.gather(
                *(self._balance(w) for w in chunk), return_exceptions=True
            )
            keys: dict[str, DesiredUser] = {}
            async with self.sessions() as session, session.begin():
                for want, balance in zip(chunk, balances, strict=True):
                    if isinstance(balance, BaseException):
                        self.summary.error(f"re-create {want.username}: {balance}")
                        self.failed_members.add(want.member_id)
                        self.tick()
                        continue
                    marker = new_marker()
                    key = intent_key(f"officernd:recreate:{token}", "user", want.username)
                    await outbox.enqueue(
                        session,
                        kind=RECREATE_KIND,
                        key=key,
                        payload={
                            "user": want.username,
                            "member_id": want.member_id,
                            "full_name": want.full_name,
                            "email": want.email,
                            "group": want.group,
                            "balance": f"{balance:f}",
                            "phase": "read",
                            "marker": marker,
                            "comment": f"OfficeRnD sync: balance kept on re-creation {marker}",
                        },
                    )
                    keys[key] = want
                ids = await claim_kind(
                    session,
                    RECREATE_KIND,
                    self.worker,
                    limit=len(keys),
                    keys=keys,
                    due_only=False,
                )
            await run_items(
                self.sessions,
                ids,
                self.recreator,
                worker=self.worker,
                concurrency=self.concurrency,
                retry_base=0.5,
            )
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        select(
                            OutboxItem.idempotency_key, OutboxItem.status, OutboxItem.last_error
                        ).where(OutboxItem.idempotency_key.in_(list(keys)))
                    )
                ).all()
            for key, status, error in rows:
                want = keys[key]
                if status == int(OutboxStatus.DONE):
                    ok.add(want.member_id)
                    self.summary.recreated += 1
                else:
                    self.summary.error(f"re-create {want.username}: {error or 'pending'}")
                    self.failed_members.add(want.member_id)
                self.tick()
        return ok

    async def _balance(self, want: DesiredUser) -> Decimal:
        return await self.pc.read(self.pc.client.get_user_account_balance, want.username)


async def _resume(run: _Run) -> DrainResult:
    """Finish re-creations a crashed run left (waiting retries included)."""
    return await drain(
        run.sessions,
        RECREATE_KIND,
        run.recreator,
        worker=run.worker,
        concurrency=run.concurrency,
        due_only=False,
        retry_base=0.5,
    )


def _managed(groups: Iterable[str]) -> set[str]:
    return {g.casefold() for g in groups} | {
        INDIVIDUAL_GROUP.casefold(),
        UNLINKED_GROUP.casefold(),
    }


async def run_sync(
    sessions: async_sessionmaker[AsyncSession],
    officernd: OfficeRnDClient,
    papercut: PaperCutClient,
    *,
    member_filter: MemberFilter,
    applied: AdjustmentCheck | None = None,
    initial: bool | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
    worker: str | None = None,
) -> SyncSummary:
    """One sync (see the module doc); the summary is also written as an event row.

    ``initial``: None = the initial flow until one has completed without
    errors, then regular syncs; True forces the initial flow; False forces a
    regular sync. ``applied`` checks PaperCut's transaction log for a marker
    (``printlog.adjustment_applied``); ``progress(done, total)`` is called as
    users are handled.
    """
    run = _Run(
        sessions,
        papercut,
        applied,
        concurrency=concurrency,
        progress=progress,
        worker=worker or f"sync-{uuid.uuid4().hex[:8]}",
    )
    summary = run.summary
    resumed = await _resume(run)
    summary.recreated += resumed.done
    for error in resumed.errors:
        summary.error(f"earlier re-creation: {error}")

    async with sessions() as session:
        mirror = await _load_mirror(session)
    known = _managed([*mirror.groups.values(), *mirror.former_groups])

    async def from_officernd() -> tuple[list[Member], list[Company], list[Plan]]:
        members, companies = await asyncio.gather(officernd.members(), officernd.companies())
        return members, companies, (await officernd.plans() if member_filter.plans else [])

    async def from_papercut() -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
        users, groups = await asyncio.gather(
            run.pc.read(papercut.all_user_accounts), run.pc.read(papercut.all_user_groups)
        )
        return users, groups, await run.memberships(groups, known)

    # OfficeRnD's pages come one after the other: PaperCut is read meanwhile.
    (members, companies, plans), (pc_users, pc_groups, member_of) = await asyncio.gather(
        from_officernd(), from_papercut()
    )
    summary.members = len(members)
    summary.initial = (not mirror.initial_done) if initial is None else initial
    summary.second_flow = summary.initial and bool(pc_users)
    pc_set = {u.casefold(): u for u in pc_users}

    company_groups = group_names(companies)
    managed = known | _managed(company_groups.values())
    for user, groups in (await run.memberships(pc_groups, managed - known)).items():
        member_of.setdefault(user, {}).update(groups)  # groups of companies new to us
    pc_group_set = {g.casefold() for g in pc_groups}

    emails: dict[str, str] = {}
    candidates = set(pc_users) | mirror.unlinked_names
    if summary.second_flow:
        prelinked = link_members(members, mirror.links, candidates)
        named = {n.casefold() for n in prelinked.values()}
        emails = await run.emails([u for u in pc_users if u.casefold() not in named])
    links = link_members(members, mirror.links, candidates, emails)
    linked_names = {n.casefold() for n in links.values()}
    reserved = {n for n in candidates if n.casefold() not in linked_names}
    reserved |= {n for mid, n in mirror.links.items() if mid not in links}
    wanted = member_filter.wanted(
        members, companies, plans=plans, existing=links, reserved=reserved
    )
    summary.wanted = len(wanted)
    by_member = {w.member_id: w for w in wanted.values()}
    member_ids = {m.id for m in members}
    # PaperCut users linked to a member (or to a member OfficeRnD no longer has, via the mirror)
    owner: dict[str, str] = {}
    for mid, name in [*mirror.links.items(), *links.items()]:  # current links win
        if name.casefold() in pc_set:
            owner[name.casefold()] = mid

    token = mirror.initial_token
    if summary.initial:
        if token is None or mirror.initial_done:
            token = uuid.uuid4().hex[:12]
        async with sessions() as session, session.begin():
            await _save_state(session, SYNC_JOB, INITIAL_PERIOD, {"token": token}, "started")
    done_recreations: set[str] = set()
    if summary.second_flow and token is not None:
        async with sessions() as session:
            done_recreations = {
                str(p.get("user", "")).casefold()
                for p in await session.scalars(
                    select(OutboxItem.payload).where(
                        OutboxItem.kind == RECREATE_KIND,
                        OutboxItem.status == int(OutboxStatus.DONE),
                        OutboxItem.idempotency_key.like(f"officernd:recreate:{token}:%"),
                    )
                )
            }

    # --- plan the actions ---
    creates: list[DesiredUser] = []
    recreates: list[DesiredUser] = []
    updates: list[_Update] = []
    removes: list[tuple[str, str]] = []
    unlinks: list[str] = []
    for name, want in wanted.items():
        key = name.casefold()
        if key in mirror.held:
            summary.skipped += 1
            continue
        if key not in pc_set:
            creates.append(want)
            continue
        if summary.second_flow and key not in done_recreations:
            recreates.append(want)
            continue
        have = member_of.get(key, {})
        add = want.group.casefold() not in have
        drop = [g for k, g in have.items() if k != want.group.casefold()]
        last = mirror.users.get(want.member_id)
        props = last is None or last != (want.email, want.full_name, True)
        if mirror.links.get(want.member_id, "").casefold() != key:
            props = True  # adopted: PaperCut's name and e-mail are not ours yet
        if add or drop or props:
            moved = add and any(k != UNLINKED_GROUP.casefold() for k in have)
            updates.append(_Update(pc_set[key], want, props, add, drop, moved))
    wanted_keys = {name.casefold() for name in wanted}
    for key, name in pc_set.items():
        if key in wanted_keys or key in mirror.held:
            continue
        owner_id = owner.get(key)
        if owner_id is not None and owner_id in by_member:
            continue  # the member is wanted under another name: leave this user be
        if summary.second_flow and (owner_id is None or owner_id not in member_ids):
            unlinks.append(name)  # no match in OfficeRnD
        elif owner_id is not None:
            removes.append((name, owner_id))

    needed_groups = {w.group for w in [*creates, *recreates]} | {
        u.want.group for u in updates if u.add
    }
    if unlinks:
        needed_groups.add(UNLINKED_GROUP)
    new_groups = sorted(g for g in needed_groups if g.casefold() not in pc_group_set)
    run.total = (
        len(new_groups) + len(creates) + len(recreates) + len(updates) + len(removes) + len(unlinks)
    )

    # --- carry them out: groups first, then users concurrently ---
    async def new_group(group: str) -> None:
        await run.pc.write(papercut.add_new_group, group)
        summary.groups_created += 1

    await asyncio.gather(*(run.guarded(f"group {g}", None, new_group(g)) for g in new_groups))

    async def do_create(want: DesiredUser) -> None:
        if await run.guarded(f"create {want.username}", want.member_id, run.create(want)):
            summary.created += 1

    async def do_update(u: _Update) -> None:
        action = run.update(u.name, u.want, props=u.props, add=u.add, remove=u.drop)
        if await run.guarded(f"update {u.name}", u.want.member_id, action):
            if u.moved:
                summary.moved += 1
            else:
                summary.updated += 1

    async def do_remove(name: str, mid: str) -> None:
        if await run.guarded(f"remove {name}", mid, run.remove(name)):
            summary.removed += 1

    async def do_unlink(name: str) -> None:
        if await run.guarded(f"unlink {name}", None, run.unlink(name)):
            summary.unlinked += 1

    async def do_recreate() -> None:
        if recreates and token is not None:
            await run.recreate_all(recreates, token)

    await asyncio.gather(
        do_recreate(),
        *(do_create(w) for w in creates),
        *(do_update(u) for u in updates),
        *(do_remove(n, m) for n, m in removes),
        *(do_unlink(n) for n in unlinks),
    )

    # --- the mirror, the state rows and the event, in one transaction ---
    in_papercut = [
        w
        for w in wanted.values()
        if w.member_id not in run.failed_members and w.username.casefold() not in mirror.held
    ]
    leaving = {
        mid for mid in mirror.links if mid not in by_member and mid not in run.failed_members
    }
    needed_ext = {
        (INDIVIDUALS_ID if w.company_id is None else w.company_id): w.group for w in in_papercut
    }
    all_groups = {**mirror.groups, **company_groups}
    all_groups[INDIVIDUALS_ID] = INDIVIDUAL_GROUP
    former = (mirror.former_groups | set(mirror.groups.values())) - set(all_groups.values())
    async with sessions() as session, session.begin():
        mirrored = await apply_mirror(session, in_papercut, leaving, needed_ext)
        summary.mirror_created = mirrored.created
        summary.mirror_updated = mirrored.updated
        summary.mirror_deactivated = mirrored.deactivated
        for error in mirrored.errors:
            summary.error(error)
        if all_groups != mirror.groups or former != mirror.former_groups:
            await _save_state(
                session,
                GROUPS_JOB,
                GROUPS_PERIOD,
                {"groups": all_groups, "former": sorted(former)},
                "done",
            )
        if summary.initial:
            state = "done" if summary.errors == 0 else "started"
            await _save_state(
                session, SYNC_JOB, INITIAL_PERIOD, {"token": token, **summary.as_dict()}, state
            )
        events.record(
            session,
            subject_type="officernd-sync",
            subject_id=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            actor="officernd",
            reason="initial" if summary.initial else "regular",
            message=summary.line(),
            data=summary.as_dict(),
        )
    log.info("%s", summary.line())
    return summary
