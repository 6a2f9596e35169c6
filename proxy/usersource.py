"""PaperCut's custom user directory program, answered from our OfficeRnD member mirror.

PaperCut NG/MF can take its users and groups from a program ("Custom
Program" user/group sync source). It runs the program with these arguments
and reads standard output; a non-zero exit (with the reason on standard
error) is a failure:

=========================================  ==============================================
``- is-valid``                             ``Y`` when the source can answer
``- all-users``                            one line per user (below)
``- all-groups``                           one group name per line
``- get-user-details`` (user name on       that user's line
stdin)
``- group-member-names GROUP``             the user names in GROUP, one per line
``- group-members GROUP``                  the full lines of GROUP's users
``- is-user-in-group GROUP USER``          ``Y`` or ``N``
=========================================  ==============================================

Run with no arguments it is PaperCut's "Custom auth program" (the same
program may be set as both, as PaperCut's own examples do): standard input is
``username\nplaintextPassword\n`` (UTF-8); the answer is ``OK\n<username>\n``
(PaperCut then uses the user name given back, here as the directory spells
it) or ``ERROR\n`` with ``Invalid username or password`` on standard error,
and the exit status is always 0. Protocol: PaperCut MF/NG manual, "Custom
user directory information providers", and PaperCutSoftware/
CustomSynAndAuthentication (README, "Custom authentication program"). The
password is checked against proxyprint's own (``proxyprint user passwd``,
scrypt, ``proxy.web.passwords``) for a user this program lists (synced,
active): a disabled or unknown user, or one without a password, is refused
after the same work, so the answer time does not tell which.

A user line is tab-separated: ``username, full name, email, department,
office, card number``. Our users are the synced members (local users with
an OfficeRnD ``external_id``, active); the department is the member's
company as the PaperCut group is named (``officernd-state/groups``), the
card the member's first registered NFC card. Groups are every group the
OfficeRnD sync uses, under their PaperCut names: the mirrored groups
(``external_id`` set), every company group and ``[Individual Member]`` in the
sync's group map (written before the sync asks PaperCut to add a group, so a
group is offered before it has members), and ``UNLINKED_MEMBERS_TO_OFFICERND``
(PaperCut users with no OfficeRnD member: PaperCut's own, so listed here
without members). User and group names are matched without case, as PaperCut
does. An unknown user or group is an error (exit 1); a usage error exits 2.

Fast on purpose (PaperCut may run it at every sign-in): no SQLAlchemy and no
ORM, just the database driver (``sqlite3`` or ``asyncpg``), one query per
answer, and the output written in one piece. ``python -m proxy.usersource
[--config FILE] - all-users`` starts quickest; ``proxyprint papercut
user-source - all-users`` is the same through the main command.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["AUTH_REFUSED", "COMMANDS", "UserSourceError", "answer", "authenticate", "main", "run"]

COMMANDS = {
    "is-valid": 0,
    "all-users": 0,
    "all-groups": 0,
    "get-user-details": 0,
    "group-member-names": 1,
    "group-members": 1,
    "is-user-in-group": 2,
}
USAGE = (
    "usage: user-source (no arguments: authenticate, user name and password on stdin)"
    " | - is-valid | all-users | all-groups | get-user-details (name on stdin)"
    " | group-member-names GROUP | group-members GROUP | is-user-in-group GROUP USER"
)
INDIVIDUALS_ID = "officernd:individuals"  # billing.officernd.mirror.INDIVIDUALS_ID
UNLINKED_GROUP = "UNLINKED_MEMBERS_TO_OFFICERND"  # billing.officernd.filter.UNLINKED_GROUP
_CONTROL = re.compile(r"[\t\r\n\x00-\x1f\x7f]+")
_CONTROL_BUT_TAB = re.compile(r"[\r\n\x00-\x08\x0b-\x1f\x7f]")

# One pass over users (by name) with their groups; cards are read apart (first per user).
_USERS = (
    "SELECT u.id, u.name, u.full_name, u.email, g.external_id, g.name"
    " FROM users u"
    " LEFT JOIN group_members m ON m.user_id = u.id"
    " LEFT JOIN groups g ON g.id = m.group_id AND g.external_id IS NOT NULL"
    " WHERE u.external_id IS NOT NULL AND u.active"
)
_CARDS = "SELECT user_id, number FROM cards WHERE deleted_at IS NULL ORDER BY id DESC"
_GROUPS = "SELECT id, name, external_id FROM groups WHERE external_id IS NOT NULL"
_PASSWORD = (
    "SELECT name, password_hash FROM users"
    " WHERE external_id IS NOT NULL AND active AND lower(name) = lower(?)"
)
AUTH_REFUSED = "Invalid username or password"  # the one message, whatever the reason
_GROUP_MAP = (
    "SELECT summary FROM scheduled_runs WHERE job = 'officernd-state' AND period = 'groups'"
)


class UserSourceError(Exception):
    """An answer PaperCut must see as a failure (exit ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Db:
    """The configured database through its bare driver; ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: Any = None
        self._pg: Any = None

    async def __aenter__(self) -> _Db:
        scheme, sep, rest = self.url.partition("://")
        if not sep:
            raise UserSourceError(f"database.url {self.url!r} is not a URL", 2)
        if scheme.startswith("sqlite"):
            import sqlite3

            path = rest[1:] if rest.startswith("/") else rest
            if not path or path == ":memory:" or not Path(path).exists():
                raise UserSourceError(f"no database at {path or self.url!r}")
            from urllib.parse import quote

            self._sqlite = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        elif scheme.startswith("postgresql"):
            import asyncpg  # type: ignore[import-untyped]

            self._pg = await asyncpg.connect(f"postgresql://{rest}")
        else:
            raise UserSourceError(f"unsupported database URL {self.url!r}", 2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()

    async def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return list(self._sqlite.execute(sql, params).fetchall())
        count = iter(range(1, len(params) + 1))
        numbered = re.sub(r"\?", lambda _: f"${next(count)}", sql)
        return [tuple(r) for r in await self._pg.fetch(numbered, *params)]


@dataclass(frozen=True, slots=True)
class _Group:
    id: int | None  # None: a group without local members (yet)
    name: str  # as PaperCut knows it


def _field(value: object) -> str:
    return "" if value is None else _CONTROL.sub(" ", str(value)).strip()


class _Directory:
    def __init__(self, db: _Db) -> None:
        self.db = db
        self._names: dict[str, str] | None = None

    async def group_names(self) -> dict[str, str]:
        """PaperCut group name by external id (from the last sync)."""
        if self._names is None:
            rows = await self.db.rows(_GROUP_MAP)
            data = rows[0][0] if rows else None
            if isinstance(data, str):
                data = json.loads(data)
            groups = data.get("groups") if isinstance(data, dict) else None
            self._names = (
                {str(k): str(v) for k, v in groups.items()} if isinstance(groups, dict) else {}
            )
        return self._names

    async def groups(self) -> list[_Group]:
        names = await self.group_names()
        rows = await self.db.rows(_GROUPS)
        found = {
            g.name.casefold(): g
            for g in (_Group(int(gid), names.get(str(ext), str(name))) for gid, name, ext in rows)
        }
        for name in [*names.values(), UNLINKED_GROUP]:
            found.setdefault(name.casefold(), _Group(None, name))
        return sorted(found.values(), key=lambda g: g.name.casefold())

    async def group(self, wanted: str) -> _Group:
        key = wanted.strip().casefold()
        for group in await self.groups():
            if group.name.casefold() == key:
                return group
        rows = await self.db.rows(_GROUPS)  # the local name is accepted too
        for gid, name, _ext in rows:
            if str(name).casefold() == key:
                return _Group(int(gid), str(name))
        raise UserSourceError(f"unknown group: {wanted}")

    async def lines(self, where: str = "", *params: object) -> list[tuple[str, str]]:
        """(user name, user line) of the matching users, by name."""
        names = await self.group_names()
        rows = await self.db.rows(_USERS + where + " ORDER BY u.name", *params)
        cards: dict[int, str] = {}
        if rows:
            # The last write wins: rows come newest first, so each user keeps its first card.
            cards = {int(uid): str(number) for uid, number in await self.db.rows(_CARDS)}
        result: list[tuple[str, str]] = []
        index: dict[int, int] = {}  # user id -> its place in result
        for uid, name, full_name, email, ext, gname in rows:
            if uid in index and ext is None:
                continue  # a row per group: the synced group's row is the one
            department = names.get(ext, gname) if ext is not None else ""
            values = (name, full_name or "", email or "", department, "", cards.get(uid, ""))
            line = "\t".join(values)
            if line.count("\t") != 5 or _CONTROL_BUT_TAB.search(line):
                line = "\t".join(_field(v) for v in values)  # rare: clean each field
            if uid in index:
                result[index[uid]] = (name, line)
            else:
                index[uid] = len(result)
                result.append((name, line))
        return result

    async def user_line(self, name: str) -> str:
        found = await self.lines(" AND lower(u.name) = lower(?)", name.strip())
        if not found:
            raise UserSourceError(f"unknown user: {name.strip()}")
        return found[0][1]

    async def members(self, group: _Group) -> list[tuple[str, str]]:
        if group.id is None:
            return []
        return await self.lines(
            " AND u.id IN (SELECT user_id FROM group_members WHERE group_id = ?)", group.id
        )


async def answer(db_url: str, argv: Sequence[str], stdin: TextIO) -> str:
    """The program's standard output for ``argv`` (``UserSourceError`` on failure)."""
    args = list(argv)
    if args and args[0] == "-":
        args = args[1:]
    if not args or args[0] not in COMMANDS:
        raise UserSourceError(USAGE, 2)
    command, params = args[0], args[1:]
    if len(params) != COMMANDS[command]:
        raise UserSourceError(f"{command}: expected {COMMANDS[command]} argument(s)\n{USAGE}", 2)
    async with _Db(db_url) as db:
        directory = _Directory(db)
        if command == "is-valid":
            await db.rows("SELECT 1 FROM users LIMIT 1")
            return "Y\n"
        if command == "all-users":
            return _join(line for _, line in await directory.lines())
        if command == "all-groups":
            return _join(g.name for g in await directory.groups())
        if command == "get-user-details":
            name = stdin.readline().strip()
            if not name:
                raise UserSourceError("get-user-details: no user name on standard input")
            return await directory.user_line(name) + "\n"
        group = await directory.group(params[0])
        if command == "group-member-names":
            return _join(name for name, _ in await directory.members(group))
        if command == "group-members":
            return _join(line for _, line in await directory.members(group))
        user = params[1].strip()
        await directory.user_line(user)  # an unknown user is an error
        members = {name.casefold() for name, _ in await directory.members(group)}
        return "Y\n" if user.casefold() in members else "N\n"


async def authenticate(db_url: str, stdin: TextIO) -> str | None:
    """The user name (as listed) when standard input's user name and password match
    an active listed user's proxyprint password; None otherwise."""
    from .web.passwords import verify_password

    name = stdin.readline().rstrip("\r\n").strip()
    password = stdin.readline().rstrip("\r\n")
    rows: list[tuple[Any, ...]] = []
    if name:
        async with _Db(db_url) as db:
            rows = await db.rows(_PASSWORD, name)
    user, stored = (str(rows[0][0]), rows[0][1]) if rows else (None, None)
    ok = await asyncio.to_thread(verify_password, password, stored)
    return user if ok and user is not None else None


def _join(lines: Iterable[str]) -> str:
    text = "\n".join(lines)
    return text + "\n" if text else ""


async def run(
    db_url: str,
    argv: Sequence[str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Answer ``argv``; the exit status (0, 1 unknown user/group or failure, 2 usage).
    No ``argv``: authenticate (``authenticate``; always 0)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if not argv:  # the auth program: always exit 0, the answer is on standard output
        try:
            user = await authenticate(db_url, stdin or sys.stdin)
        except Exception as exc:  # PaperCut must see ERROR, never a crash
            err.write(f"user-source: {type(exc).__name__}: {exc}\n")
            user = None
        if user is None:
            err.write(f"{AUTH_REFUSED}\n")
        out.write("ERROR\n" if user is None else f"OK\n{user}\n")
        out.flush()
        return 0
    try:
        text = await answer(db_url, argv, stdin or sys.stdin)
    except UserSourceError as exc:
        err.write(f"user-source: {exc.message}\n")
        return exc.code
    except Exception as exc:  # the driver's errors: PaperCut sees a failure
        err.write(f"user-source: {type(exc).__name__}: {exc}\n")
        return 1
    out.write(text)
    out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m proxy.usersource [--config FILE] - COMMAND ...`` (quick start-up)."""
    from .config import load_config
    from .exceptions import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    path: Path | None = None
    if len(args) >= 2 and args[0] == "--config":
        path, args = Path(args[1]), args[2:]
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"user-source: {exc}\n")
        return 2
    return asyncio.run(run(config.database.url, args))


if __name__ == "__main__":
    sys.exit(main())
