"""The PaperCut simulator's user directory source and background tasks.

PaperCut takes its users and groups from a user directory source (Active
Directory, LDAP, or a custom program such as proxyprint's ``papercut
user-source``). ``api.addNewGroup`` works only for a group that source offers,
and runs in the background, as do ``api.performUserAndGroupSync`` and
``api.performGroupSync``; ``api.getTaskStatus`` tells when the current task
has completed (a struct ``{"completed": bool, "message": str}``).

The simulator models that:

* ``set_directory(groups=...)`` names the groups the source offers, or
  ``set_directory(program=[...])`` makes the source a custom user program,
  run as PaperCut runs it (``PROGRAM - all-groups``) at each user/group sync.
  Without either (the default) the source offers every group: tests that do
  not model the directory keep working.
* A user/group sync reads the source when it is asked for and takes effect
  when its task completes: only then does ``addNewGroup`` accept the groups
  the source lists. ``addNewGroup`` for a group the last sync did not see is
  a fault naming the missing set-up.
* Tasks take ``task_seconds`` each (0: done by the next call) and complete in
  order; they are settled at the start of every XML-RPC call.

Users still come from ``addNewInternalUser`` (and from printing): the source's
user list is not imported.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from proxy.devkit.papercut.simstore import SimFault, SimStore, now_text

__all__ = ["SimDirectory"]

PROGRAM_TIMEOUT = 60.0


class SimDirectory(SimStore):
    """The directory source, the background tasks and the methods that use them."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.task_seconds = 0.0
        self._directory_groups: frozenset[str] | None = None  # None: every group offered
        self._program: tuple[list[str], dict[str, str] | None] | None = None
        self._synced_groups: frozenset[str] | None = None  # casefolded, as last synced
        self._tasks: list[tuple[float, Callable[[], None]]] = []
        self._task_message = "No task has been run."
        self._done_message = self._task_message
        self.directory_syncs = 0

    # --- configuration (what an admin sets up in PaperCut) --------------------------------

    def set_directory(
        self,
        *,
        groups: Iterable[str] | None = None,
        program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """The user directory source: a fixed list of groups, or a custom user program
        (run with ``- all-groups`` at each user/group sync, with ``env``). Neither: every
        group is offered. Takes effect at the next user/group sync, as in PaperCut."""
        if groups is not None and program is not None:
            raise ValueError("a directory is either a list of groups or a program")
        self._directory_groups = None if groups is None else frozenset(groups)
        self._program = None if program is None else (list(program), dict(env or os.environ))
        self._synced_groups = None if groups is None and program is None else frozenset()

    def _read_directory(self) -> frozenset[str] | None:
        """The groups the source offers now (casefolded); None: every group."""
        if self._program is not None:
            argv, env = self._program
            done = subprocess.run(
                [*argv, "-", "all-groups"],
                capture_output=True,
                text=True,
                env=env,
                timeout=PROGRAM_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise SimFault(
                    f"The user directory program failed (exit {done.returncode}):"
                    f" {done.stderr.strip()}"
                )
            return frozenset(line.strip().casefold() for line in done.stdout.splitlines() if line)
        if self._directory_groups is not None:
            return frozenset(g.casefold() for g in self._directory_groups)
        return None

    # --- background tasks --------------------------------------------------------------------

    def _start_task(self, message: str, finish: Callable[[], None]) -> None:
        last = self._tasks[-1][0] if self._tasks else time.monotonic()
        self._tasks.append((max(last, time.monotonic()) + self.task_seconds, finish))
        self._task_message = f"Running: {message}"
        self._done_message = f"Completed: {message}"

    def settle_tasks(self) -> None:
        """Finish the tasks whose time has come (called at the start of every call)."""
        now = time.monotonic()
        while self._tasks and self._tasks[0][0] <= now:
            _, finish = self._tasks.pop(0)
            finish()
        if not self._tasks and self._task_message.startswith("Running: "):
            self._task_message = self._done_message

    # --- the API -------------------------------------------------------------------------------

    def get_task_status(self) -> dict[str, object]:
        self.settle_tasks()
        return {"completed": not self._tasks, "message": self._task_message}

    def perform_user_and_group_sync(self) -> bool:
        """Read the directory source now; its groups count when the task completes."""
        groups = self._read_directory()
        self.directory_syncs += 1

        def finish() -> None:
            if groups is not None:
                self._synced_groups = groups

        self._start_task("user and group synchronization", finish)
        return True

    def perform_group_sync(self) -> bool:
        """A group sync reads the source's groups too (the simulator has no memberships
        from the source)."""
        return self.perform_user_and_group_sync()

    def add_new_group(self, group: str) -> bool:
        """In the background, and only a group the directory source offered at the last
        sync; adding an existing group changes nothing."""
        if not group:
            raise SimFault("Invalid group name")
        if self._synced_groups is not None and group.casefold() not in self._synced_groups:
            raise SimFault(
                f"Group does not exist in the user directory source: {group}"
                " (PaperCut can only add a group its user/group sync source offers)"
            )

        def finish() -> None:
            self.insert_group(group)

        self._start_task(f"adding group {group}", finish)
        return True

    def insert_group(self, group: str) -> None:
        """The group, at once (the simulator's seeding, and a completed addNewGroup)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO tbl_user_group (group_name, created_date) VALUES (?, ?)",
                (group, now_text()),
            )
