"""OfficeRnD -> PaperCut sync (SPEC §9) against both simulators, in-process.

The PaperCut simulator and the OfficeRnD simulator run in the test's event
loop; the database is each of the fixtures' backends (SQLite, PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from billing.enums import OutboxStatus
from billing.models import Event, Group, OutboxItem, ScheduledRun, User, group_members
from billing.officernd.actions import SyncSummary
from billing.officernd.client import OfficeRnDClient
from billing.officernd.filter import (
    INDIVIDUAL_GROUP,
    UNLINKED_GROUP,
    MemberFilter,
    email_user_name,
    fallback_user_name,
    group_names,
    wanted,
)
from billing.officernd.mirror import local_group_name
from billing.officernd.models import Company, Member, Plan
from billing.officernd.sync import run_sync
from billing.officernd.writes import RECREATE_KIND, Recreator
from billing.papercut import printlog
from billing.papercut.client import PaperCutClient, is_write
from billing.papercut.exceptions import PaperCutSetupError
from proxy.config import build_config
from proxy.devkit.officernd.simulator import OfficeRnDSimulator
from proxy.devkit.papercut.simulator import FaultMode, PaperCutSimulator

TOKEN = "pc-token"


@dataclass
class Kit:
    papercut_sim: PaperCutSimulator
    ornd_sim: OfficeRnDSimulator
    papercut: PaperCutClient
    officernd: OfficeRnDClient
    sessions: async_sessionmaker[AsyncSession]
    printlog: AsyncEngine

    async def applied(self, marker: str) -> bool:
        return await printlog.adjustment_applied(self.printlog, marker)

    async def sync(self, member_filter: MemberFilter | None = None, **kw: Any) -> SyncSummary:
        return await run_sync(
            self.sessions,
            self.officernd,
            self.papercut,
            member_filter=member_filter or MemberFilter(),
            applied=self.applied,
            **kw,
        )

    def writes(self) -> dict[str, int]:
        """PaperCut write calls that reached the simulator's database."""
        return {m: n for m, n in self.papercut_sim.applied.items() if is_write(m) and n}

    def ornd_writes(self) -> dict[str, int]:
        """OfficeRnD API writes (the OAuth token request is not one)."""
        return {
            k: n
            for k, n in self.ornd_sim.requests.items()
            if not k.startswith("GET ") and k != "POST /oauth/token"
        }


@pytest.fixture
async def kit(tmp_path: Path, sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[Kit]:
    async with (
        PaperCutSimulator(tmp_path / "papercut.db", token=TOKEN, hang_seconds=1) as pc_sim,
        OfficeRnDSimulator(hang_seconds=1) as ornd_sim,
    ):
        # Not billing.db.make_engine: its SQLite engines BEGIN IMMEDIATE even to read, and
        # the simulator, in this event loop, would then wait for the lock with the loop
        # blocked. PaperCut's own database is never ours to lock.
        engine = create_async_engine(pc_sim.db_url)
        async with (
            PaperCutClient(pc_sim.url, TOKEN, attempts=8, backoff=0.01, max_backoff=0.05) as pc,
            OfficeRnDClient(
                ornd_sim.api_url,
                ornd_sim.org,
                token_url=ornd_sim.token_url,
                client_id=ornd_sim.client_id,
                client_secret=ornd_sim.client_secret,
                backoff=0.01,
                max_backoff=0.05,
            ) as ornd,
        ):
            yield Kit(pc_sim, ornd_sim, pc, ornd, sessionmaker, engine)
        await engine.dispose()


def _active(members: list[Member]) -> list[Member]:
    return [m for m in members if m.status == "active"]


def _group_of(member: Member, companies: dict[str, str]) -> str:
    return INDIVIDUAL_GROUP if member.company_id is None else companies[member.company_id]


async def _mirror(kit: Kit) -> dict[str, tuple[str, bool, set[str | None]]]:
    """member id -> (local name, active, external ids of its groups)."""
    async with kit.sessions() as session:
        users = await session.execute(select(User.id, User.name, User.external_id, User.active))
        rows = users.all()
        links = (
            await session.execute(
                select(group_members.c.user_id, Group.external_id).join(
                    Group, Group.id == group_members.c.group_id
                )
            )
        ).all()
    groups: dict[int, set[str | None]] = {}
    for user_id, ext in links:
        groups.setdefault(user_id, set()).add(ext)
    return {
        str(ext): (name, bool(active), groups.get(uid, set()))
        for uid, name, ext, active in rows
        if ext is not None
    }


# --- the filter and the user-name rule (no I/O) ----------------------------------------------


def _member(mid: str, name: str, email: str | None, **kw: Any) -> Member:
    return Member(
        id=mid,
        name=name,
        email=email,
        status=kw.get("status", "active"),
        company_id=kw.get("company_id"),
        plan_ids=kw.get("plan_ids", ()),
    )


def test_user_names_are_emails_else_slug_and_id_and_never_change() -> None:
    members = [
        _member("000000000000000000000a01", "Ada Lovelace", "Ada@Example.com"),
        _member("000000000000000000000a02", "Ada Lovelace", "ada@example.com"),  # same e-mail
        _member("000000000000000000000a03", "Grace Hopper", None),
        _member("000000000000000000000a04", "Zoë O'Brien", "zoe o'brien@example.com"),
    ]
    names = {w.member_id: w.username for w in wanted(members, []).values()}
    assert names == {
        "000000000000000000000a01": "ada@example.com",
        "000000000000000000000a02": "ada.lovelace-00000a02",
        "000000000000000000000a03": "grace.hopper-00000a03",
        "000000000000000000000a04": "zoe.o.brien-00000a04",
    }
    assert email_user_name("not-an-email") is None
    assert fallback_user_name(members[0], whole_id=True).endswith("-000000000000000000000a01")
    # the same input gives the same names; a kept name wins over the e-mail rule
    assert {w.member_id: w.username for w in wanted(members, []).values()} == names
    renamed = [_member("000000000000000000000a01", "Ada L", "new@example.com"), *members[1:]]
    kept = wanted(renamed, [], existing={"000000000000000000000a01": "ada@example.com"})
    assert "ada@example.com" in kept and "new@example.com" not in kept
    # a reserved name (another user) is never given to a member
    taken = wanted(members[:1], [], reserved={"ADA@example.com"})
    assert list(taken) == ["ada.lovelace-00000a01"]


def test_filter_statuses_companies_and_plans() -> None:
    acme, blue = Company("c1", "Acme Labs"), Company("c2", "Blue Studio")
    members = [
        _member("m1", "A", "a@x.io", company_id="c1", plan_ids=("p1",)),
        _member("m2", "B", "b@x.io", company_id="c2"),
        _member("m3", "C", "c@x.io"),
        _member("m4", "D", "d@x.io", status="former", company_id="c1"),
        _member("m5", "E", "e@x.io", status="Contact"),
    ]

    def ids(flt: MemberFilter) -> set[str]:
        return {w.member_id for w in flt.wanted(members, [acme, blue]).values()}

    assert ids(MemberFilter()) == {"m1", "m2", "m3"}
    assert ids(MemberFilter.of(statuses=["active", "contact"])) == {"m1", "m2", "m3", "m5"}
    assert ids(MemberFilter.of(include_companies=["acme labs"])) == {"m1"}
    assert ids(MemberFilter.of(include_companies=["c2", INDIVIDUAL_GROUP])) == {"m2", "m3"}
    assert ids(MemberFilter.of(exclude_companies=["Blue Studio", INDIVIDUAL_GROUP])) == {"m1"}
    assert ids(MemberFilter.of(plans=["p1"])) == {"m1"}
    by_name = MemberFilter.of(plans=["hot desk"]).wanted(
        members, [acme, blue], plans=[Plan("p1", "Hot Desk")]
    )
    assert {w.member_id for w in by_name.values()} == {"m1"}
    groups = {w.member_id: w.group for w in MemberFilter().wanted(members, [acme, blue]).values()}
    assert groups == {"m1": "Acme Labs", "m2": "Blue Studio", "m3": INDIVIDUAL_GROUP}


def test_group_names_are_unique_and_never_special() -> None:
    names = group_names(
        [Company("a1", "Acme"), Company("a2", "ACME"), Company("a3", INDIVIDUAL_GROUP),
         Company("a4", "  Tab\tCo \x00"), Company("a5", "")]
    )  # fmt: skip
    assert names["a1"] == "Acme"
    assert names["a2"] == "ACME (a2)"
    assert names["a3"] == f"{INDIVIDUAL_GROUP} (a3)"
    assert names["a4"] == "Tab Co"
    assert names["a5"] == "Company a5"
    assert local_group_name(INDIVIDUAL_GROUP) == "[Individual_Member]"
    assert local_group_name("Acme, Labs / R&D") == "Acme_Labs_R&D"


# --- initial sync, empty PaperCut -------------------------------------------------------------


async def test_initial_sync_into_empty_papercut_creates_groups_and_users(kit: Kit) -> None:
    members = kit.ornd_sim.seed_members(300, 40, 25, seed=7)
    companies = {c.id: c.name for c in kit.ornd_sim.companies}
    active = _active(members)
    progress: list[tuple[int, int]] = []

    summary = await kit.sync(progress=lambda done, total: progress.append((done, total)))

    assert summary.initial and not summary.second_flow
    assert summary.errors == 0, summary.error_details
    assert summary.created == len(active) == summary.wanted
    assert progress[-1][0] == progress[-1][1] and len(progress) == progress[-1][1]
    pc = kit.papercut_sim
    expected_users = {m.email.lower() for m in active if m.email}
    assert set(await kit.papercut.all_user_accounts()) == expected_users
    # groups: each company with an active member, and [Individual Member]
    expected: dict[str, set[str]] = {}
    for m in active:
        expected.setdefault(_group_of(m, companies), set()).add(str(m.email).lower())
    assert set(await kit.papercut.all_user_groups()) == set(expected)
    for group, names in expected.items():
        assert set(pc.get_group_members(group, 0, 10_000)) == names
    assert INDIVIDUAL_GROUP in expected
    # former and contact members are not synced
    for m in members:
        if m.status != "active":
            assert not pc.is_user_exists(str(m.email))
    some = active[0]
    assert pc.get_user_property(str(some.email), "full-name") == some.name
    assert pc.get_user_property(str(some.email), "email") == some.email
    # the local mirror
    mirror = await _mirror(kit)
    assert set(mirror) == {m.id for m in active}
    for m in active:
        name, is_active, exts = mirror[m.id]
        assert name == str(m.email).lower() and is_active
        assert exts == {m.company_id or "officernd:individuals"}
    async with kit.sessions() as session:
        event = await session.scalar(select(Event).where(Event.subject_type == "officernd-sync"))
        marker = await session.scalar(
            select(ScheduledRun.state).where(
                ScheduledRun.job == "officernd-sync", ScheduledRun.period == "initial"
            )
        )
    assert event is not None and event.data is not None and event.data["created"] == len(active)
    assert marker == "done"
    assert not kit.ornd_writes()


async def test_status_filter_on_either_field_against_the_simulator(kit: Kit) -> None:
    members = kit.ornd_sim.seed_members(90, 8, 20, seed=13)
    assert {m.calculated_status for m in members} == {
        "active", "former", "contact", "drop-in", "pending", "lead", "not_approved",
    }  # fmt: skip
    by_calc = MemberFilter.of(status_field="calculatedStatus", statuses=["drop-in", "pending"])

    first = await kit.sync(by_calc)

    assert first.errors == 0, first.error_details
    chosen = {str(m.email) for m in members if m.calculated_status in ("drop-in", "pending")}
    assert chosen and set(await kit.papercut.all_user_accounts()) == chosen
    # The same members through ``status``: drop-ins and pending ones are "contact" there.
    by_status = MemberFilter.of(statuses=["contact"])

    second = await kit.sync(by_status)

    assert second.errors == 0, second.error_details
    contacts = {str(m.email) for m in members if m.status == "contact"}
    assert contacts > chosen  # leads, contacts and not-approved ones too
    assert set(await kit.papercut.all_user_accounts()) == contacts
    assert second.created == len(contacts - chosen) and second.removed == 0


async def test_plan_filter_reads_the_memberships_resource(kit: Kit) -> None:
    sim = kit.ornd_sim
    acme = sim.add_company("Acme")
    desk = sim.add_plan("Hot Desk", Decimal("150.00"))
    office = sim.add_plan("Private Office", Decimal("850.00"))
    ada = sim.add_member("Ada", email="ada@example.com", plan_ids=[desk.id])
    bob = sim.add_member("Bob", email="bob@example.com")
    sim.add_membership(desk.id, member_id=bob.id, calculated_status="expired")
    carol = sim.add_member("Carol", email="carol@example.com", company_id=acme.id)
    sim.add_membership(desk.id, company_id=acme.id)  # the company's: Carol holds it
    dan = sim.add_member("Dan", email="dan@example.com")
    sim.add_membership(desk.id, member_id=dan.id, calculated_status="pending")
    sim.add_member("Erin", email="erin@example.com", plan_ids=[office.id])
    assert all(m.plan_ids == () for m in await kit.officernd.members())  # not on members

    summary = await kit.sync(MemberFilter.of(plans=["hot desk"]))

    assert summary.errors == 0, summary.error_details
    assert set(await kit.papercut.all_user_accounts()) == {"ada@example.com", "carol@example.com"}
    assert sim.requests["GET /memberships"] == 1
    # Ada's membership ends: the next sync removes her; no plan filter, no memberships read.
    (adas,) = [m["_id"] for m in sim.memberships if m["member"] == ada.id]
    sim.end_membership(adas)
    again = await kit.sync(MemberFilter.of(plans=[desk.id]))
    assert again.removed == 1 and "ada@example.com" not in await kit.papercut.all_user_accounts()
    sim.requests.clear()
    await kit.sync()
    assert sim.requests["GET /memberships"] == 0 and sim.requests["GET /members"] == 1
    assert {carol.id, dan.id, bob.id} <= {m.id for m in sim.members}


# --- regular syncs -----------------------------------------------------------------------------


async def test_resync_without_changes_makes_no_write_calls(kit: Kit) -> None:
    kit.ornd_sim.seed_members(60, 8, 6, seed=3)
    first = await kit.sync()
    assert first.errors == 0 and first.created > 0
    kit.papercut_sim.applied.clear()
    kit.papercut_sim.requests.clear()
    kit.ornd_sim.requests.clear()

    again = await kit.sync()

    assert not again.initial
    assert (again.created, again.updated, again.moved, again.removed, again.errors) == (0,) * 5
    assert kit.writes() == {}
    assert {m for m in kit.papercut_sim.requests if is_write(m)} == set()
    assert kit.ornd_writes() == {}
    assert kit.papercut_sim.requests["api.listUserAccounts"] == 1


async def test_regular_sync_applies_exactly_the_changes(kit: Kit) -> None:
    members = kit.ornd_sim.seed_members(60, 8, 6, seed=5)
    await kit.sync()
    active = _active(members)
    mover = next(m for m in active if m.company_id is not None)
    other = next(c for c in kit.ornd_sim.companies if c.id != mover.company_id)
    leaver = next(m for m in active if m.id != mover.id)
    renamed = next(m for m in active if m.id not in (mover.id, leaver.id))
    kit.ornd_sim.move_member(mover.id, other.id)
    kit.ornd_sim.set_member_status(leaver.id, "former")
    kit.ornd_sim.rename_member(renamed.id, "Renamed Person")
    newcomer = kit.ornd_sim.add_member("New Comer", email="new.comer@example.com")
    pc = kit.papercut_sim
    pc.applied.clear()

    summary = await kit.sync()

    assert (summary.created, summary.moved, summary.removed, summary.updated) == (1, 1, 1, 1)
    assert summary.errors == 0
    assert kit.writes() == {
        "api.addNewInternalUser": 1,
        "api.addUserToGroup": 2,  # the newcomer, the mover
        "api.removeUserFromGroup": 1,  # the mover
        "api.deleteExistingUser": 1,  # the leaver
        "api.setUserProperties": 1,  # the renamed
    }
    mover_name = str(mover.email).lower()
    assert pc.get_user_groups(mover_name) == [other.name]
    assert not pc.is_user_exists(str(leaver.email))
    assert pc.get_user_property(str(renamed.email), "full-name") == "Renamed Person"
    assert pc.get_user_groups("new.comer@example.com") == [INDIVIDUAL_GROUP]
    mirror = await _mirror(kit)
    assert mirror[mover.id][2] == {other.id}
    assert mirror[leaver.id][1] is False and mirror[leaver.id][2] == set()
    assert mirror[newcomer.id] == ("new.comer@example.com", True, {"officernd:individuals"})
    async with kit.sessions() as session:
        full_name = await session.scalar(
            select(User.full_name).where(User.external_id == renamed.id)
        )
    assert full_name == "Renamed Person"
    # and nothing more to do
    pc.applied.clear()
    assert (await kit.sync()).errors == 0
    assert kit.writes() == {}


async def test_excluded_company_members_are_removed(kit: Kit) -> None:
    members = kit.ornd_sim.seed_members(30, 4, 3, seed=11)
    await kit.sync()
    company = kit.ornd_sim.companies[0]
    gone = {str(m.email).lower() for m in _active(members) if m.company_id == company.id}
    assert gone
    summary = await kit.sync(MemberFilter.of(exclude_companies=[company.name]))
    assert summary.removed == len(gone) and summary.errors == 0
    users = set(await kit.papercut.all_user_accounts())
    assert not users & gone


# --- initial sync, PaperCut not empty (the second flow) -----------------------------------------


def _prefill(kit: Kit, members: list[Member]) -> dict[str, Any]:
    """PaperCut as someone left it: users with balances, cards and stray groups."""
    pc = kit.papercut_sim
    active = _active(members)
    former = next(m for m in members if m.status == "former")
    kept = {
        str(m.email).lower(): Decimal(b)
        for m, b in zip(active[:4], ("5.25", "-3.10", "0", "12"), strict=False)
    }
    for name, balance in kept.items():
        pc.add_user(name, balance, full_name="Old Name", card="CARD-" + name[:4], groups=["Old"])
    by_mail = active[4]  # named otherwise, matched by its e-mail property
    pc.add_user("ada", Decimal("7.50"), email=str(by_mail.email).upper(), groups=["Old"])
    pc.add_user(str(former.email).lower(), Decimal("-2"), groups=["Old"])
    pc.add_user("stranger", Decimal("1"), groups=["Old", "Other"])
    pc.add_user("visitor", Decimal(0))
    return {"kept": kept, "by_mail": by_mail, "former": former}


async def test_initial_sync_into_papercut_with_users_follows_the_second_flow(kit: Kit) -> None:
    members = kit.ornd_sim.seed_members(40, 5, 5, seed=21)
    setup = _prefill(kit, members)
    pc = kit.papercut_sim
    active = _active(members)

    summary = await kit.sync()

    assert summary.initial and summary.second_flow
    assert summary.errors == 0, summary.error_details
    assert summary.recreated == 5 and summary.removed == 1 and summary.unlinked == 2
    assert summary.created == len(active) - 5
    # re-created: same name and balance, the rest reset (card, stray group)
    for name, balance in setup["kept"].items():
        assert pc.balance(name) == balance
        assert pc.get_user_property(name, "primary-card-number") == ""
        assert "Old" not in pc.get_user_groups(name)
    assert pc.balance("ada") == Decimal("7.50")
    assert pc.get_user_property("ada", "email") == setup["by_mail"].email
    # one restoring adjustment per non-zero balance, each with its marker
    restores = pc.adjustments(comment_contains="balance kept on re-creation")
    assert len(restores) == 4
    assert all("[pp:" in a.comment for a in restores)
    # the former member's user is gone; the unknown ones are unlinked
    assert not pc.is_user_exists(str(setup["former"].email))
    assert pc.get_user_groups("stranger") == [UNLINKED_GROUP]
    assert pc.get_user_groups("visitor") == [UNLINKED_GROUP]
    assert pc.balance("stranger") == Decimal(1)
    # every wanted member is there, in its group; the mirror knows "ada"
    companies = {c.id: c.name for c in kit.ornd_sim.companies}
    for m in active:
        name = "ada" if m.id == setup["by_mail"].id else str(m.email).lower()
        assert _group_of(m, companies) in pc.get_user_groups(name)
    assert (await _mirror(kit))[setup["by_mail"].id][0] == "ada"
    # then regular syncs: nothing to do
    pc.applied.clear()
    again = await kit.sync()
    assert not again.initial and again.errors == 0
    assert kit.writes() == {}


async def test_second_flow_survives_a_crash_between_delete_and_create(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("billing.officernd.writes.WRITE_BACKOFF", 0.001)  # fail fast
    members = kit.ornd_sim.seed_members(20, 3, 3, seed=31)
    setup = _prefill(kit, members)
    pc = kit.papercut_sim
    # every create fails: the re-created users are deleted and not created again
    pc.inject(FaultMode.HTTP_500, method="api.addNewInternalUser", count=10_000)

    crashed = await kit.sync()

    assert crashed.errors > 0 and crashed.recreated == 0
    for name in setup["kept"]:
        assert not pc.is_user_exists(name)
    async with kit.sessions() as session:
        rows = list(
            await session.scalars(select(OutboxItem).where(OutboxItem.kind == RECREATE_KIND))
        )
    assert len(rows) == 5 and all(r.status == int(OutboxStatus.PENDING) for r in rows)
    assert {r.payload["phase"] for r in rows} == {"deleted"}
    assert {r.payload["user"]: Decimal(r.payload["balance"]) for r in rows} == {
        **setup["kept"],
        "ada": Decimal("7.50"),
    }
    pc.clear_faults()

    resumed = await kit.sync()

    assert resumed.errors == 0, resumed.error_details
    assert resumed.initial  # the first one did not finish
    for name, balance in setup["kept"].items():
        assert pc.balance(name) == balance
    assert pc.balance("ada") == Decimal("7.50")
    assert len(pc.adjustments(comment_contains="balance kept on re-creation")) == 4


async def test_recreation_resumes_after_any_step_without_restoring_twice(kit: Kit) -> None:
    pc = kit.papercut_sim
    pc.add_user("zed@example.com", Decimal("4.20"), groups=["Old"])
    recreator = Recreator(kit.sessions, kit.papercut, kit.applied)
    marker = "[pp:0123456789abcdef0123456789abcdef]"
    payload = {
        "user": "zed@example.com",
        "member_id": "m-zed",
        "full_name": "Zed",
        "email": "zed@example.com",
        "group": INDIVIDUAL_GROUP,
        "balance": "4.20",
        "phase": "read",
        "marker": marker,
        "comment": f"OfficeRnD sync: balance kept on re-creation {marker}",
    }
    async with kit.sessions() as session, session.begin():
        item = OutboxItem(kind=RECREATE_KIND, idempotency_key="k-zed", payload=payload, attempts=1)
        session.add(item)
    pc.add_group(INDIVIDUAL_GROUP)
    # the process died right after the delete, before "deleted" was committed
    pc.delete_existing_user("zed@example.com")
    item.attempts = 2
    await recreator.apply(item)
    assert pc.balance("zed@example.com") == Decimal("4.20")
    assert pc.get_user_groups("zed@example.com") == [INDIVIDUAL_GROUP]
    # ... and once more after everything was done: nothing is added twice
    async with kit.sessions() as session:
        again = await session.get(OutboxItem, item.id)
    assert again is not None and again.payload["phase"] == "deleted"
    again.attempts = 3
    await recreator.apply(again)
    assert pc.balance("zed@example.com") == Decimal("4.20")
    assert len(pc.adjustments(comment_contains=marker)) == 1


# --- the command line ---------------------------------------------------------------------------


async def test_cli_sync_fees_and_topup(
    kit: Kit, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.cli_officernd import cmd_fees, cmd_sync, cmd_topup

    kit.ornd_sim.seed_members(10, 2, 2, seed=41)
    ornd = kit.ornd_sim
    config = build_config(
        {
            "database": {"url": db_url},
            "papercut": {"url": kit.papercut_sim.url, "token": TOKEN,
                         "db_url": kit.papercut_sim.db_url},
            "officernd": {"api_url": ornd.api_url, "token_url": ornd.token_url, "org": ornd.org,
                          "client_id": ornd.client_id, "client_secret": ornd.client_secret,
                          "allowance_amount": "2.00", "allowance_period": "weekly"},
        },
        env={},
    )  # fmt: skip
    sync_args = argparse.Namespace(initial=False, regular=False, no_progress=True, concurrency=4)
    assert await cmd_sync(config, sync_args) == 0
    assert "sync initial:" in capsys.readouterr().out
    user = (await kit.papercut.all_user_accounts())[0]
    kit.papercut_sim.adjust_user_account_balance(user, Decimal("-3"), "printing")
    day = argparse.Namespace(date="2024-06-03", wait=5.0, concurrency=4)
    assert await cmd_fees(config, day) == 0
    assert "1 new fee(s) totalling 3.00" in capsys.readouterr().out
    assert await cmd_topup(config, day) == 0
    assert "top-ups 2024-W23: +2.00" in capsys.readouterr().out
    assert kit.papercut_sim.balance(user) == Decimal("2.00")


# --- groups the way PaperCut allows: through its user directory source -----------------------


async def test_initial_sync_fails_clearly_when_the_directory_lacks_the_groups(kit: Kit) -> None:
    """PaperCut adds only a group its directory source offers: a directory without
    ours fails the run, naming the set-up, before any user is created or assigned."""
    members = kit.ornd_sim.seed_members(20, 3, 3, seed=5)
    pc = kit.papercut_sim
    pc.set_directory(groups=["Staff"])  # e.g. an LDAP source that knows nothing of ours
    pc.task_seconds = 0.05

    with pytest.raises(PaperCutSetupError) as caught:
        await kit.sync()

    message = str(caught.value)
    assert "user directory source does not offer" in message
    assert INDIVIDUAL_GROUP in message
    assert "proxyprint papercut user-source" in message and "Custom Program" in message
    assert pc.applied["api.performUserAndGroupSync"] == 1  # it asked PaperCut to sync first
    assert pc.list_user_accounts(0, 100) == []  # nobody created
    assert pc.list_user_groups(0, 100) == []
    assert pc.applied["api.addNewInternalUser"] == 0 and pc.applied["api.addUserToGroup"] == 0
    assert _active(members)  # there were members to sync


async def test_initial_sync_with_our_user_source_as_the_directory(
    kit: Kit, db_url: str, tmp_path: Path
) -> None:
    """PaperCut's directory source is `proxyprint papercut user-source`: the sync writes
    its groups, PaperCut's user/group sync reads them from the program, the groups are
    added in the background and every user lands in its group, the unlinked one too."""
    members = kit.ornd_sim.seed_members(30, 4, 4, seed=9)
    pc = kit.papercut_sim
    pc.add_user("stranger", Decimal("1"))  # not an OfficeRnD member: unlinked
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env.update(PROXYPRINT_CONFIG=str(tmp_path / "empty.toml"), PROXYPRINT_DATABASE_URL=db_url)
    pc.set_directory(
        program=[sys.executable, "-m", "proxy.cli", "papercut", "user-source"], env=env
    )
    pc.task_seconds = 0.1

    summary = await kit.sync()

    assert summary.initial and summary.second_flow
    assert summary.errors == 0, summary.error_details
    assert pc.directory_syncs == 1 and pc.applied["api.getTaskStatus"] >= 2
    companies = {c.id: c.name for c in kit.ornd_sim.companies}
    active = _active(members)
    expected = {_group_of(m, companies) for m in active} | {UNLINKED_GROUP}
    assert set(pc.list_user_groups(0, 1000)) == expected
    assert summary.groups_created == len(expected)
    for m in active:
        assert pc.get_user_groups(str(m.email).lower()) == [_group_of(m, companies)]
    assert pc.get_user_groups("stranger") == [UNLINKED_GROUP]
    # The program lists every group the sync uses, UNLINKED_MEMBERS_TO_OFFICERND included.
    done = await asyncio.to_thread(
        lambda: subprocess.run(
            [sys.executable, "-m", "proxy.cli", "papercut", "user-source", "-", "all-groups"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    )
    listed = done.stdout.splitlines()
    assert set(listed) == expected
    # A regular sync with nothing new asks PaperCut for nothing.
    pc.applied.clear()
    again = await kit.sync()
    assert again.errors == 0 and kit.writes() == {}


async def test_a_member_the_sync_deactivates_loses_tokens_and_cards(
    kit: Kit, aiohttp_client: Any, db_url: str, tmp_path: Path
) -> None:
    """OfficeRnD sync deactivates a leaving member (``active = False``): her API
    token answers 401 and her card 404 at the reader, as for ``user disable``."""
    from billing import status as billing_status
    from billing.enums import PrinterMode, PrintStatus
    from billing.models import PrintOut
    from proxy import nfc_admin
    from proxy.app import create_app
    from tests import factories as f

    members = kit.ornd_sim.seed_members(10, 2, 2, seed=3)
    await kit.sync()
    leaver = _active(members)[0]
    name = str(leaver.email).lower()
    async with kit.sessions() as s, s.begin():
        printer = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        po = await f.print_out(s, printer, name)
        assert await billing_status.transition(s, po, PrintStatus.HELD, actor="intake")
        await nfc_admin.add_card(s, name, "04:0a:0b:0c")
        reader = await nfc_admin.add_reader(s, "lobby", ["pp-hold"])
        token = await f.token(s, "user", user=name)
        held_id = po.id
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    client = await aiohttp_client(create_app(config, workers=False, intake=False))
    auth = {"Authorization": f"Bearer {token}"}
    async with client.get("/api/v1/printouts", headers=auth) as resp:
        assert resp.status == 200
    kit.ornd_sim.set_member_status(leaver.id, "former")
    assert (await kit.sync()).errors == 0
    async with kit.sessions() as s:
        assert await s.scalar(select(User.active).where(User.name == name)) is False
    async with client.get("/api/v1/printouts", headers=auth) as resp:
        assert resp.status == 401
    async with client.post(
        "/api/v1/readers/lobby/tap",
        json={"card": "04:0a:0b:0c"},
        headers={"Authorization": f"Bearer {reader}"},
    ) as resp:
        assert resp.status == 404
    async with kit.sessions() as s:
        assert await s.scalar(select(PrintOut.status).where(PrintOut.id == held_id)) == int(
            PrintStatus.HELD
        )
