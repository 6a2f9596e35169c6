"""The PaperCut side of the OfficeRnD sync: bounded, safely retried calls and re-creation.

Every PaperCut call of a sync goes through ``PaperCutCalls``: at most
``concurrency`` at once. It also owns the one way a user gets into PaperCut
(``[papercut] provisioning``): ``user-source`` (the default) means PaperCut's
user directory source is proxyprint's ``papercut user-source`` program, so a
user is created by asking PaperCut to run its user/group sync
(``performUserAndGroupSync``, awaited on ``getTaskStatus``) once the local
mirror lists the member; ``internal`` creates PaperCut internal users
(``addNewInternalUser``), for a PaperCut whose directory is something else.

Writes that are safe to repeat (groups, memberships, properties) are
retried; a create or delete whose answer was lost is checked
(``isUserExists``) before another try.

``Recreator`` is the outbox handler (kind ``RECREATE_KIND``) of the second
flow's re-creations. A re-creation is crash-safe: the balance is read and
committed in an outbox row (with a marker) *before* the user is deleted; after
the delete the row is marked ``deleted`` (committed) before the user is
created again; the balance comes back as an adjustment carrying the marker,
sent only when PaperCut's transaction log does not have it yet. A crash
anywhere leaves a pending row that the next sync (or the service's outbox
worker) finishes first, so no balance is ever lost or restored twice.

Apart from the run (``billing.officernd.sync``) because the service's outbox
worker registers ``Recreator`` on its own, without a sync.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import outbox
from billing.enums import Provisioning
from billing.exceptions import BillingError
from billing.models import OutboxItem
from billing.officernd.fees import AdjustmentCheck
from billing.officernd.filter import DesiredUser
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import (
    PaperCutError,
    PaperCutFault,
    PaperCutSetupError,
    PaperCutUnavailable,
)
from billing.retry import RetryPolicy

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DIRECTORY_SETUP",
    "RECREATE_KIND",
    "RECREATE_RETRY",
    "TASK_TIMEOUT",
    "WRITE_ATTEMPTS",
    "WRITE_BACKOFF",
    "PaperCutCalls",
    "Recreator",
]

RECREATE_KIND = "officernd.recreate"
TASK_TIMEOUT = 300.0  # seconds PaperCut may take for its user/group sync or a new group
DIRECTORY_SETUP = (
    "set PaperCut's user/group sync source to proxyprint's user-source program"
    " (Options > User/Group Sync > Custom Program: 'proxyprint papercut user-source';"
    " README, PaperCut set-up), then sync again"
)
DEFAULT_CONCURRENCY = 16
WRITE_ATTEMPTS = 6
WRITE_BACKOFF = 0.1  # seconds before the 1st retry of a write; doubles, at most 2 s
# A re-creation the sync carries out: retried soon (0.5 s, 1 s, …), then by the outbox worker.
RECREATE_RETRY = RetryPolicy.forever(backoff=0.5, max_backoff=600.0)

T = TypeVar("T")


# --- PaperCut calls: bounded, with safe retries --------------------------------------------


class PaperCutCalls:
    """Every PaperCut call of a sync goes through here: at most ``concurrency`` at once."""

    def __init__(
        self,
        client: PaperCutClient,
        concurrency: int,
        provisioning: Provisioning = Provisioning.USER_SOURCE,
    ) -> None:
        self.client = client
        self.gate = asyncio.Semaphore(concurrency)
        self.retry = RetryPolicy(WRITE_ATTEMPTS, backoff=WRITE_BACKOFF, max_backoff=2.0)
        self.provisioning = provisioning
        self._sync_lock = asyncio.Lock()
        self._syncs_started = 0

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
        for attempt in range(1, self.retry.attempts + 1):
            try:
                async with self.gate:
                    await call(*args)
                return
            except PaperCutUnavailable as exc:
                if not exc.retryable or attempt == self.retry.attempts:
                    raise
                uncertain = True
            except PaperCutFault:
                if uncertain and done is not None and await done():
                    return
                raise
            await asyncio.sleep(self.retry.pause(attempt))
            if done is not None and await done():
                return

    async def exists(self, user: str) -> bool:
        return await self.read(self.client.is_user_exists, user)

    async def directory_sync(self) -> None:
        """A PaperCut user/group sync that started after this call, waited for.

        Callers share one: a caller that finds a sync started after its call already
        done returns at once, so a batch of re-creations costs a sync or two, not one
        each (a full sync reads every user and group of the directory)."""
        ticket = self._syncs_started
        async with self._sync_lock:
            if self._syncs_started > ticket:
                return  # one started after we asked, and (we hold the lock) it is done
            self._syncs_started += 1
            await self.write(self.client.perform_user_and_group_sync)
            await self.client.wait_for_task(timeout=TASK_TIMEOUT)

    async def create_user(
        self, user: DesiredUser | dict[str, Any], *, synced: bool = False
    ) -> None:
        """The user in PaperCut, the configured way. ``user-source``: the member must be
        in the local mirror already (the program answers from it); ``synced`` says a
        directory sync ran since, so only its result is checked."""
        if isinstance(user, DesiredUser):
            name, full_name, email = user.username, user.full_name, user.email
        else:
            name, full_name, email = str(user["user"]), str(user["full_name"]), str(user["email"])
        if self.provisioning is Provisioning.USER_SOURCE:
            if not synced:
                await self.directory_sync()
            if not await self.exists(name):
                raise PaperCutSetupError(
                    f"PaperCut's user directory source did not offer the user {name}"
                    f" after its user/group sync: {DIRECTORY_SETUP}"
                    ' (or set [papercut] provisioning = "internal")'
                )
            return

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
        calls: PaperCutCalls | None = None,
        provisioning: Provisioning = Provisioning.USER_SOURCE,
    ) -> None:
        self.sessions = sessions
        self.pc = calls or PaperCutCalls(papercut, concurrency, provisioning)
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
        # On the first attempt the balance was read just before the row was written.
        first = not outbox.may_have_been_applied(item)
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
