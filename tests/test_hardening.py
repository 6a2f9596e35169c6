"""Hardening: SQLite readers never queue behind a writer; health answers in time."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.db import make_engine, make_private, make_sessionmaker
from proxy import dbadmin
from proxy.api.export import text_cell
from proxy.app import create_app
from proxy.config import build_config, secrets_in
from proxy.listen import MAX_REQUEST_LINE, GuardedRunner
from proxy.probe import within
from tests import factories as f

REPO = Path(__file__).resolve().parent.parent

# Holds SQLite's write lock from another process, as a long writer would.
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE users SET email = email")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # the lock is really held
    return proc


async def test_sqlite_readers_do_not_wait_for_a_writer(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    template = tmp_path / "db.sqlite"
    url = f"sqlite+aiosqlite:///{template}"
    engine = make_engine(url)
    await dbadmin.upgrade(engine)
    sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        secret = await f.token(session, "admin")
    await engine.dispose()

    config = build_config({}).replace("database", url=url)
    config = config.replace("spool", dir=str(tmp_path / "spool"))
    client = await aiohttp_client(create_app(config, workers=False, intake=False))
    headers = {"Authorization": f"Bearer {secret}"}

    locker = _hold_write_lock(template, 30)
    try:
        started = time.monotonic()
        async with client.get("/api/v1/printouts", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["items"] == []
        async with client.get("/healthz") as resp:
            assert resp.status == 200
        async with client.get("/api/v1/accounts", headers=headers) as resp:
            assert resp.status == 200
        # Reads answered while the writer still holds the lock.
        assert locker.poll() is None
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"reads waited {elapsed:.1f} s for the writer"
    finally:
        locker.kill()
        locker.communicate()


async def test_a_probe_gives_up_at_its_limit_even_if_the_work_hangs() -> None:
    release = asyncio.Event()

    async def stuck() -> str:
        try:
            await release.wait()
        except asyncio.CancelledError:
            # A stuck close: cancellation itself takes long, as a session's
            # rollback on a blocked connection does.
            await asyncio.sleep(5)
            raise
        return "never"

    async def quick() -> str:
        return "ok"

    assert await within(1.0, quick()) == "ok"
    started = time.monotonic()
    try:
        await within(0.2, stuck())
    except TimeoutError:
        pass
    else:
        raise AssertionError("the probe did not time out")
    assert time.monotonic() - started < 2


def _cli(
    *args: str, cwd: Path, umask: int = 0o022, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),
        check=False,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_db_upgrade_under_umask_022_makes_private_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "proxyprint.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{state}/proxyprint.db"\n')
    done = _cli("--config", str(config), "db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _mode(state) == 0o700
    db = state / "proxyprint.db"
    assert _mode(db) == 0o600
    # WAL mode: an open connection has -wal and -shm files; they get the db's mode.
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE probe (x)")
        for suffix in ("-wal", "-shm"):
            side = db.with_name(db.name + suffix)
            assert side.exists()
            assert _mode(side) == 0o600, suffix
    finally:
        conn.close()


def test_a_loose_database_file_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "loose.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    make_private(db)
    assert _mode(db) == 0o600


def test_a_world_readable_config_with_a_secret_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "proxyprint.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/db.sqlite"\n'
        '[intake]\ntcp = "127.0.0.1:6399"\nsecret = "s3cret-s3cret-s3cret-s3cret-s3cret!"\n'
    )
    os.chmod(config, 0o644)
    refused = _cli("--config", str(config), "db", "upgrade", cwd=tmp_path)
    assert refused.returncode == 2
    assert str(config) in refused.stderr and "intake.secret" in refused.stderr
    assert not (tmp_path / "db.sqlite").exists()  # refused before writing anything
    allowed = _cli(
        "--config", str(config), "--allow-readable-config", "db", "upgrade", cwd=tmp_path
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "WARNING" in allowed.stderr and str(config) in allowed.stderr
    os.chmod(config, 0o600)
    private = _cli("--config", str(config), "db", "upgrade", cwd=tmp_path)
    assert private.returncode == 0 and "WARNING" not in private.stderr


def test_a_readable_config_without_secrets_is_fine() -> None:
    assert secrets_in({"database": {"url": "postgresql+asyncpg://pp@db/pp"}}) == []
    assert secrets_in({"database": {"url": "postgresql+asyncpg://pp:pw@db/pp"}}) == ["database.url"]
    assert secrets_in({"papercut": {"token": "t"}, "intake": {"secret": ""}}) == ["papercut.token"]


def test_no_config_file_says_which_defaults_it_uses(tmp_path: Path) -> None:
    assert not Path("/etc/proxyprint/proxyprint.toml").exists(), "test needs no system config"
    db = tmp_path / "state" / "pp.db"
    done = _cli(
        "db", "upgrade", cwd=tmp_path, env={"PROXYPRINT_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    )
    assert done.returncode == 0, done.stderr
    assert "no configuration file at /etc/proxyprint/proxyprint.toml; using defaults" in done.stderr
    assert f"database sqlite+aiosqlite:///{db}" in done.stderr


@pytest.mark.parametrize(
    "value",
    ["=1+1", " =1+1", "\n=HYPERLINK(1)", "\t=1", "\u3000=1", "＝1+1", "＋1", "－1", "＠SUM(A1)",
     "﹦1", "+1", "-1", "@x", "\r=1", "\nplain"],
)  # fmt: skip
def test_csv_guard_catches_formulas_behind_blanks_and_wide_forms(value: str) -> None:
    assert text_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["report.pdf", "a=b", "Q3 - sales", "", "  spaced"])
def test_csv_guard_leaves_plain_text_alone(value: str) -> None:
    assert text_cell(value) == value


async def _raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * (MAX_REQUEST_LINE + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # too long
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",  # TLS hello to plain port
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ],
)
async def test_parser_errors_answer_in_the_error_shape(
    db_url: str, tmp_path: Path, request_bytes: bytes
) -> None:
    config = build_config({}).replace("database", url=db_url)
    config = config.replace("spool", dir=str(tmp_path / "spool"))
    runner = GuardedRunner(
        create_app(config, workers=False, intake=False), name="api", limits=config.limits
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        status, headers, body = await _raw_exchange(port, request_bytes)
    finally:
        await runner.cleanup()
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["message"]
