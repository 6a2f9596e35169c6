"""The ``proxyprint`` command line, run as a real process against a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.devkit.papercut.simulator import PaperCutSimulator


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "cli.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env["PROXYPRINT_DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
    env["PROXYPRINT_CONFIG"] = str(tmp_path / "absent-but-optional.toml")
    (tmp_path / "absent-but-optional.toml").write_text("")
    return env


def test_directory_commands(env: dict[str, str]) -> None:
    assert run(env, "db", "upgrade").returncode == 0
    assert run(env, "group", "add", "sales").returncode == 0
    out = run(env, "user", "add", "alice", "--email", "a@example.org", "--group", "sales")
    assert out.returncode == 0, out.stderr
    assert run(env, "account", "add", "Events/Gala").returncode == 0
    token = run(env, "token", "create", "--role", "user", "--user", "alice")
    assert token.returncode == 0 and token.stdout.startswith("pp_")

    # Bad input: a clear error, exit 2, nothing written.
    for args, needle in [
        (("user", "add", "alice"), "already exists"),
        (("user", "add", "bob", "--group", "nosuch"), "unknown group"),
        (("user", "add", "a,b"), "must not contain"),
        (("token", "create", "--role", "superuser"), "unknown role"),
        (("token", "create", "--role", "user"), "needs --user"),
        (("account", "add", "a/b/c"), "one level"),
    ]:
        out = run(env, *args)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)
    bad = dict(env, PROXYPRINT_DATABASE_URI="x")
    out = run(bad, "user", "add", "carol")
    assert out.returncode == 2 and "PROXYPRINT_DATABASE_URI" in out.stderr


async def test_papercut_check_and_fix(env: dict[str, str], tmp_path: Path) -> None:
    async with PaperCutSimulator(tmp_path / "pc.db", token="t0k") as sim:
        sim.add_printer("srv", "good", cost_mono=Decimal("0.10"))
        sim.add_printer("srv", "free", cost_mono=0)
        sim.add_printer("srv", "authed", cost_mono=Decimal("0.10"), unauthenticated=False)
        # The queue proxyprint sends PaperCut jobs to, charging the printing user: double.
        sim.add_printer("srv", "pc-managed", cost_mono=Decimal("0.10"))
        env = dict(env, PROXYPRINT_PAPERCUT_URL=sim.url, PROXYPRINT_PAPERCUT_TOKEN="t0k")
        queue = ("--queue", "pc-managed")

        check = await asyncio.to_thread(run, env, "papercut", "check", *queue)
        assert check.returncode == 1
        assert "srv\\free" in check.stdout and "srv\\authed" in check.stdout
        assert "srv\\good" not in check.stdout
        assert "Unauthenticated printer" in check.stdout  # the UI steps for a person
        assert "proxyprint-clearing: the clearing shared account does not exist" in check.stdout
        assert "srv\\pc-managed: charges the printing user's personal account" in check.stdout
        assert "double charge" in check.stdout

        fixed = await asyncio.to_thread(
            run, env, "papercut", "fix", "--default-cost", "0.05", *queue
        )
        assert "FIXED srv\\free" in fixed.stdout
        assert "FIXED proxyprint-clearing" in fixed.stdout
        assert "FIXED srv\\pc-managed" in fixed.stdout
        assert "NEEDS A PERSON srv\\authed" in fixed.stdout and fixed.returncode == 1
        assert sim.is_shared_account_exists("proxyprint-clearing")
        assert sim.get_printer_property("srv", "pc-managed", "charge-to-shared-account") == (
            "proxyprint-clearing"
        )

        again = await asyncio.to_thread(run, env, "papercut", "check", *queue)
        assert "srv\\free" not in again.stdout  # fixed for good
        assert "pc-managed" not in again.stdout and "clearing" not in again.stdout
        assert "srv\\authed" in again.stdout  # still needs a person


def test_token_list_revoke_and_expiry(env: dict[str, str]) -> None:
    assert run(env, "db", "upgrade").returncode == 0
    assert run(env, "user", "add", "alice").returncode == 0
    secret = run(env, "token", "create", "--role", "admin", "--label", "ops").stdout.strip()
    out = run(
        env, "token", "create", "--role", "user", "--user", "alice", "--expires", "2099-01-01"
    )
    assert out.returncode == 0, out.stderr
    assert run(env, "token", "create", "--role", "admin", "--expires", "1d").returncode == 0
    bad = run(env, "token", "create", "--role", "admin", "--expires", "yesterday")
    assert bad.returncode == 2 and "expires" in bad.stderr
    listed = run(env, "token", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "ROLE", "USER", "LABEL", "STATE"]
    assert len(lines) == 4 and "2099-01-01T00:00:00+00:00" in listed.stdout
    assert secret not in listed.stdout and "pp_" not in listed.stdout
    revoked = run(env, "token", "revoke", "ops")
    assert revoked.returncode == 0 and "revoked token(s) 1" in revoked.stdout
    assert "ops" not in run(env, "token", "list").stdout
    assert "revoked" in run(env, "token", "list", "--all").stdout
    missing = run(env, "token", "revoke", "99")
    assert missing.returncode == 2 and "no token" in missing.stderr


async def _seed_printer(url: str) -> None:
    from billing.db import make_engine, make_sessionmaker
    from proxy import printers

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await printers.add_printer(
                session, "pp-hold", target="ipp://127.0.0.1:9/ipp/print", mode="hold",
                cost_mono="0.10",
            )  # fmt: skip
    finally:
        await engine.dispose()


async def _events(url: str) -> list[tuple[str, str, str | None, str]]:
    from sqlalchemy import select

    from billing.db import make_engine, make_sessionmaker
    from billing.models import Event

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Event.subject_type, Event.subject_id, Event.reason, Event.actor).order_by(
                    Event.id
                )
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await engine.dispose()


def test_administration_commands(env: dict[str, str]) -> None:
    """list / show / edit / disable / delete per entity; every change an event with its actor."""
    url = env["PROXYPRINT_DATABASE_URL"]
    assert run(env, "db", "upgrade").returncode == 0
    asyncio.run(_seed_printer(url))
    for args in (("group", "add", "sales"), ("user", "add", "alice", "--group", "sales"),
                 ("user", "add", "bob"), ("account", "add", "Events/Gala"),
                 ("card", "add", "alice", "04:A1:B2:C3")):  # fmt: skip
        out = run(env, *args)
        assert out.returncode == 0, (args, out.stderr)
    reader = run(env, "reader", "add", "lobby", "--printer", "pp-hold")
    assert reader.returncode == 0

    def ok(*args: str) -> str:
        out = run(env, *args)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    # users
    assert ok("user", "edit", "alice", "--email", "alice@example.org", "--add-group", "sales")
    shown = ok("user", "show", "alice")
    assert "alice@example.org" in shown and "sales" in shown and "04a1b2c3" in shown
    ok("user", "disable", "bob")
    assert "disabled" in ok("user", "list")
    ok("user", "enable", "bob")
    ok("user", "delete", "bob")
    assert "bob" not in ok("user", "list") and "deleted" in ok("user", "list", "--deleted")
    # groups
    ok("group", "edit", "sales", "--remove-member", "alice")
    assert ok("group", "show", "sales").splitlines()[-1].split() == ["members", "-"]
    ok("group", "edit", "sales", "--add-member", "alice")
    assert "alice" in ok("group", "show", "sales")
    ok("group", "disable", "sales")
    # accounts: limits, deposits (once per key)
    ok("account", "edit", "user:alice", "--credit-limit", "10.00")
    assert "10.00" in ok("account", "show", "alice")
    assert "posted" in ok("account", "adjust", "alice", "5.00", "--reason", "cash",
                          "--idempotency-key", "k1")  # fmt: skip
    again = ok("account", "adjust", "alice", "5.00", "--reason", "cash", "--idempotency-key", "k1")
    assert "already posted" in again and "5.00" in again
    ok("account", "edit", "alice", "--unlimited")
    assert "unlimited" in ok("account", "show", "alice")
    ok("account", "delete", "shared:Events/Gala")
    listed = ok("account", "list")
    assert "Events/Gala" not in listed and "Events" in listed
    bad = run(env, "account", "delete", "user:alice")
    assert bad.returncode == 2 and "deleted with its user" in bad.stderr
    # printers: a price change, mode and hold expiry
    changed = ok("printer", "edit", "pp-hold", "--cost-mono", "0.20", "--hold-expiry-mins", "15")
    assert "cost_mono 0.1" in changed and "-> 0.20" in changed
    assert "hold_expiry_mins 60 -> 15" in changed
    assert "0.20" in ok("printer", "show", "pp-hold")
    bad = run(env, "printer", "edit", "pp-hold", "--cost-mono", "-1")
    assert bad.returncode == 2
    ok("printer", "disable", "pp-hold")
    assert "disabled" in ok("printer", "list")
    ok("printer", "enable", "pp-hold")
    # cards and readers
    assert "04a1b2c3" in ok("card", "list", "--user", "alice")
    new_token = ok("reader", "rotate", "lobby").strip()
    assert new_token.startswith("pp_") and new_token != reader.stdout.strip()
    ok("reader", "disable", "lobby")
    assert "disabled" in ok("reader", "list")
    assert "pp-hold" in ok("reader", "show", "lobby")
    ok("card", "delete", "04a1b2c3")
    assert "04a1b2c3" not in ok("card", "list")
    assert "deleted" in ok("card", "list", "--deleted")  # soft: the row stays
    ok("card", "add", "alice", "04:A1:B2:C3")  # the same number again, to the same user
    assert ok("card", "list").split().count("04a1b2c3") == 1
    assert run(env, "card", "delete", "nope").returncode != 0
    ok("reader", "delete", "lobby")
    assert "lobby" not in ok("reader", "list")

    events = asyncio.run(_events(url))
    cli = [(t, s, r) for t, s, r, actor in events if actor.startswith("cli")]
    expected = [
        ("user", "alice", "updated"), ("user", "bob", "disabled"), ("user", "bob", "deleted"),
        ("group", "sales", "members-changed"), ("group", "sales", "disabled"),
        ("printer", "pp-hold", "updated"), ("reader", "lobby", "token-rotated"),
        ("reader", "lobby", "deleted"),
    ]  # fmt: skip
    for item in expected:
        assert item in cli, item
    assert any(t == "account" and r == "deposit" for t, _, r in cli)
    assert any(t == "card" and r == "deleted" for t, _, r in cli)
    assert [r for t, _, r in cli if t == "card"][-2:] == ["deleted", "created"]


def test_db_verify_names_a_wrong_balance_and_repairs_it(env: dict[str, str]) -> None:
    """``db verify`` checks the stored balances against the ledger's sums: clean
    after real postings, exit 1 naming a total changed behind the ledger's back,
    ``--repair`` recomputes it."""
    import sqlite3

    assert run(env, "db", "upgrade").returncode == 0
    assert run(env, "user", "add", "alice").returncode == 0
    for key in ("k1", "k2"):
        out = run(env, "account", "adjust", "alice", "2.50", "--reason", "cash",
                  "--idempotency-key", key)  # fmt: skip
        assert out.returncode == 0, out.stderr
    clean = run(env, "db", "verify")
    assert clean.returncode == 0 and "sum of its ledger entries" in clean.stdout, clean.stderr
    path = env["PROXYPRINT_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute("UPDATE account_balances SET balance = 0").rowcount == 1
    wrong = run(env, "db", "verify")
    assert wrong.returncode == 1
    assert "stored balance 0.00 pages 0, ledger sums 5.00" in wrong.stdout, wrong.stdout
    repaired = run(env, "db", "verify", "--repair")
    assert repaired.returncode == 0 and "1 account(s) repaired" in repaired.stdout
    assert run(env, "db", "verify").returncode == 0
    assert "5.00" in run(env, "account", "show", "alice").stdout
