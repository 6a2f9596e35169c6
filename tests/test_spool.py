"""The spool's start-up cleanup: what a crash left goes; what another instance
sharing the spool is writing right now stays."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from proxy import spool as spool_module
from proxy.app import create_app
from proxy.config import build_config
from proxy.spool import Incomplete, Spool, TooLarge


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_receive_writes_a_private_file_with_its_hash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    got = await spool.receive(_chunks(b"%PDF-", b"x" * 5000), max_bytes=10_000)
    assert got.path.parent == spool.jobs and got.size == 5005
    assert got.sha256 == hashlib.sha256(b"%PDF-" + b"x" * 5000).hexdigest()
    assert got.path.stat().st_mode & 0o777 == 0o600
    assert spool.jobs.stat().st_mode & 0o777 == 0o700


def test_cleanup_spares_fresh_files_when_the_spool_is_shared(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    kept = spool.jobs / "referenced"
    old_orphan, fresh_orphan = spool.jobs / "old", spool.jobs / "fresh"
    old_part, fresh_part = spool.incoming / "old.part", spool.incoming / "fresh.part"
    for path in (kept, old_orphan, fresh_orphan, old_part, fresh_part):
        path.write_bytes(b"x")
    for path in (kept, old_orphan, old_part):
        _age(path, 7200)

    spool.prepare(min_age=3600)
    assert spool.sweep({str(kept)}, min_age=3600) == 1
    assert {p.name for p in spool.jobs.iterdir()} == {"referenced", "fresh"}
    assert [p.name for p in spool.incoming.iterdir()] == ["fresh.part"]

    spool.prepare()  # one instance (SQLite): everything unreferenced is a crash's
    assert spool.sweep({str(kept)}) == 1
    assert [p.name for p in spool.jobs.iterdir()] == ["referenced"]
    assert list(spool.incoming.iterdir()) == []


async def _start(db_url: str, spool_dir: Path) -> web.AppRunner:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(spool_dir)}})
    runner = web.AppRunner(create_app(config, workers=False, intake=False))
    await runner.setup()
    return runner


async def test_a_starting_instance_leaves_a_peers_uncommitted_job_alone(
    db_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "shared-spool"
    Spool(spool_dir).prepare()
    # Another instance renamed a job into jobs/ and is about to commit its row.
    uncommitted = spool_dir / "jobs" / "peer-job"
    uncommitted.write_bytes(b"%PDF-")
    runner = await _start(db_url, spool_dir)
    await runner.cleanup()
    if db_url.startswith("sqlite"):
        assert not uncommitted.exists()  # one instance only: a crash's leftover
    else:
        assert uncommitted.exists()
        _age(uncommitted, 7200)  # an hour on, it can only be a crash's
        runner = await _start(db_url, spool_dir)
        await runner.cleanup()
        assert not uncommitted.exists()
    shutil.rmtree(spool_dir)


async def test_copy_in_copies_a_passed_file_with_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "COPY_BLOCK", 1 << 20)  # several blocks
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    data = os.urandom((3 << 20) + 17)
    source = tmp_path / "cupsd-spool-file"
    source.write_bytes(data)
    with source.open("rb") as fh:
        got = await spool.copy_in(fh.fileno(), max_bytes=10 << 20, alive=lambda: True)
    assert got.path.read_bytes() == data and got.size == len(data)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.stat().st_mode & 0o777 == 0o600
    assert list(spool.incoming.iterdir()) == []


async def test_copy_in_leaves_nothing_when_the_sender_goes_or_the_file_is_too_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "COPY_BLOCK", 1 << 20)
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    source = tmp_path / "doc"
    source.write_bytes(os.urandom(4 << 20))
    looks: list[int] = []

    def alive() -> bool:  # the backend hangs up after the second block
        looks.append(1)
        return len(looks) <= 2

    with source.open("rb") as fh:
        with pytest.raises(Incomplete):
            await spool.copy_in(fh.fileno(), max_bytes=10 << 20, alive=alive)
        assert len(looks) == 3  # it was copying when the sender went
        with pytest.raises(TooLarge):
            await spool.copy_in(fh.fileno(), max_bytes=1 << 20, alive=lambda: True)
    assert list(spool.incoming.iterdir()) == [] and list(spool.jobs.iterdir()) == []
