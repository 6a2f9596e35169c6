"""``proxyprint papercut user-source``: PaperCut's custom user directory program,
answered from the OfficeRnD member mirror (SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts
from billing.db import utcnow
from billing.models import Card, Group, ScheduledRun
from proxy import cli
from proxy.cli_officernd import register
from proxy.config import build_config
from proxy.usersource import answer, run

GROUP_MAP = {
    # Gala Corp: a company group the sync is about to add (no local group yet).
    "groups": {
        "c-acme": "Acme Labs",
        "officernd:individuals": "[Individual Member]",
        "c-gala": "Gala Corp",
    },
    "former": [],
}


async def _mirror(session: AsyncSession) -> None:
    acme = await accounts.create_group(session, "Acme_Labs", external_id="c-acme")
    await accounts.create_group(session, "[Individual_Member]", external_id="officernd:individuals")
    await accounts.create_group(session, "staff")  # a local group: not in the directory
    await accounts.create_user(
        session,
        "ada@example.com",
        full_name="Ada\tLovelace",
        email="ada@example.com",
        groups=["Acme_Labs", "staff"],
        external_id="m-ada",
    )
    await accounts.create_user(
        session, "bob@example.com", full_name="Bob", groups=["[Individual_Member]"],
        external_id="m-bob",
    )  # fmt: skip
    old = await accounts.create_user(
        session, "old@example.com", groups=["Acme_Labs"], external_id="m-old"
    )
    old.active = False
    await accounts.create_user(session, "localonly", groups=["staff"])
    ada = await accounts.user_by_name(session, "ada@example.com")
    assert ada is not None and acme.id
    session.add_all([Card(user_id=ada.id, number="04a1b2c3"), Card(user_id=ada.id, number="ff")])
    bob = await accounts.user_by_name(session, "bob@example.com")
    assert bob is not None  # bob's only card was deleted: his line has none
    session.add(Card(user_id=bob.id, number="0badcafe", deleted_at=utcnow()))
    session.add(
        ScheduledRun(job="officernd-state", period="groups", state="done", summary=GROUP_MAP)
    )


ADA = "ada@example.com\tAda Lovelace\tada@example.com\tAcme Labs\t\t04a1b2c3\n"
BOB = "bob@example.com\tBob\t\t[Individual Member]\t\t\n"

CASES: list[tuple[list[str], str, str, int, str]] = [
    # argv, stdin, stdout, exit status, stderr contains
    (["-", "is-valid"], "", "Y\n", 0, ""),
    (["is-valid"], "", "Y\n", 0, ""),
    (["-", "all-users"], "", ADA + BOB, 0, ""),
    (
        ["-", "all-groups"],
        "",
        "[Individual Member]\nAcme Labs\nGala Corp\nUNLINKED_MEMBERS_TO_OFFICERND\n",
        0,
        "",
    ),
    (["-", "get-user-details"], "ada@example.com\n", ADA, 0, ""),
    (["-", "get-user-details"], "ADA@Example.com\n", ADA, 0, ""),
    (["-", "get-user-details"], "nobody\n", "", 1, "unknown user: nobody"),
    (["-", "get-user-details"], "old@example.com\n", "", 1, "unknown user"),  # left
    (["-", "get-user-details"], "localonly\n", "", 1, "unknown user"),  # not synced
    (["-", "get-user-details"], "", "", 1, "no user name"),
    (["-", "group-member-names", "Acme Labs"], "", "ada@example.com\n", 0, ""),
    (["-", "group-member-names", "acme labs"], "", "ada@example.com\n", 0, ""),
    (["-", "group-member-names", "Acme_Labs"], "", "ada@example.com\n", 0, ""),  # local name
    (["-", "group-members", "[Individual Member]"], "", BOB, 0, ""),
    (["-", "group-members", "No Such"], "", "", 1, "unknown group: No Such"),
    (["-", "group-member-names", "Gala Corp"], "", "", 0, ""),
    (["-", "group-member-names", "unlinked_members_to_officernd"], "", "", 0, ""),
    (["-", "is-user-in-group", "Gala Corp", "ada@example.com"], "", "N\n", 0, ""),
    (["-", "group-member-names", "staff"], "", "", 1, "unknown group"),
    (["-", "is-user-in-group", "Acme Labs", "ada@example.com"], "", "Y\n", 0, ""),
    (["-", "is-user-in-group", "Acme Labs", "bob@example.com"], "", "N\n", 0, ""),
    (["-", "is-user-in-group", "Acme Labs", "ghost"], "", "", 1, "unknown user: ghost"),
    (["-", "is-user-in-group", "Nope", "ada@example.com"], "", "", 1, "unknown group: Nope"),
    (["-", "is-user-in-group", "Acme Labs"], "", "", 2, "expected 2 argument"),
    (["-", "all-cats"], "", "", 2, "usage"),
    (["all-cats"], "", "", 2, "usage"),
]  # no arguments at all: the auth program (test_auth_program_*)


async def test_protocol(db_url: str, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session, session.begin():
        await _mirror(session)
    for argv, stdin, stdout, status, stderr in CASES:
        out, err = io.StringIO(), io.StringIO()
        code = await run(db_url, argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
        case = f"{argv} <{stdin!r}: {err.getvalue()}"
        assert (code, out.getvalue()) == (status, stdout), case
        assert stderr in err.getvalue(), case
        assert (not err.getvalue()) == (status == 0), case


async def test_the_command_is_registered_next_to_papercut_check() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "officernd" not in sub.choices:  # until proxy/cli.py calls register itself
        register(sub)
    args = parser.parse_args(["papercut", "user-source", "-", "is-user-in-group", "A B", "u"])
    assert args.args == ["-", "is-user-in-group", "A B", "u"]
    assert parser.parse_args(["papercut", "check"]).action == "check"
    assert parser.parse_args(["officernd", "sync", "--initial"]).initial
    assert parser.parse_args(["officernd", "fees", "--date", "2024-06-03"]).date == "2024-06-03"


async def test_cli_handler_and_missing_database(db_url: str, tmp_path: Path) -> None:
    from proxy.cli_officernd import cmd_user_source

    config = build_config({"database": {"url": db_url}}, env={})
    args = argparse.Namespace(args=["-", "is-valid"])
    assert await cmd_user_source(config, args) == 0
    err = io.StringIO()
    missing = f"sqlite+aiosqlite:///{tmp_path}/none.db"
    assert await run(missing, ["-", "all-users"], stderr=err) == 1
    assert "no database" in err.getvalue()


async def test_all_users_for_50000_members_is_fast(
    db_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    n, companies = 50_000, 500
    seq = f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1})"
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(Group),
            [{"name": f"Company_{c}", "external_id": f"c{c}"} for c in range(companies)],
        )
        # generated in the database: the same SQL on SQLite and PostgreSQL, and quick
        await session.execute(
            text(
                "INSERT INTO users (name, email, full_name, external_id, active, created_at) "
                f"{seq} SELECT 'member' || i || '@example.com', 'member' || i || '@example.com',"
                " 'Member ' || i, 'm' || i, :yes, CURRENT_TIMESTAMP FROM seq"
            ),
            {"yes": True},
        )
        await session.execute(
            text(
                "INSERT INTO group_members (user_id, group_id)"
                f" SELECT id, (id - 1) % {companies} + 1 FROM users"
            )
        )
        await session.execute(
            text(
                "INSERT INTO cards (user_id, number, created_at)"
                " SELECT id, 'card' || id, CURRENT_TIMESTAMP FROM users WHERE id % 2 = 1"
            )
        )
        await session.execute(
            insert(ScheduledRun).values(
                job="officernd-state",
                period="groups",
                state="done",
                summary={"groups": {f"c{c}": f"Company {c}" for c in range(companies)}},
            )
        )
    started = time.perf_counter()
    output = await answer(db_url, ["-", "all-users"], io.StringIO())
    in_process = time.perf_counter() - started
    lines = output.splitlines()
    assert len(lines) == n
    assert lines[0] == "member0@example.com\tMember 0\tmember0@example.com\tCompany 0\t\tcard1"
    assert sum(line.endswith("\t") for line in lines) == n // 2  # every other one has no card
    # as PaperCut runs it: a new process writing to a pipe
    env = {**os.environ, "PROXYPRINT_DATABASE_URL": db_url, "PROXYPRINT_CONFIG": "/dev/null"}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.usersource", "-", "all-users",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed, errors = await asyncio.wait_for(proc.communicate(), 60)
    process = time.perf_counter() - started
    assert proc.returncode == 0, errors
    assert printed.decode() == output
    print(
        f"\nuser-source all-users, {n:,} members ({db_url.split(':', maxsplit=1)[0]}): "
        f"{in_process:.3f} s in process, {process:.3f} s as a process "
        f"({len(printed) / 1e6:.1f} MB)"
    )


# --- the auth program: PaperCut runs it with no arguments ------------------------------------


async def _proc(argv: list[str], stdin: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_auth_program_checks_proxyprint_passwords(
    db_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """PaperCut's "Custom auth program" protocol: ``username\\npassword\\n`` in,
    ``OK\\n<username>`` or ``ERROR`` out, exit 0 either way. The password is the one
    ``proxyprint user passwd`` sets (the real commands, as processes, for the main
    cases); a disabled member, a local user the directory does not list, a wrong
    password and an unknown user are refused with the same message."""
    from proxy.web.passwords import hash_password

    async with sessionmaker() as session, session.begin():
        await _mirror(session)
        hashed = hash_password("a good password")
        for name in ("old@example.com", "localonly"):  # as `user passwd` would
            sql = text("UPDATE users SET password_hash = :h WHERE name = :n")
            await session.execute(sql, {"h": hashed, "n": name})
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env.update(PROXYPRINT_CONFIG=str(tmp_path / "empty.toml"), PROXYPRINT_DATABASE_URL=db_url)
    code, out, err = await _proc(
        ["-m", "proxy.cli", "user", "passwd", "ada@example.com", "--stdin"],
        "correct horse battery\n",
        env,
    )
    assert code == 0 and "password set" in out, err

    # As PaperCut runs it: the main command, and the quick module, with no arguments.
    source = ["-m", "proxy.cli", "papercut", "user-source"]
    ran = await asyncio.gather(
        _proc(source, "ADA@Example.com\ncorrect horse battery\n", env),
        _proc(["-m", "proxy.usersource"], "ada@example.com\nwrong horse\n", env),
    )
    assert ran[0] == (0, "OK\nada@example.com\n", "")  # the directory's spelling
    assert ran[1] == (0, "ERROR\n", "Invalid username or password\n")

    cases = [
        ("ada@example.com\ncorrect horse battery\n", "OK\nada@example.com\n"),
        ("ada@example.com\ncorrect horse battery", "OK\nada@example.com\n"),  # no last \\n
        ("ada@example.com\ncorrect horse\n", "ERROR\n"),  # wrong password
        ("ada@example.com\n", "ERROR\n"),  # no password line
        ("old@example.com\na good password\n", "ERROR\n"),  # disabled (left)
        ("localonly\na good password\n", "ERROR\n"),  # not in the directory
        ("bob@example.com\n\n", "ERROR\n"),  # listed, no password set
        ("ghost\ncorrect horse battery\n", "ERROR\n"),  # unknown
        ("", "ERROR\n"),
    ]
    for stdin, expected in cases:
        out_io, err_io = io.StringIO(), io.StringIO()
        code = await run(db_url, [], stdin=io.StringIO(stdin), stdout=out_io, stderr=err_io)
        case = f"<{stdin!r}: {err_io.getvalue()}"
        assert (code, out_io.getvalue()) == (0, expected), case
        refused = "Invalid username or password\n"
        assert err_io.getvalue() == ("" if expected.startswith("OK") else refused), case
    out_io, err_io = io.StringIO(), io.StringIO()
    missing = f"sqlite+aiosqlite:///{tmp_path}/none.db"  # a broken source answers ERROR too
    stdin = io.StringIO("ada@example.com\ncorrect horse battery\n")
    assert await run(missing, [], stdin=stdin, stdout=out_io, stderr=err_io) == 0
    assert out_io.getvalue() == "ERROR\n" and "no database" in err_io.getvalue()
