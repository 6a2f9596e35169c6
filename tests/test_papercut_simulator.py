"""The PaperCut simulator: its CUPS backend in a private cupsd, controls, faults, CLI."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutUnavailable
from proxy import cupsadmin
from proxy.devkit.cupsd import TERMINAL_STATES, PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.papercut import simbackend
from proxy.devkit.papercut.simdb import SimDatabase, SimFault, SimNotFound
from proxy.devkit.papercut.simulator import (
    FaultMode,
    PaperCutSimulator,
    install_papercut_backend,
)
from proxy.targets.base import IppJobState
from tests.fixtures_cups import free_tcp_port, unique

TOKEN = "T0k3n"
SERVER = simbackend.DEFAULT_SERVER
PRINTER_STOPPED = 5


def doc_name(title: str = "report.pdf") -> str:
    return f"{title}.proxyprint.{uuid.uuid4()}"


# --- the backend through a private cupsd ---------------------------------------------


@pytest.fixture
def sim_db(private_cupsd: PrivateCupsd, short_tmp: Path) -> Iterator[SimDatabase]:
    """The simulator's database, with the backend installed in the private cupsd."""
    path = short_tmp / "sim.db"
    install_papercut_backend(private_cupsd.serverbin, path)
    db = SimDatabase(path)
    yield db
    db.close()


def papercut_queue(cupsd: PrivateCupsd, db: SimDatabase, printer: str) -> str:
    queue = unique("pc")
    cupsd.add_queue(queue, simbackend.device_uri(db.path, printer))
    return queue


@pytest.mark.cups
def test_backend_logs_a_job_under_its_title(
    private_cupsd: PrivateCupsd, sim_db: SimDatabase, short_tmp: Path
) -> None:
    sim_db.add_printer(SERVER, "pc-direct", cost_mono=Decimal("0.10"))
    queue = papercut_queue(private_cupsd, sim_db, "pc-direct")
    title = doc_name()
    pdf = make_pdf(short_tmp / "three.pdf", 3)
    job = private_cupsd.lp(queue, pdf, user="Carol", title=title, copies=2)
    assert private_cupsd.wait_job(job, TERMINAL_STATES) == IppJobState.COMPLETED

    [row] = sim_db.usage_rows(title)
    assert row.document_name == title
    assert row.user_name == "carol"  # lower-cased, created on first print
    assert (row.server_name, row.printer_name) == (SERVER, "pc-direct")
    assert (row.total_pages, row.copies, row.total_color_pages) == (6, 2, 0)
    assert row.usage_cost == Decimal("0.60")
    assert row.printed and not row.cancelled and not row.held
    assert row.job_type == "PRINT"
    # PaperCut charges a printed job to its charged account: here the printing user's.
    assert row.charged_to == "carol"
    assert sim_db.balance("carol") == Decimal("-0.60")


@pytest.mark.cups
def test_hold_release_queue_holds_until_released(
    private_cupsd: PrivateCupsd, sim_db: SimDatabase, short_tmp: Path
) -> None:
    sim_db.add_printer(SERVER, "pc-hold", cost_mono=Decimal("0.20"), hold_release=True)
    queue = papercut_queue(private_cupsd, sim_db, "pc-hold")
    titles = [doc_name("a.pdf"), doc_name("b.pdf")]
    pdf = make_pdf(short_tmp / "one.pdf", 1)
    jobs = [private_cupsd.lp(queue, pdf, user="dave", title=t) for t in titles]
    for job in jobs:
        assert private_cupsd.wait_job(job, TERMINAL_STATES) == IppJobState.COMPLETED

    held = {row.document_name: row for row in sim_db.held_jobs()}
    assert set(titles) <= set(held)
    assert not held[titles[0]].printed and not held[titles[0]].cancelled
    assert sim_db.balance("dave") == 0  # a held job is charged when released
    assert sim_db.release(titles[0]) is True
    assert sim_db.cancel(titles[1]) is True
    assert sim_db.balance("dave") == Decimal("-0.20")  # the cancelled one costs nothing
    [released] = sim_db.usage_rows(titles[0])
    [cancelled] = sim_db.usage_rows(titles[1])
    assert released.printed and released.usage_cost == Decimal("0.20")
    assert cancelled.cancelled and not cancelled.printed
    assert not {r.document_name for r in sim_db.held_jobs()} & set(titles)


@pytest.mark.cups
def test_backend_text_colour_and_unknown_printer(
    private_cupsd: PrivateCupsd, sim_db: SimDatabase
) -> None:
    sim_db.add_printer(SERVER, "pc-color", cost_mono=Decimal("0.10"), cost_color=Decimal("0.50"))
    color_queue = papercut_queue(private_cupsd, sim_db, "pc-color")
    new_queue = papercut_queue(private_cupsd, sim_db, "pc-new")  # not in PaperCut yet
    colour, plain = doc_name("photo"), doc_name("notes.txt")
    jobs = [
        private_cupsd.lp(
            color_queue,
            None,
            user="erin",
            title=colour,
            stdin=b"not a pdf",
            options={"print-color-mode": "color"},
        ),
        private_cupsd.lp(new_queue, None, user="erin", title=plain, stdin=b"hello\n"),
    ]
    for job in jobs:
        assert private_cupsd.wait_job(job, TERMINAL_STATES) == IppJobState.COMPLETED
    [colour_row] = sim_db.usage_rows(colour)
    assert (colour_row.total_pages, colour_row.total_color_pages) == (1, 1)
    assert colour_row.usage_cost == Decimal("0.50")
    [plain_row] = sim_db.usage_rows(plain)
    assert plain_row.printer_name == "pc-new"  # PaperCut adds a printer on its first job
    assert plain_row.usage_cost == 0  # no cost set
    assert plain_row.printed


@pytest.mark.cups
def test_backend_stops_the_queue_without_a_database(
    private_cupsd: PrivateCupsd, sim_db: SimDatabase, short_tmp: Path
) -> None:
    queue = unique("pc-nodb")
    private_cupsd.add_queue(queue, simbackend.device_uri(short_tmp / "missing.db", "p"))
    job = private_cupsd.lp(queue, None, user="erin", title=doc_name(), stdin=b"x")
    deadline = time.monotonic() + 20
    state = 0
    while time.monotonic() < deadline:
        state = int(
            str(
                cupsadmin.printer_attributes(queue, cups_server=private_cupsd.server)[
                    "printer-state"
                ]
            )
        )
        if state == PRINTER_STOPPED:
            break
        time.sleep(0.05)
    try:
        assert state == PRINTER_STOPPED  # the job is kept, not lost
        assert private_cupsd.job_state(job) not in TERMINAL_STATES
        assert not (short_tmp / "missing.db").exists()
        assert "PaperCut simulator database" in private_cupsd.error_log
    finally:
        cupsadmin.delete_queue(queue, cups_server=private_cupsd.server)


# --- the backend's parts, without CUPS ---------------------------------------------------


def test_count_pages(short_tmp: Path) -> None:
    pdf = make_pdf(short_tmp / "seven.pdf", 7).read_bytes()
    for chunk in (16, 17, 64, 100, 1 << 20):
        assert simbackend.count_pages(io.BytesIO(pdf), chunk) == 7
    fake = b"%PDF-1.4\n" + b"<< /Type /Pages /Count 3 >>" + b"<</Type/Page>>" * 3 + b"/Type /Page"
    for chunk in (16, 20, 31, 1 << 20):
        assert simbackend.count_pages(io.BytesIO(fake), chunk) == 4
    assert simbackend.count_pages(io.BytesIO(b"%!PS-Adobe-3.0\n" * 1000), 64) == 1
    assert simbackend.count_pages(io.BytesIO(b""), 64) == 1
    assert simbackend.count_pages(io.BytesIO(b"%PDF-1.7 no page objects"), 64) == 1


def test_device_uri_round_trip() -> None:
    path = Path("/tmp/a dir/sim?.db")
    uri = simbackend.device_uri(path, "Lobby Printer", "srv 1")
    assert uri.startswith("papercut-sim:/tmp/a%20dir/")
    assert simbackend.parse_device_uri(uri, "queue") == (str(path), "srv 1", "Lobby Printer")
    assert simbackend.parse_device_uri("papercut-sim:///x.db", "queue") == (
        "/x.db",
        SERVER,
        "queue",
    )
    for bad in ("ipp://x", "papercut-sim:relative.db", "papercut-sim:/x.db"):
        with pytest.raises(ValueError):
            simbackend.parse_device_uri(bad, "" if bad.endswith("x.db") else "q")
    assert simbackend.job_flags("job-uuid=x print-color-mode=color sides=two-sided-long-edge") == (
        True,
        True,
    )
    assert simbackend.job_flags("ColorModel=Gray") == (False, False)


def test_backend_discovery_and_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.devkit.papercut.simbackend"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith('network papercut-sim "Unknown"')
    bad = subprocess.run(
        [sys.executable, "-m", "proxy.devkit.papercut.simbackend", "1", "u"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == simbackend.CUPS_BACKEND_FAILED


def test_installed_backend_is_a_root_only_script(tmp_path: Path) -> None:
    path = install_papercut_backend(tmp_path / "serverbin", tmp_path / "db" / "sim.db")
    assert path == tmp_path / "serverbin" / "backend" / "papercut-sim"
    assert path.stat().st_mode & 0o777 == 0o700
    assert path.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert (tmp_path / "db" / "sim.db").exists()  # the schema is there for queues


# --- controls (Python) ---------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SimDatabase]:
    database = SimDatabase(tmp_path / "sim.db")
    database.add_printer(SERVER, "hold", cost_mono=Decimal("0.10"), hold_release=True)
    yield database
    database.close()


def test_controls_act_on_held_jobs_only(db: SimDatabase) -> None:
    names = [doc_name(str(n)) for n in range(5)]
    for name in names:
        db.record_job(name, user="amy", printer="hold", pages=2)
    assert {r.document_name for r in db.held_jobs()} == set(names)

    assert db.release(names[0]) and db.cancel(names[1])
    assert db.deny(names[2], "FILTER_RULE") and db.expire(names[3])
    rows = {name: db.usage_rows(name)[0] for name in names}
    assert rows[names[0]].printed and rows[names[0]].usage_cost == Decimal("0.20")
    assert rows[names[1]].cancelled and not rows[names[1]].denied_reason
    assert rows[names[2]].denied_reason == "FILTER_RULE" and not rows[names[2]].usage_allowed
    assert rows[names[3]].cancelled and rows[names[3]].denied_reason == "TIMEOUT"
    assert rows[names[4]].held
    # Only a held job can be decided; a decided one answers False.
    for control in (db.release, db.cancel, db.expire):
        assert control(names[0]) is False
    assert db.deny(names[1], "X") is False
    assert db.balance("amy") == Decimal("-0.20")  # only the released job was charged
    assert db.refund(names[0]) is True and db.refund(names[0]) is False
    assert db.usage_rows(names[0])[0].refunded
    with pytest.raises(SimNotFound):
        db.release("no such document")
    assert db.balance("amy") == 0  # the refund gave it back
    [refund] = db.adjustments(comment_contains=names[0])
    assert (refund.transaction_type, refund.amount) == ("PRINT_REFUND", Decimal("0.20"))


def test_a_printer_charging_a_shared_account_charges_it_not_the_user(db: SimDatabase) -> None:
    db.add_shared_account("Clearing")
    db.add_printer("srv", "shared", cost_mono=Decimal("0.15"), charge_account="Clearing")
    db.add_printer("srv", "personal", cost_mono=Decimal("0.15"))
    db.record_job("a.pdf", user="amy", printer="shared", server="srv", pages=2)
    db.record_job("b.pdf", user="amy", printer="personal", server="srv", pages=1)
    assert db.shared_balance("Clearing") == Decimal("-0.30")
    assert db.balance("amy") == Decimal("-0.15")
    assert db.usage_rows("a.pdf")[0].charged_to == "Clearing"
    assert db.usage_rows("b.pdf")[0].charged_to == "amy"
    assert db.total_balance() == Decimal("-0.45")
    # The printer setting, as a printer property: "" is the personal account.
    assert db.get_printer_property("srv", "shared", "charge-to-shared-account") == "Clearing"
    assert db.get_printer_property("srv", "personal", "charge-to-shared-account") == ""
    db.set_printer_charge_account("srv", "personal", "Clearing")
    db.record_job("c.pdf", user="amy", printer="personal", server="srv")
    assert db.shared_balance("Clearing") == Decimal("-0.45")
    with pytest.raises(SimFault, match="Shared account does not exist"):
        db.set_printer_charge_account("srv", "personal", "nosuch")
    db.set_printer_charge_account("srv", "personal", None)
    assert db.get_printer_property("srv", "personal", "charge-to-shared-account") == ""


def test_seeding_helpers(db: SimDatabase) -> None:
    db.add_user("Zed", Decimal("1.50"), groups=["crew"])
    db.add_shared_account("Events/Gala", Decimal("5"))
    db.add_group("ops", members=["zed"])
    assert db.balance("ZED") == Decimal("1.50")
    assert db.shared_balance("Events\\Gala") == Decimal("5")
    assert db.get_user_groups("zed") == ["crew", "ops"]
    with pytest.raises(SimFault, match="already exists"):
        db.add_user("zed")
    # A disabled printer denies what it gets.
    db.add_printer(SERVER, "off", disabled=True)
    db.record_job("x.proxyprint.1", user="zed", printer="off")
    [row] = db.usage_rows("x.proxyprint.1")
    assert row.denied_reason == "PRINTER_DISABLED" and not row.printed


# --- the server: controls over HTTP, faults ---------------------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PaperCutSimulator]:
    async with PaperCutSimulator(tmp_path / "sim.db", token=TOKEN, hang_seconds=5) as simulator:
        simulator.add_printer(SERVER, "hold", cost_mono=Decimal("0.10"), hold_release=True)
        yield simulator


async def test_http_controls(sim: PaperCutSimulator) -> None:
    names = [doc_name(str(n)) for n in range(4)]
    for name in names:
        sim.record_job(name, user="amy", printer="hold")
    async with aiohttp.ClientSession(sim.base_url) as http:
        async with http.get("/sim/held") as response:
            assert response.status == 200
            assert {r["document_name"] for r in await response.json()} == set(names)
        for path, body in (
            ("/sim/release", {"document_name": names[0]}),
            ("/sim/cancel", {"document_name": names[1]}),
            ("/sim/deny", {"document_name": names[2], "reason": "QUOTA"}),
            ("/sim/expire", {"document_name": names[3]}),
        ):
            async with http.post(path, json=body) as response:
                assert response.status == 200, await response.text()
        async with http.post("/sim/release", json={"document_name": names[0]}) as response:
            assert response.status == 409
        async with http.post("/sim/release", json={"document_name": "nope"}) as response:
            assert response.status == 404
        async with http.post("/sim/deny", json={"document_name": names[0]}) as response:
            assert response.status == 400
        async with http.get("/sim/jobs", params={"document_name": names[0]}) as response:
            [row] = await response.json()
            assert row["printed"] is True and row["usage_cost"] == "0.10"

        async with http.post("/sim/users", json={"name": "Ann", "balance": "2.50"}) as response:
            assert response.status == 201
        async with http.post("/sim/users", json={"name": "ann"}) as response:
            assert response.status == 409
        async with http.post("/sim/shared-accounts", json={"name": "P/Q", "balance": "-1"}) as r:
            assert r.status == 201
        async with http.post("/sim/groups", json={"name": "g", "members": ["ann"]}) as response:
            assert response.status == 201
        async with http.post(
            "/sim/printers", json={"name": "p2", "cost_mono": "0.07", "hold_release": True}
        ) as response:
            assert response.status == 201
        async with http.get("/sim/users/ANN/balance") as response:
            assert await response.json() == {"balance": "2.50"}
        async with http.get("/sim/users/nobody/balance") as response:
            assert response.status == 404
        async with http.get("/sim/adjustments") as response:
            assert [a["amount"] for a in await response.json()] == ["2.50", "-1"]
        async with http.post("/sim/faults", json={"fail_rate": 2}) as response:
            assert response.status == 400
        async with http.post("/sim/inject", json={"mode": "http-500", "count": 2}) as response:
            assert await response.json() == {"scripted": 2}
        async with http.post("/sim/users", data=b"{not json") as response:
            assert response.status == 400
    assert sim.shared_balance("P/Q") == Decimal("-1")
    assert sim.get_group_members("g", 0, 10) == ["ann"]
    assert sim.get_printer_cost_simple(SERVER, "p2") == pytest.approx(0.07)


async def test_fail_rate_answers_500_before_applying(sim: PaperCutSimulator) -> None:
    sim.add_user("amy", Decimal("1"))
    sim.set_faults(fail_rate=1.0, seed=1)
    async with PaperCutClient(sim.url, TOKEN, attempts=2, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable, match="HTTP 500"):
            await pc.adjust_user_account_balance("amy", Decimal("-1"), "x")
        with pytest.raises(PaperCutUnavailable, match="HTTP 500"):
            await pc.is_user_exists("amy")
    assert sim.applied.total() == 0
    assert sim.balance("amy") == Decimal("1")
    sim.clear_faults()
    with pytest.raises(ValueError):
        sim.set_faults(fail_rate=0.6, timeout_rate=0.6)


async def test_timeout_rate_applies_writes_then_hangs(sim: PaperCutSimulator) -> None:
    sim.add_user("amy", Decimal("1"))
    sim.set_faults(timeout_rate=1.0, seed=3)
    async with PaperCutClient(sim.url, TOKEN, timeout=0.2, attempts=2, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable):
            await pc.adjust_user_account_balance("amy", Decimal("-1"), "po [pp:9]")
        with pytest.raises(PaperCutUnavailable):
            await pc.get_user_account_balance("amy")
    # The write took effect although its caller saw a timeout; the reads did not run.
    assert sim.applied == {"api.adjustUserAccountBalance": 1}
    assert sim.balance("amy") == 0
    assert len(sim.adjustments(comment_contains="[pp:9]")) == 1
    sim.set_faults(timeout_rate=1.0, apply_before_timeout=False)
    async with PaperCutClient(sim.url, TOKEN, timeout=0.2, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable):
            await pc.adjust_user_account_balance("amy", Decimal("-1"), "po [pp:10]")
    assert sim.balance("amy") == 0


async def test_apply_then_500(sim: PaperCutSimulator) -> None:
    sim.add_user("amy")
    sim.inject(FaultMode.APPLY_THEN_500, method="api.addNewGroup")
    async with PaperCutClient(sim.url, TOKEN, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable, match="HTTP 500"):
            await pc.add_new_group("late")
        assert await pc.is_group_exists("late")


async def test_stopping_ends_hung_calls(tmp_path: Path) -> None:
    simulator = PaperCutSimulator(tmp_path / "sim.db", token=TOKEN, hang_seconds=60)
    await simulator.start()
    simulator.inject(FaultMode.HANG)
    async with PaperCutClient(simulator.url, TOKEN, timeout=30, attempts=1) as pc:
        call = asyncio.create_task(pc.is_user_exists("x"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await simulator.stop()
        with pytest.raises(PaperCutUnavailable):
            await call
        assert time.monotonic() - started < 5
    simulator.close()


async def test_unknown_method_and_bad_arguments_are_faults(sim: PaperCutSimulator) -> None:
    async with PaperCutClient(sim.url, TOKEN) as pc:
        with pytest.raises(Exception, match="No such handler"):
            await pc.call("api.noSuchMethod")
        with pytest.raises(Exception, match="No method matching"):
            await pc.call("api.isUserExists", 42)


# --- running alone --------------------------------------------------------------------------


async def test_runs_alone_from_the_command_line(tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "proxy.devkit.papercut.simulator", "--port", str(port),
        "--db", str(tmp_path / "cli.db"), "--token", TOKEN, "--fail-rate", "0", "--seed", "1",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert f"http://127.0.0.1:{port}/rpc/api/xmlrpc" in line.decode()
        async with PaperCutClient(
            f"http://127.0.0.1:{port}/rpc/api/xmlrpc", TOKEN, backoff=0.05
        ) as pc:
            await pc.add_new_internal_user("Cli", "pw")
            assert await pc.is_user_exists("cli")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
