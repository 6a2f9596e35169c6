"""Request ids and structured logs.

Every record written while a request is handled carries the request's id
(``X-Request-Id`` when sane, else a new one), whichever logger wrote it; the
answer carries the id back. ``[log] format = "json"`` writes one JSON object
per line. Checked in process (the app factory with ``aiohttp_client``) and
through ``proxyprint serve`` as a real process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from proxy.app import create_app
from proxy.config import LogConfig, build_config, load_config
from proxy.exceptions import ConfigError
from proxy.logs import REQUEST_ID_HEADER, setup_logging

Client = TestClient[web.Request, web.Application]
KEYS = {"time", "level", "logger", "message", "request_id", "exception"}
GENERATED = re.compile(r"[0-9a-f]{32}")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
log = logging.getLogger("proxy.test")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """``setup_logging`` with JSON into a buffer; the root logger restored after."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = setup_logging(LogConfig(format="json", level="INFO"), stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    out = []
    for line in stream.getvalue().splitlines():
        entry = json.loads(line)  # every line is one whole JSON object
        assert set(entry) == KEYS, entry
        assert ISO_Z.fullmatch(entry["time"]), entry["time"]
        out.append(entry)
    return out


async def boom(request: web.Request) -> web.Response:
    log.info("working on %s\nsecond line", request.path)
    raise RuntimeError("kaput")


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path, sqlite_template: Path) -> Client:
    shutil.copyfile(sqlite_template, tmp_path / "x.db")
    config = build_config(
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
            "spool": {"dir": str(tmp_path / "spool")},
        }
    )
    app = create_app(config, workers=False, intake=False)
    app.router.add_get("/boom", boom)  # a handler that logs, then fails
    return await aiohttp_client(app)


async def test_json_lines_carry_the_request_id(client: Client, json_log: io.StringIO) -> None:
    log.info("before any request")
    async with client.get("/boom", headers={REQUEST_ID_HEADER: "req-1.A_b"}) as resp:
        assert resp.status == 500
        assert resp.headers[REQUEST_ID_HEADER] == "req-1.A_b"
        assert (await resp.json())["error"]["code"] == "internal"
    async with client.get("/boom") as resp:
        generated = resp.headers[REQUEST_ID_HEADER]
    assert GENERATED.fullmatch(generated)
    entries = lines(json_log)

    outside = [e for e in entries if e["message"] == "before any request"]
    assert outside == [
        {
            "time": outside[0]["time"],
            "level": "INFO",
            "logger": "proxy.test",
            "message": "before any request",
            "request_id": None,
            "exception": None,
        }
    ]
    for rid in ("req-1.A_b", generated):
        mine = [e for e in entries if e["request_id"] == rid]
        by_logger = {e["logger"]: e for e in mine}
        # The handler's own line (two lines of text, one line of JSON), the error
        # middleware's traceback, and aiohttp's access log after the answer.
        assert by_logger["proxy.test"]["message"] == "working on /boom\nsecond line"
        error = by_logger["proxy.api.errors"]
        assert error["level"] == "ERROR"
        assert "RuntimeError: kaput" in error["exception"]
        assert error["exception"].startswith("Traceback")
        assert '"GET /boom HTTP/1.1" 500' in by_logger["aiohttp.access"]["message"]
    assert len(json_log.getvalue().splitlines()) == len(entries)


async def test_insane_request_ids_are_replaced(client: Client, json_log: io.StringIO) -> None:
    for sent in ("has space", "x" * 65, "é", "a/b", "", "id\twith\ttabs"):
        async with client.get("/healthz", headers={REQUEST_ID_HEADER: sent}) as resp:
            assert resp.status == 200
            got = resp.headers[REQUEST_ID_HEADER]
            assert got != sent and GENERATED.fullmatch(got), sent
    async with client.get("/healthz", headers={REQUEST_ID_HEADER: "x" * 64}) as resp:
        assert resp.headers[REQUEST_ID_HEADER] == "x" * 64
    # Every answer carries it: errors of the API and of aiohttp's routing alike.
    for path in ("/api/v1/printouts", "/no/such/route", "/api/v1/openapi.json"):
        async with client.get(path, headers={REQUEST_ID_HEADER: "r-42"}) as resp:
            assert resp.headers[REQUEST_ID_HEADER] == "r-42", path
    async with client.delete("/healthz", headers={REQUEST_ID_HEADER: "r-43"}) as resp:
        assert resp.status == 405 and resp.headers[REQUEST_ID_HEADER] == "r-43"
    access = [e for e in lines(json_log) if e["logger"] == "aiohttp.access"]
    assert {e["request_id"] for e in access} >= {"x" * 64, "r-42", "r-43"}


def test_text_format_tags_records_with_the_request_id() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging(LogConfig(format="text", level="DEBUG"), stream)
    try:
        from proxy.logs import REQUEST_ID

        log.debug("outside")
        token = REQUEST_ID.set("abc")
        try:
            log.warning("inside")
        finally:
            REQUEST_ID.reset(token)
        # A second call replaces our handler instead of adding another.
        assert setup_logging(LogConfig(format="text"), stream) is not handler
        handler = next(h for h in root.handlers if h.get_name() == "proxyprint")
        assert [h.get_name() for h in root.handlers].count("proxyprint") == 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    # Only this test's logger: another test's database thread may still log at DEBUG.
    out = [line for line in stream.getvalue().splitlines() if " proxy.test" in line]
    assert out[0].endswith(" DEBUG proxy.test: outside")
    assert out[1].endswith(" WARNING proxy.test [abc]: inside")


def test_log_configuration(tmp_path: Path) -> None:
    assert build_config({}).log == LogConfig(format="text", level="INFO")
    config = build_config({"log": {"format": "json", "level": "debug"}})
    assert config.log.format == "json"
    path = tmp_path / "pp.toml"
    path.write_text('[log]\nformat = "text"\n')
    env = {"PROXYPRINT_LOG_FORMAT": "json", "PROXYPRINT_LOG_LEVEL": "WARNING"}
    assert load_config(path, env=env).log == LogConfig(format="json", level="WARNING")
    for raw, needle in (
        ({"log": {"format": "xml"}}, "log.format"),
        ({"log": {"level": "loud"}}, "log.level"),
        ({"log": {"colour": True}}, "log.colour"),
    ):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            build_config(raw)


# --- `proxyprint serve` as a real process --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_writes_json_lines(tmp_path: Path, short_tmp: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env |= {
        "PROXYPRINT_CONFIG": str(tmp_path / "none.toml"),
        "PROXYPRINT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/pp.db",
        "PROXYPRINT_SPOOL_DIR": str(tmp_path / "spool"),
        "PROXYPRINT_INTAKE_SOCKET": str(short_tmp / "i.sock"),
        "PROXYPRINT_HTTP_LISTEN": f"127.0.0.1:{port}",
        "PROXYPRINT_LOG_FORMAT": "json",
    }
    (tmp_path / "none.toml").write_text("")
    cli = [sys.executable, "-m", "proxy.cli"]
    upgrade = subprocess.run(
        [*cli, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr
    proc = subprocess.Popen(
        [*cli, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/healthz", headers={REQUEST_ID_HEADER: "probe-1"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    assert resp.headers[REQUEST_ID_HEADER] == "probe-1"
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines()]
    assert all(set(e) == KEYS for e in entries), entries
    access = [e for e in entries if e["logger"] == "aiohttp.access"]
    assert any(e["request_id"] == "probe-1" and "/healthz" in e["message"] for e in access)
