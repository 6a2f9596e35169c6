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
  order; they are settled at the start of every XML-RPC call. A program runs
  in a thread (PaperCut's sync runs beside its API); its task completes when
  it is done, as ``Failed: ...`` when it exits non-zero.
* With a custom user program, a user/group sync also imports the program's
  users (``- all-users``: one tab-separated line each, user name first) that
  PaperCut does not have yet, as external (not internal) users, and adds the
  members the program names (``- group-member-names GROUP``) to each group
  PaperCut already has. The simulator only adds: it never deletes a user or
  a membership the program no longer lists (PaperCut's "delete users that do
  not exist in the source" option is off by default).

Users also come from ``addNewInternalUser`` and from printing, as in PaperCut.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.devkit.papercut.simbackend import ensure_user
from proxy.devkit.papercut.simstore import SimFault, SimStore, now_text

__all__ = ["SimDirectory"]

PROGRAM_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class _DirectoryUsers:
    users: list[list[str]]  # the program's user lines, split on tabs
    members: dict[str, list[str]]  # PaperCut group -> the user names the program lists


class SimDirectory(SimStore):
    """The directory source, the background tasks and the methods that use them."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.task_seconds = 0.0
        self._directory_groups: frozenset[str] | None = None  # None: every group offered
        self._program: tuple[list[str], dict[str, str] | None] | None = None
        self._synced_groups: frozenset[str] | None = None  # casefolded, as last synced
        self._tasks: list[tuple[float, Callable[[], None], Future[Any] | None]] = []
        self._task_message = "No task has been run."
        self._done_message = self._task_message
        self.directory_syncs = 0
        self.directory_imports = 0  # syncs that imported a program's users

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

    def _run_program(self, *args: str) -> list[str]:
        """The custom user program's output lines for ``- ARGS`` (a fault on failure)."""
        assert self._program is not None
        argv, env = self._program
        done = subprocess.run(
            [*argv, "-", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=PROGRAM_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise SimFault(
                f"The user directory program failed (exit {done.returncode}): {done.stderr.strip()}"
            )
        return [line for line in done.stdout.splitlines() if line.strip()]

    def _read_directory(self) -> frozenset[str] | None:
        """The fixed list's groups (casefolded); None: every group (or a program's)."""
        if self._directory_groups is not None:
            return frozenset(g.casefold() for g in self._directory_groups)
        return None

    def _read_program(self, known: list[str]) -> tuple[frozenset[str], _DirectoryUsers]:
        """What a custom program offers: its groups (casefolded), its users and the
        members of the groups PaperCut has (``known``). Runs in a thread, as PaperCut's
        sync runs beside its API: the group lists are asked for at once."""
        offered = frozenset(g.strip().casefold() for g in self._run_program("all-groups"))
        users = [line.split("\t") for line in self._run_program("all-users")]
        groups = [g for g in known if g.casefold() in offered]
        with ThreadPoolExecutor(max_workers=4) as pool:
            lists = list(pool.map(lambda g: self._run_program("group-member-names", g), groups))
        members = {g: [n.strip() for n in names] for g, names in zip(groups, lists, strict=True)}
        return offered, _DirectoryUsers(users, members)

    def _import_users(self, found: _DirectoryUsers) -> None:
        now = now_text()
        with self._tx() as conn:
            for fields in found.users:
                name = fields[0].strip().lower()
                if not name:
                    continue
                exists = conn.execute(
                    "SELECT 1 FROM tbl_user WHERE user_name = ? AND deleted = 'N'", (name,)
                ).fetchone()
                if exists is not None:
                    continue
                user_id, _ = ensure_user(conn, name, now)
                values = [*fields[1:6], *[""] * 5][:5]  # full name, email, dept, office, card
                conn.execute(
                    "UPDATE tbl_user SET full_name = ?, email = ?, department = ?, office = ?,"
                    " card_number = ?, internal = 'N' WHERE user_id = ?",
                    (*values, user_id),
                )
            for group, names in found.members.items():
                for name in names:
                    conn.execute(
                        "INSERT OR IGNORE INTO tbl_user_group_member (group_id, user_id)"
                        " SELECT g.group_id, u.user_id FROM tbl_user_group g, tbl_user u"
                        " WHERE g.group_name = ? AND u.user_name = ? AND u.deleted = 'N'",
                        (group, name.lower()),
                    )
        self.directory_imports += 1

    # --- background tasks --------------------------------------------------------------------

    def _start_task(
        self, message: str, finish: Callable[[], None], work: Future[Any] | None = None
    ) -> None:
        """A task done ``task_seconds`` after the one before it (and once ``work``, if
        any, has finished)."""
        last = self._tasks[-1][0] if self._tasks else time.monotonic()
        self._tasks.append((max(last, time.monotonic()) + self.task_seconds, finish, work))
        self._task_message = f"Running: {message}"
        self._done_message = f"Completed: {message}"

    def settle_tasks(self) -> None:
        """Finish the tasks whose time has come (called at the start of every call)."""
        now = time.monotonic()
        while self._tasks and self._tasks[0][0] <= now:
            _, finish, work = self._tasks[0]
            if work is not None and not work.done():
                break
            self._tasks.pop(0)
            finish()
        if not self._tasks and self._task_message.startswith("Running: "):
            self._task_message = self._done_message

    # --- the API -------------------------------------------------------------------------------

    def get_task_status(self) -> dict[str, object]:
        self.settle_tasks()
        return {"completed": not self._tasks, "message": self._task_message}

    def perform_user_and_group_sync(self) -> bool:
        """Read the directory source; its groups count (and a program's users are
        imported) when the task completes. A program is run in the background."""
        self.directory_syncs += 1
        if self._program is None:
            groups = self._read_directory()

            def finish() -> None:
                if groups is not None:
                    self._synced_groups = groups

            self._start_task("user and group synchronization", finish)
            return True
        known = self._column("SELECT group_name FROM tbl_user_group ORDER BY group_id")
        runner = ThreadPoolExecutor(max_workers=1)
        work = runner.submit(self._read_program, known)
        runner.shutdown(wait=False)

        def finish_program() -> None:
            try:
                offered, users = work.result()
            except (SimFault, OSError, subprocess.SubprocessError) as exc:
                self._done_message = f"Failed: user and group synchronization: {exc}"
                return
            self._synced_groups = offered
            self._import_users(users)

        self._start_task("user and group synchronization", finish_program, work)
        return True

    def perform_group_sync(self) -> bool:
        """A group sync: the same reads as a user and group sync (the simulator does
        not tell them apart)."""
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
