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
