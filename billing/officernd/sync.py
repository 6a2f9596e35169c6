"""OfficeRnD -> PaperCut member sync: the flow of one run (``run_sync``).

Companies become PaperCut groups, their members users in those groups,
individual members users in ``[Individual Member]`` (``billing.officernd.filter``
decides who and under which names). With a ``plans`` filter the plans and the
memberships are read too: a member's plans are those of its current
memberships (``GET /memberships``; the member record has none).

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

  A re-creation is crash-safe through the outbox (kind ``officernd.recreate``):
  see ``billing.officernd.writes``.

Regular sync: the differences only. PaperCut's users and the members of the
groups we manage are read (paged lists, one call per group); names and
e-mails are compared with our mirror (what we last wrote to PaperCut), so an
unchanged run makes **no write call**. Then: missing users created, moved
members moved between groups, changed names/e-mails updated, users of members
no longer wanted (former members, excluded companies, deleted members)
deleted. PaperCut users we do not know are left alone (the initial sync put
them in the unlinked group). Groups are created when needed, never deleted.

Groups the way PaperCut allows (``addNewGroup`` only adds a group its user
directory source offers, in the background): before adding any, the run
writes its group map (every company group and ``[Individual Member]``), which
proxyprint's user-source program lists together with
``UNLINKED_MEMBERS_TO_OFFICERND``; it then asks PaperCut to run its user/group
sync (``performUserAndGroupSync``), waits on ``getTaskStatus``, adds the
groups, waits again and checks each exists. A group PaperCut would not add
fails the run with ``PaperCutSetupError`` naming the set-up (PaperCut's
directory source must be the user-source program) before any user is
created or assigned.

PaperCut calls run concurrently, at most ``concurrency`` at once, writes
retried where safe (``billing.officernd.writes``). Every synced member is
mirrored as a local user in a local group per company
(``billing.officernd.mirror``).

The sync by role: ``plan`` (which user is whose, and the diff: pure),
``actions`` (one run's PaperCut reads and actions, and the ``SyncSummary``),
``writes`` (bounded, retried PaperCut calls; the ``Recreator`` outbox
handler), ``mirror`` (local users and groups, state rows). This module is
the flow that ties them together.

Transactions: ``run_sync`` is a boundary (like a worker loop): it commits the
intents before acting and the mirror, state and event at the end;
``apply_mirror`` takes a session and does not commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import events, outbox
from billing.db import utcnow
from billing.enums import OutboxStatus
from billing.models import OutboxItem
from billing.officernd.actions import Progress, SyncRun, SyncSummary
from billing.officernd.client import OfficeRnDClient
from billing.officernd.fees import AdjustmentCheck
from billing.officernd.filter import (
    INDIVIDUAL_GROUP,
    DesiredUser,
    MemberFilter,
    group_names,
    with_plans,
)
from billing.officernd.mirror import (
    GROUPS_JOB,
    GROUPS_PERIOD,
    INDIVIDUALS_ID,
    INITIAL_PERIOD,
    SYNC_JOB,
    Mirror,
    apply_mirror,
    load_mirror,
    save_state,
)
from billing.officernd.models import Company, Member, Plan
from billing.officernd.plan import SyncPlan, Update, link_members, managed_groups, plan_actions
from billing.officernd.writes import DEFAULT_CONCURRENCY, RECREATE_KIND, RECREATE_RETRY
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutFault, PaperCutSetupError

__all__ = ["DIRECTORY_SETUP", "TASK_TIMEOUT", "run_sync"]

TASK_TIMEOUT = 300.0  # seconds PaperCut may take for its user/group sync or a new group
DIRECTORY_SETUP = (
    "set PaperCut's user/group sync source to proxyprint's user-source program"
    " (Options > User/Group Sync > Custom Program: 'proxyprint papercut user-source';"
    " README, PaperCut set-up), then sync again"
)

log = logging.getLogger(__name__)


async def _resume(run: SyncRun) -> outbox.DrainResult:
    """Finish re-creations a crashed run left (waiting retries included)."""
    return await outbox.drain(
        run.sessions,
        RECREATE_KIND,
        run.recreator,
        worker=run.worker,
        concurrency=run.concurrency,
        due_only=False,
        policy=RECREATE_RETRY,
    )


@dataclasses.dataclass
class _Read:
    """What one run read from both sides."""

    members: list[Member]
    companies: list[Company]
    plans: list[Plan]
    pc_users: list[str]
    pc_groups: list[str]
    member_of: dict[str, dict[str, str]]  # PaperCut user -> the managed groups it is in


@dataclasses.dataclass
class _Wanted:
    """Who should be in PaperCut, and under which names and groups."""

    links: dict[str, str]  # member id -> PaperCut user name
    wanted: dict[str, DesiredUser]
    by_member: dict[str, DesiredUser]
    company_groups: dict[str, str]  # company id -> group name


async def _read(
    run: SyncRun,
    officernd: OfficeRnDClient,
    papercut: PaperCutClient,
    member_filter: MemberFilter,
    known: set[str],
) -> _Read:
    """Both sides at once (OfficeRnD's pages come one after the other: PaperCut is
    read meanwhile); group memberships of the groups we already manage."""

    async def from_officernd() -> tuple[list[Member], list[Company], list[Plan]]:
        members, companies = await asyncio.gather(officernd.members(), officernd.companies())
        if not member_filter.plans:
            return members, companies, []
        # Plan membership is its own resource (the member record has no plans).
        plans, memberships = await asyncio.gather(officernd.plans(), officernd.memberships())
        return with_plans(members, memberships, utcnow().date()), companies, plans

    async def from_papercut() -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
        users, groups = await asyncio.gather(
            run.pc.read(papercut.all_user_accounts), run.pc.read(papercut.all_user_groups)
        )
        return users, groups, await run.memberships(groups, known)

    (members, companies, plans), (pc_users, pc_groups, member_of) = await asyncio.gather(
        from_officernd(), from_papercut()
    )
    return _Read(members, companies, plans, pc_users, pc_groups, member_of)


async def _want(
    run: SyncRun,
    mirror: Mirror,
    read: _Read,
    member_filter: MemberFilter,
    known: set[str],
) -> _Wanted:
    """Link members to PaperCut users and pick who is wanted (reads e-mails in the
    second flow, and the memberships of groups of companies new to us)."""
    summary = run.summary
    company_groups = group_names(read.companies)
    managed = known | managed_groups(company_groups.values())
    for user, groups in (await run.memberships(read.pc_groups, managed - known)).items():
        read.member_of.setdefault(user, {}).update(groups)

    emails: dict[str, str] = {}
    candidates = set(read.pc_users) | mirror.unlinked_names
    if summary.second_flow:
        prelinked = link_members(read.members, mirror.links, candidates)
        named = {n.casefold() for n in prelinked.values()}
        emails = await run.emails([u for u in read.pc_users if u.casefold() not in named])
    links = link_members(read.members, mirror.links, candidates, emails)
    linked_names = {n.casefold() for n in links.values()}
    reserved = {n for n in candidates if n.casefold() not in linked_names}
    reserved |= {n for mid, n in mirror.links.items() if mid not in links}
    wanted = member_filter.wanted(
        read.members, read.companies, plans=read.plans, existing=links, reserved=reserved
    )
    by_member = {w.member_id: w for w in wanted.values()}
    return _Wanted(links, wanted, by_member, company_groups)


async def _start_initial(
    sessions: async_sessionmaker[AsyncSession], mirror: Mirror, initial: bool
) -> str | None:
    """The initial flow's token (kept across runs until one finishes), saved as started."""
    token = mirror.initial_token
    if initial:
        if token is None or mirror.initial_done:
            token = uuid.uuid4().hex[:12]
        async with sessions() as session, session.begin():
            await save_state(session, SYNC_JOB, INITIAL_PERIOD, {"token": token}, "started")
    return token


async def _done_recreations(sessions: async_sessionmaker[AsyncSession], token: str) -> set[str]:
    """User names an earlier run of this initial flow already re-created."""
    async with sessions() as session:
        return {
            str(p.get("user", "")).casefold()
            for p in await session.scalars(
                select(OutboxItem.payload).where(
                    OutboxItem.kind == RECREATE_KIND,
                    OutboxItem.status == int(OutboxStatus.DONE),
                    OutboxItem.idempotency_key.like(f"officernd:recreate:{token}:%"),
                )
            )
        }


def _group_state(mirror: Mirror, want: _Wanted) -> tuple[dict[str, str], set[str]]:
    """The group map (PaperCut group name by external id) and the former groups."""
    all_groups = {**mirror.groups, **want.company_groups}
    all_groups[INDIVIDUALS_ID] = INDIVIDUAL_GROUP
    former = (mirror.former_groups | set(mirror.groups.values())) - set(all_groups.values())
    return all_groups, former


async def _save_groups(session: AsyncSession, mirror: Mirror, want: _Wanted) -> None:
    all_groups, former = _group_state(mirror, want)
    if all_groups != mirror.groups or former != mirror.former_groups:
        await save_state(
            session,
            GROUPS_JOB,
            GROUPS_PERIOD,
            {"groups": all_groups, "former": sorted(former)},
            "done",
        )


async def _add_groups(
    run: SyncRun, papercut: PaperCutClient, mirror: Mirror, want: _Wanted, groups: list[str]
) -> None:
    """The new groups, the way PaperCut allows: offered by the directory source first."""
    async with run.sessions() as session, session.begin():
        await _save_groups(session, mirror, want)  # the user-source program lists them now
    await run.pc.write(papercut.perform_user_and_group_sync)
    await papercut.wait_for_task(timeout=TASK_TIMEOUT)
    refused: dict[str, str] = {}

    async def add(group: str) -> None:
        try:
            await run.pc.write(papercut.add_new_group, group)
        except PaperCutFault as exc:
            refused[group] = exc.fault_string
        finally:
            run.tick()

    await asyncio.gather(*(add(g) for g in groups))
    status = await papercut.wait_for_task(timeout=TASK_TIMEOUT)
    for group in groups:
        if group not in refused and not await run.pc.read(papercut.is_group_exists, group):
            refused[group] = f"not added ({status.message})"
    run.summary.groups_created += len(groups) - len(refused)
    if refused:
        details = "; ".join(f"{g}: {why}" for g, why in sorted(refused.items()))
        raise PaperCutSetupError(
            f"PaperCut's user directory source does not offer the group(s)"
            f" {', '.join(sorted(refused))}, so PaperCut cannot add them: {DIRECTORY_SETUP}."
            f" ({details})"
        )


async def _carry_out(
    run: SyncRun,
    papercut: PaperCutClient,
    plan: SyncPlan,
    token: str | None,
    *,
    mirror: Mirror,
    want: _Wanted,
) -> None:
    """The planned actions: groups first, then users concurrently."""
    summary = run.summary
    if plan.new_groups:
        await _add_groups(run, papercut, mirror, want, plan.new_groups)

    async def do_create(want: DesiredUser) -> None:
        if await run.guarded(f"create {want.username}", want.member_id, run.create(want)):
            summary.created += 1

    async def do_update(u: Update) -> None:
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
        if plan.recreates and token is not None:
            await run.recreate_all(plan.recreates, token)

    await asyncio.gather(
        do_recreate(),
        *(do_create(w) for w in plan.creates),
        *(do_update(u) for u in plan.updates),
        *(do_remove(n, m) for n, m in plan.removes),
        *(do_unlink(n) for n in plan.unlinks),
    )


async def _record(run: SyncRun, mirror: Mirror, want: _Wanted, token: str | None) -> None:
    """The mirror, the state rows and the event, in one transaction."""
    summary = run.summary
    in_papercut = [
        w
        for w in want.wanted.values()
        if w.member_id not in run.failed_members and w.username.casefold() not in mirror.held
    ]
    leaving = {
        mid for mid in mirror.links if mid not in want.by_member and mid not in run.failed_members
    }
    needed_ext = {
        (INDIVIDUALS_ID if w.company_id is None else w.company_id): w.group for w in in_papercut
    }
    async with run.sessions() as session, session.begin():
        mirrored = await apply_mirror(session, in_papercut, leaving, needed_ext)
        summary.mirror_created = mirrored.created
        summary.mirror_updated = mirrored.updated
        summary.mirror_deactivated = mirrored.deactivated
        for error in mirrored.errors:
            summary.error(error)
        await _save_groups(session, mirror, want)
        if summary.initial:
            state = "done" if summary.errors == 0 else "started"
            await save_state(
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
    run = SyncRun(
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
        mirror = await load_mirror(session)
    known = managed_groups([*mirror.groups.values(), *mirror.former_groups])
    read = await _read(run, officernd, papercut, member_filter, known)
    summary.members = len(read.members)
    summary.initial = (not mirror.initial_done) if initial is None else initial
    summary.second_flow = summary.initial and bool(read.pc_users)
    want = await _want(run, mirror, read, member_filter, known)
    summary.wanted = len(want.wanted)

    token = await _start_initial(sessions, mirror, summary.initial)
    done_recreations: set[str] = set()
    if summary.second_flow and token is not None:
        done_recreations = await _done_recreations(sessions, token)
    plan = plan_actions(
        want.wanted,
        mirror,
        by_member=want.by_member,
        members=read.members,
        links=want.links,
        pc_users=read.pc_users,
        pc_groups=read.pc_groups,
        member_of=read.member_of,
        second_flow=summary.second_flow,
        done_recreations=done_recreations,
    )
    summary.skipped += plan.skipped
    run.total = plan.total
    await _carry_out(run, papercut, plan, token, mirror=mirror, want=want)
    await _record(run, mirror, want, token)
    log.info("%s", summary.line())
    return summary
