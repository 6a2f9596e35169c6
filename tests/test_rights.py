"""Rights to charge (SPEC §3) and fixing held jobs, through the real service.

Jobs go through the real intake (the app factory's Unix socket, as the CUPS
backend sends them), are dispatched by the real workers to a real
ippeveprinter and charged; registered delegations go through
``POST /api/v1/delegations`` with ``user`` tokens. SQLite and PostgreSQL.

The matrix: a delegate with the ``delegate`` right (her own, or her group's)
or without it x whom she charges (nobody else, a user of her group, a user of
another group) x a shared account (none, open, restricted with her group on
its list, restricted with her name on it, restricted without her) under
``[delegation] users = "same-group"``; and an unknown delegate. Each cell is
printed and charged, or held with the right reason and nothing charged.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import rights
from billing.enums import AccountType, PrintStatus
from billing.models import Account, AccountTransaction, Delegation, Event, LedgerEntry, PrintOut
from proxy.app import create_app
from proxy.config import build_config
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.keys import SESSIONS
from proxy.pipeline.delegation import format_cups_options
from proxy.pipeline.intake import META_HEADER
from tests import factories as f
from tests.fixtures_cups import unique

pytestmark = pytest.mark.cups

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
AiohttpClient = Callable[..., Any]

DELEGATES = {"right": "rita", "group-right": "greg", "no-right": "nora"}
TARGETS = {"nobody": None, "same-group": "mate", "other-group": "stranger"}
SHARED = {
    "none": None,
    "open": "Open",
    "listed-group": "Club",  # restricted to @team: the delegates' group
    "listed-user": "Lab",  # restricted to rita, greg, nora by name
    "not-listed": "Vault",  # restricted to stranger
}


# --- the service ----------------------------------------------------------------------


@dataclass
class Service:
    client: Client
    socket: Path
    printer: str
    pdf: bytes

    @property
    def sessions(self) -> Sessions:
        return self.client.app[SESSIONS]

    async def submit(self, user: str, title: str, options: dict[str, str]) -> dict[str, Any]:
        """One job through the intake, as the CUPS backend sends it."""
        meta = {
            "printer": self.printer,
            "user": user,
            "title": title,
            "job_uuid": f"urn:uuid:{unique('r')}-{title}",
            "content_type": "application/pdf",
            "options": format_cups_options(options),
            "copies": 1,
        }
        header = base64.b64encode(json.dumps(meta).encode()).decode()
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                "http://intake/intake/v1/jobs", data=self.pdf, headers={META_HEADER: header}
            ) as resp,
        ):
            answer: dict[str, Any] = await resp.json()
            assert resp.status in (201, 422), answer
            answer["http_status"] = resp.status
            return answer

    async def api(self, method: str, path: str, token: str, expect: int, body: Any = None) -> Any:
        async with self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            answer = await resp.json()
            assert resp.status == expect, (method, path, resp.status, answer)
            return answer

    async def print_out(self, po_id: int) -> PrintOut:
        async with self.sessions() as s:
            po = await s.get(PrintOut, po_id)
            assert po is not None
            return po

    async def wait_ended(self, po_ids: list[int], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            async with self.sessions() as s:
                rows = (
                    await s.execute(
                        select(PrintOut.id, PrintOut.status, PrintOut.charged_at).where(
                            PrintOut.id.in_(po_ids)
                        )
                    )
                ).all()
            done = [r for r in rows if r[1] == PrintStatus.COMPLETED and r[2] is not None]
            if len(done) == len(po_ids):
                return
            failed = [r for r in rows if r[1] in (PrintStatus.CANCELED, PrintStatus.ABORTED)]
            assert not failed, f"ended other than completed: {failed}"
            assert time.monotonic() < deadline, f"not charged in time: {rows}"
            await asyncio.sleep(0.1)

    async def charges(self, po_id: int) -> dict[str, Decimal]:
        """account path -> amount charged (ledger), for one print-out."""
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Account.path, func.sum(LedgerEntry.amount))
                    .join(Account, Account.id == LedgerEntry.account_id)
                    .where(LedgerEntry.print_out_id == po_id)
                    .group_by(Account.path)
                )
            ).all()
        return {path: -amount for path, amount in rows}

    async def shares(self, po_id: int) -> dict[str, int]:
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Account.path, AccountTransaction.weight)
                    .join(Account, Account.id == AccountTransaction.account_id)
                    .where(AccountTransaction.print_out_id == po_id)
                )
            ).all()
        return dict(rows)


def make_app(db_url: str, root: Path, **delegation: str) -> web.Application:
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(root / "spool")},
            "intake": {"socket": str(root / "i.sock"), "follow": False},
            "tracker": {"interval_secs": 0.2},
            "delegation": delegation,
        }
    )
    return create_app(config)


async def seed(sessions: Sessions, printer_uri: str, mode: str = "direct") -> str:
    """The people and accounts of the matrix; returns the proxy printer's name."""
    name = unique("pp-rights")
    async with sessions() as s, s.begin():
        await f.group(s, "team")
        await f.group(s, "others")
        await f.group(s, "leads")
        await f.user(s, "rita", groups=["team"], delegate=True)
        await f.user(s, "greg", groups=["team", "leads"])
        await f.user(s, "nora", groups=["team"])
        await f.user(s, "mate", groups=["team"])
        await f.user(s, "stranger", groups=["others"])
        await rights.set_group_delegate(s, "leads", True, actor="test")
        for path in ("Open", "Club", "Lab", "Vault"):
            await f.shared(s, path)
        lists = {"Club": ["@team"], "Lab": ["rita", "greg", "nora"], "Vault": ["stranger"]}
        for path, entries in lists.items():
            account = await rights.find_chargeable(s, path)
            await rights.set_access(s, account, entries, actor="test")
        printer = await f.printer(s, name, target=printer_uri)
        printer.mode = mode
    return name


@pytest.fixture
async def service(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, ippeve_printer: IppEvePrinter
) -> AsyncIterator[Service]:
    app = make_app(db_url, short_tmp, users="same-group")
    client = await aiohttp_client(app)
    name = await seed(app[SESSIONS], ippeve_printer.uri)
    pdf = make_pdf(short_tmp / "one.pdf", 1).read_bytes()
    yield Service(client, short_tmp / "i.sock", name, pdf)


# --- what each cell should do -----------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    delegate: str  # a key of DELEGATES, or "unknown"
    target: str  # a key of TARGETS
    shared: str  # a key of SHARED

    @property
    def user(self) -> str:
        return DELEGATES.get(self.delegate, "ghost")

    def options(self) -> dict[str, str]:
        options = {}
        if (other := TARGETS[self.target]) is not None:
            options["delegators"] = f"{self.user},{other}"
        if (account := SHARED[self.shared]) is not None:
            options["shared-accounts"] = account
        return options

    def expected(self) -> tuple[str | None, list[str]]:
        """(held reason or None = printed, words the hold message must contain)."""
        if self.delegate == "unknown":
            return "user-unknown", ["ghost", "not a known user"]
        charges_others = self.target != "nobody" or self.shared != "none"
        words = []
        if charges_others and self.delegate == "no-right":
            words.append("lacks the delegate right")
        if self.target == "other-group":
            words += ["stranger", "same-group"]
        if self.shared == "not-listed":
            words += ["access list", "Vault"]
        return ("delegation-forbidden" if words else None), words

    def payers(self) -> set[str]:
        """Who is charged: the delegators named (the delegate alone when none)."""
        other, account = TARGETS[self.target], SHARED[self.shared]
        payers = {self.user, other} if other is not None else set()
        if account is not None:
            payers.add(account)
        return {p for p in payers if p is not None} or {self.user}


MATRIX = [Cell(d, t, a) for d, t, a in itertools.product(DELEGATES, TARGETS, SHARED)] + [
    Cell("unknown", t, a) for t, a in (("nobody", "none"), ("same-group", "open"))
]


async def check_outcomes(svc: Service, jobs: dict[Cell, int]) -> None:
    """Printed cells completed and charged exactly their payers; held cells nothing."""
    printed = [po for cell, po in jobs.items() if cell.expected()[0] is None]
    assert printed and len(printed) < len(jobs)
    await svc.wait_ended(printed)  # the positive sign: the pipeline ran past every job
    for cell, po_id in jobs.items():
        reason, words = cell.expected()
        po = await svc.print_out(po_id)
        charged = await svc.charges(po_id)
        if reason is None:
            assert set(charged) == cell.payers(), cell
            assert po.cost is not None and sum(charged.values()) == po.cost > 0, cell
            continue
        assert po.status == PrintStatus.HELD and po.status_reason == reason, (
            cell,
            po.status_reason,
        )
        for word in words:
            assert word in (po.status_message or ""), (cell, word, po.status_message)
        assert charged == {} and await svc.shares(po_id) == {}, cell
        assert po.target_job_id is None and po.dispatched_at is None, cell


async def test_rights_matrix_through_the_intake(
    service: Service, ippeve_printer: IppEvePrinter
) -> None:
    jobs: dict[Cell, int] = {}
    titles: dict[Cell, str] = {}
    for n, cell in enumerate(MATRIX):
        titles[cell] = unique(f"m{n}")
        answer = await service.submit(cell.user, titles[cell], cell.options())
        assert answer["http_status"] == 201, answer
        jobs[cell] = answer["print_out"]
        reason, _ = cell.expected()
        assert answer["reason"] == reason, (cell, answer)
        if reason is not None:
            assert answer["status"] == "held" and answer["message"], answer
    await check_outcomes(service, jobs)
    received = {d.title for d in ippeve_printer.documents()}
    for cell, title in titles.items():
        assert (title in received) == (cell.expected()[0] is None), cell


async def test_rights_matrix_through_registered_delegations(service: Service) -> None:
    """The same cells as delegations registered by ``user`` tokens (clients without options)."""
    async with service.sessions() as s, s.begin():
        tokens = {u: await f.token(s, "user", user=u) for u in DELEGATES.values()}
        admin = await f.token(s, "admin")
    jobs: dict[Cell, int] = {}
    titles: dict[Cell, str] = {}
    for n, cell in enumerate(c for c in MATRIX if c.options()):
        reason, words = cell.expected()
        body = {"printer": service.printer, **cell.options()}
        if cell.delegate == "unknown":  # no user token for ghost: an admin tries for him
            answer = await service.api(
                "POST", "/api/v1/delegations", admin, 403, {**body, "delegate": "ghost"}
            )
            assert answer["error"]["code"] == "user-unknown", answer
            continue
        token = tokens[cell.user]
        if reason is not None:
            answer = await service.api("POST", "/api/v1/delegations", token, 403, body)
            assert answer["error"]["code"] == reason, (cell, answer)
            for word in words:
                assert word in answer["error"]["message"], (cell, word, answer)
            continue
        await service.api("POST", "/api/v1/delegations", token, 201, body)
        titles[cell] = unique(f"d{n}")
        answer = await service.submit(cell.user, titles[cell], {})  # no options of its own
        assert answer["reason"] is None, (cell, answer)
        jobs[cell] = answer["print_out"]
    assert jobs
    await service.wait_ended(list(jobs.values()))
    for cell, po_id in jobs.items():
        assert set(await service.charges(po_id)) == cell.payers(), cell
    async with service.sessions() as s:
        registered = await s.scalar(select(func.count()).select_from(Delegation))
    assert registered == len(jobs)  # nothing forbidden was stored


# --- site policy and unknown users ------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "target", "reason"),
    [("any", "stranger", None), ("none", "mate", "delegation-forbidden")],
)
async def test_delegation_users_policy(  # noqa: PLR0917 (fixtures + params)
    aiohttp_client: AiohttpClient,
    db_url: str,
    short_tmp: Path,
    ippeve_printer: IppEvePrinter,
    users: str,
    target: str,
    reason: str | None,
) -> None:
    app = make_app(db_url, short_tmp, users=users)
    client = await aiohttp_client(app)
    svc = Service(client, short_tmp / "i.sock", await seed(app[SESSIONS], ippeve_printer.uri),
                  make_pdf(short_tmp / "p.pdf", 1).read_bytes())  # fmt: skip
    personal = await svc.submit("rita", unique("own"), {})
    answer = await svc.submit("rita", unique("pol"), {"delegators": target})
    assert answer["reason"] == reason, answer
    await svc.wait_ended([personal["print_out"]])
    if reason is None:
        await svc.wait_ended([answer["print_out"]])
        assert set(await svc.charges(answer["print_out"])) == {target}
    else:
        assert "users = none" in answer["message"], answer
        assert await svc.charges(answer["print_out"]) == {}


async def test_unknown_user_refused_or_charged_to_a_guest_account(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, ippeve_printer: IppEvePrinter
) -> None:
    app = make_app(db_url, short_tmp, unknown_user="guest:Guests")
    client = await aiohttp_client(app)
    name = await seed(app[SESSIONS], ippeve_printer.uri)
    async with app[SESSIONS]() as s, s.begin():
        await f.shared(s, "Guests")
    pdf = make_pdf(short_tmp / "g.pdf", 1).read_bytes()
    svc = Service(client, short_tmp / "i.sock", name, pdf)
    guest = await svc.submit("ghost", unique("guest"), {})
    forbidden = await svc.submit("ghost", unique("guest-bob"), {"delegators": "mate:3"})
    assert forbidden["reason"] == "delegation-forbidden", forbidden
    assert "guest account Guests only" in forbidden["message"]
    await svc.wait_ended([guest["print_out"]])
    assert set(await svc.charges(guest["print_out"])) == {"Guests"}
    assert await svc.charges(forbidden["print_out"]) == {}


async def test_unknown_user_refused(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, ippeve_printer: IppEvePrinter
) -> None:
    app = make_app(db_url, short_tmp, unknown_user="refuse")
    client = await aiohttp_client(app)
    svc = Service(client, short_tmp / "i.sock", await seed(app[SESSIONS], ippeve_printer.uri),
                  make_pdf(short_tmp / "r.pdf", 1).read_bytes())  # fmt: skip
    known = await svc.submit("rita", unique("known"), {})
    assert known["http_status"] == 201
    refused = await svc.submit("ghost", unique("ghost"), {"delegators": "mate"})
    # A 4xx other than 401/403/404: the backend cancels this job alone, with the reason.
    assert refused["http_status"] == 422 and refused["error"]["code"] == "user-unknown"
    async with svc.sessions() as s:
        delegates = set(await s.scalars(select(PrintOut.delegate)))
    assert delegates == {"rita"}


# --- fixing held jobs -------------------------------------------------------------------


async def _events(svc: Service, po_id: int, reason: str) -> list[Event]:
    async with svc.sessions() as s:
        rows = await s.scalars(
            select(Event).where(
                Event.subject_type == "print_out",
                Event.subject_id == str(po_id),
                Event.reason == reason,
            )
        )
        return list(rows)


@pytest.mark.parametrize("mode", ["direct", "hold", "ticket"])
async def test_recheck_after_the_user_is_added_proceeds_per_mode(
    aiohttp_client: AiohttpClient,
    db_url: str,
    short_tmp: Path,
    ippeve_printer: IppEvePrinter,
    mode: str,
) -> None:
    app = make_app(db_url, short_tmp)
    client = await aiohttp_client(app)
    name = await seed(app[SESSIONS], ippeve_printer.uri, mode=mode)
    svc = Service(client, short_tmp / "i.sock", name, make_pdf(short_tmp / "c.pdf", 2).read_bytes())
    async with svc.sessions() as s, s.begin():
        admin = await f.token(s, "admin")
    held = await svc.submit("newbie", unique("new"), {"delegators": "newbie,mate"})
    assert held["reason"] == "user-unknown", held
    po_id = held["print_out"]
    recheck = f"/api/v1/jobs/{po_id}/recheck"
    # Still unknown: not fixed; the job stays held.
    answer = await svc.api("POST", recheck, admin, 200)
    assert not answer["fixed"] and answer["job"]["status_reason"] == "user-unknown"
    await svc.api("POST", f"/api/v1/jobs/{po_id}/release", admin, 409)  # not releasable
    # Added without the right: the recheck finds what is missing now.
    async with svc.sessions() as s, s.begin():
        await f.user(s, "newbie", groups=["team"])
    answer = await svc.api("POST", recheck, admin, 200)
    assert not answer["fixed"] and answer["job"]["status_reason"] == "delegation-forbidden"
    assert "newbie lacks the delegate right" in answer["job"]["status_message"]
    assert (await svc.print_out(po_id)).status_reason == "delegation-forbidden"  # stored
    assert len(await _events(svc, po_id, "delegation-forbidden")) == 1  # the re-check's
    async with svc.sessions() as s, s.begin():
        await rights.set_user_delegate(s, "newbie", True, actor="test")
    fixed = await svc.api("POST", recheck, admin, 200)
    assert fixed["fixed"]
    await svc.api("POST", recheck, admin, 409)  # not held for its delegation any more
    assert await svc.shares(po_id) == {"newbie": 1, "mate": 1}
    assert fixed["job"]["copies"] == 2
    assert len(await _events(svc, po_id, "rechecked")) >= 1
    if mode == "direct":
        await svc.wait_ended([po_id])  # dispatched at once
    elif mode == "hold":
        assert fixed["job"]["status_reason"] == "hold" and fixed["job"]["hold_until"]
        await svc.api("POST", f"/api/v1/jobs/{po_id}/release", admin, 200)
        await svc.wait_ended([po_id])
    else:
        assert fixed["job"]["status_reason"] == "ticket"
        async with svc.sessions() as s, s.begin():
            operator = await f.token(s, "ticket-operator")
        ticket = await svc.print_out(po_id)
        assert ticket.ticket_cost is not None and ticket.ticket_cost > 0
        await svc.api("POST", f"/api/v1/tickets/{po_id}/release", operator, 200, {})
        await svc.wait_ended([po_id])
    charged = await svc.charges(po_id)
    assert set(charged) == {"newbie", "mate"} and charged["newbie"] == charged["mate"]


async def test_put_delegation_replaces_it_and_the_job_prints(service: Service) -> None:
    async with service.sessions() as s, s.begin():
        admin = await f.token(s, "admin")
        nora = await f.token(s, "user", user="nora")
    held = await service.submit("nora", unique("put"), {"delegators": "nora,mate"})
    assert held["reason"] == "delegation-forbidden", held
    po_id = held["print_out"]
    path = f"/api/v1/jobs/{po_id}/delegation"
    await service.api("PUT", path, nora, 403, {"delegators": "nora"})  # admins only
    bad = await service.api("PUT", path, admin, 400, {"delegators": "nobody"})
    assert bad["error"]["code"] == "delegation-invalid"
    assert (await service.print_out(po_id)).status_reason == "delegation-forbidden"  # unchanged
    await service.api("PUT", path, admin, 400, {"printer": "x", "delegators": "mate"})
    new = {"delegators": [{"name": "mate", "copies": 2}], "shared-accounts": "Vault"}
    replaced = await service.api("PUT", path, admin, 200, new)
    assert replaced["delegation"] == {"delegators": "mate:2", "shared-accounts": "Vault"}
    assert replaced["job"]["copies"] == 3
    events = await _events(service, po_id, "delegation-replaced")
    assert events and events[0].actor.startswith("api:admin:")  # the admin, by token
    # The transition's event, and the one that records what the admin set.
    assert [e.data["delegation"] for e in events if e.data] == [replaced["delegation"]]
    await service.wait_ended([po_id])
    charged = await service.charges(po_id)
    assert set(charged) == {"mate", "Vault"} and charged["mate"] == 2 * charged["Vault"]
    await service.api("PUT", path, admin, 409, {"delegators": "mate"})  # ended: no more


async def test_cli_sets_rights(tmp_path: Path, db_url: str) -> None:
    """``user add|edit --delegate``, ``group edit --delegate``, ``account edit --access/--open``."""
    from proxy.cli import main

    config = tmp_path / "pp.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    config.chmod(0o600)

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    assert await asyncio.to_thread(run, "group", "add", "sales") == 0
    assert await asyncio.to_thread(run, "user", "add", "alice", "--delegate") == 0
    assert await asyncio.to_thread(run, "user", "add", "bob", "--group", "sales") == 0
    assert await asyncio.to_thread(run, "account", "add", "ProjectX") == 0
    assert await asyncio.to_thread(run, "user", "edit", "alice", "--no-delegate") == 0
    assert await asyncio.to_thread(run, "group", "edit", "sales", "--delegate") == 0
    access = ("account", "edit", "ProjectX", "--access", "alice", "@sales")
    assert await asyncio.to_thread(run, *access) == 0
    assert await asyncio.to_thread(run, "account", "edit", "group:sales", "--access", "bob") == 0
    assert await asyncio.to_thread(run, "account", "edit", "nosuch", "--open") == 2
    assert await asyncio.to_thread(run, "user", "edit", "alice") == 2  # nothing to change
    from billing.db import make_engine, make_sessionmaker
    from billing.models import Group, User

    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            alice = await s.scalar(select(User).where(User.name == "alice"))
            sales = await s.scalar(select(Group).where(Group.name == "sales"))
            assert alice is not None and not alice.can_delegate
            assert sales is not None and sales.can_delegate
            project = await rights.find_chargeable(s, "ProjectX")
            assert await rights.access_of(s, project) == rights.Access(True, ("alice",), ("sales",))
            group_account = await rights.find_chargeable(s, "group:sales")
            assert group_account.type == AccountType.GROUP.value
            assert (await rights.access_of(s, group_account)).users == ("bob",)
        assert await asyncio.to_thread(run, "account", "edit", "ProjectX", "--open") == 0
        async with make_sessionmaker(engine)() as s:
            project = await rights.find_chargeable(s, "ProjectX")
            assert await rights.access_of(s, project) == rights.Access(False, (), ())
    finally:
        await engine.dispose()
