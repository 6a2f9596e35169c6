"""One sync run's PaperCut reads and actions, and the summary they are counted into.

``SyncRun`` carries out a plan (``billing.officernd.plan``) through the
bounded, retried calls of ``billing.officernd.writes``: creates, updates,
moves, removals, unlinks, and the second flow's re-creations in batches
through the outbox (``Recreator``). Each action is guarded: a PaperCut or
billing error is counted in the ``SyncSummary`` (and its member kept out of
the mirror), never raised, so one bad user does not stop the run.
Apart from ``run_sync`` so the orchestration reads as the flow it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import outbox
from billing.enums import OutboxStatus, Provisioning
from billing.exceptions import BillingError
from billing.models import OutboxItem
from billing.officernd.fees import MAX_ERRORS, AdjustmentCheck, intent_key
from billing.officernd.filter import UNLINKED_GROUP, DesiredUser
from billing.officernd.writes import RECREATE_KIND, RECREATE_RETRY, PaperCutCalls, Recreator
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError, PaperCutFault

__all__ = ["BUILTIN_GROUPS", "Progress", "SyncRun", "SyncSummary"]

# PaperCut's built-in groups: never "moved out of".
BUILTIN_GROUPS = frozenset({"[all users]", "[internal users]"})

Progress = Callable[[int, int], None]


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


# --- a run's reads and actions -----------------------------------------------------------


class SyncRun:
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
        provisioning: Provisioning = Provisioning.USER_SOURCE,
    ) -> None:
        self.sessions = sessions
        self.pc = PaperCutCalls(papercut, concurrency, provisioning)
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
        # With user-source provisioning the run has had PaperCut sync its directory already.
        await self.pc.create_user(want, synced=True)
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
                    marker = outbox.new_marker()
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
                ids = await outbox.claim(
                    session,
                    self.worker,
                    kinds=(RECREATE_KIND,),
                    limit=len(keys),
                    keys=keys,
                    due_only=False,
                )
            await outbox.run_items(
                self.sessions,
                ids,
                {RECREATE_KIND: self.recreator},
                worker=self.worker,
                concurrency=self.concurrency,
                policy=RECREATE_RETRY,
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
