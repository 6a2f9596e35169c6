"""PaperCut server checks: unauthenticated printers with a cost (SPEC §9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from billing.exceptions import InvalidAmount
from billing.papercut.checks import (
    UNAUTHENTICATED_STEPS,
    ProblemKind,
    check,
    fix,
)
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutUnavailable
from proxy.devkit.papercut.simulator import FaultMode, PaperCutSimulator

TOKEN = "check-token"
SET_COST = "api.setPrinterCostSimple"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PaperCutSimulator]:
    async with PaperCutSimulator(tmp_path / "sim.db", token=TOKEN) as simulator:
        simulator.add_printer("srv", "good", cost_mono=Decimal("0.10"))
        simulator.add_printer("srv", "authed", cost_mono=Decimal("0.10"), unauthenticated=False)
        simulator.add_printer("srv", "free", cost_mono=0)
        simulator.add_printer("srv", "worst", cost_mono=0, unauthenticated=False)
        simulator.add_printer("srv", "sized", cost_model="SIZE_TABLE")
        simulator.add_printer("device", "mfd-1", unauthenticated=False)  # an MFD: skipped
        yield simulator


@pytest.fixture
async def client(sim: PaperCutSimulator) -> AsyncIterator[PaperCutClient]:
    async with PaperCutClient(sim.url, TOKEN, backoff=0.001) as pc:
        yield pc


def kinds(problems: object) -> set[tuple[str, ProblemKind]]:
    return {(p.name, p.kind) for p in problems}  # type: ignore[attr-defined]


async def test_check_finds_the_misconfigured_printers(client: PaperCutClient) -> None:
    problems = await check(client)
    assert kinds(problems) == {
        ("srv\\authed", ProblemKind.AUTHENTICATED),
        ("srv\\free", ProblemKind.NO_COST),
        ("srv\\worst", ProblemKind.AUTHENTICATED),
        ("srv\\worst", ProblemKind.NO_COST),
        ("srv\\sized", ProblemKind.COST_UNKNOWN),
    }
    assert not any(p.fixable for p in problems)  # no default cost given
    authed = next(p for p in problems if p.kind is ProblemKind.AUTHENTICATED)
    assert authed.steps == UNAUTHENTICATED_STEPS
    assert any("[Template Printer]" in step for step in authed.steps)
    assert any("Advanced Configuration" in step for step in authed.steps)
    assert str(authed).startswith("srv\\authed: ")


async def test_fix_without_a_default_cost_changes_nothing(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    report = await fix(client)
    assert report.fixed == [] and report.failed == []
    assert len(report.needs_person) == 5
    assert not report.clean
    assert client.calls[SET_COST] == 0
    assert sim.get_printer_cost_simple("srv", "free") == 0


async def test_fix_sets_the_default_cost_and_a_second_check_is_clean_for_it(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    problems = await check(client, default_cost=Decimal("0.05"))
    assert {p.name for p in problems if p.fixable} == {"srv\\free", "srv\\worst"}

    report = await fix(client, default_cost=Decimal("0.05"))

    assert kinds(report.fixed) == {
        ("srv\\free", ProblemKind.NO_COST),
        ("srv\\worst", ProblemKind.NO_COST),
    }
    assert kinds(report.needs_person) == {
        ("srv\\authed", ProblemKind.AUTHENTICATED),
        ("srv\\worst", ProblemKind.AUTHENTICATED),
        ("srv\\sized", ProblemKind.COST_UNKNOWN),
    }
    assert client.calls[SET_COST] == 2
    assert await client.get_printer_cost_simple("srv", "free") == Decimal("0.05")
    assert kinds(await check(client)) == kinds(report.needs_person)

    # What a person does in the admin UI: the remaining problems go away.
    sim.set_printer_flags("srv", "authed", unauthenticated=True)
    sim.set_printer_flags("srv", "worst", unauthenticated=True)
    await client.set_printer_cost_simple("srv", "sized", Decimal("0.08"))
    assert await check(client) == []
    assert (await fix(client)).clean


async def test_a_server_without_the_property_gets_check_by_hand(client: PaperCutClient) -> None:
    problems = await check(client, unauthenticated_property="no-such-property")
    unknown = [p for p in problems if p.kind is ProblemKind.UNAUTHENTICATED_UNKNOWN]
    assert {p.name for p in unknown} == {
        "srv\\good",
        "srv\\authed",
        "srv\\free",
        "srv\\worst",
        "srv\\sized",
    }
    assert all("check by hand" in p.message and not p.fixable for p in unknown)
    skipped = await check(client, unauthenticated_property=None)
    assert sum(p.kind is ProblemKind.UNAUTHENTICATED_UNKNOWN for p in skipped) == 5


async def test_a_refused_repair_is_reported(client: PaperCutClient, sim: PaperCutSimulator) -> None:
    sim.inject(FaultMode.HTTP_500, method=SET_COST)
    report = await fix(client, default_cost=Decimal("0.05"))
    assert len(report.fixed) == 1
    [(problem, error)] = report.failed
    assert problem.kind is ProblemKind.NO_COST and "HTTP 500" in error
    assert not report.clean


async def test_default_cost_must_be_positive(client: PaperCutClient) -> None:
    for bad in (Decimal(0), Decimal("-1"), 0.05):
        with pytest.raises(InvalidAmount):
            await fix(client, default_cost=bad)  # type: ignore[arg-type]


async def test_an_unreachable_server_fails_the_check(sim: PaperCutSimulator) -> None:
    sim.inject(FaultMode.HTTP_500, count=3)
    async with PaperCutClient(sim.url, TOKEN, attempts=3, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable):
            await check(pc)


async def test_double_charge_is_reported_for_proxyprint_queues_and_fixed(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    """A queue proxyprint sends to that charges the printing user's personal account
    would charge every job twice (PaperCut, then proxyprint's delegators)."""
    sim.add_shared_account("Other")
    sim.add_printer("srv", "pp-target", cost_mono=Decimal("0.10"))
    sim.add_printer("srv", "pp-other", cost_mono=Decimal("0.10"), charge_account="Other")
    managed = {"PP-TARGET", "pp-other"}  # PaperCut printer names are case-insensitive
    problems = await check(client, clearing_account="clearing", managed=managed)
    charge = {(p.name, p.kind) for p in problems if p.name in {"clearing"} or "pp-" in p.name}
    assert charge == {
        ("clearing", ProblemKind.NO_CLEARING_ACCOUNT),
        ("srv\\pp-target", ProblemKind.DOUBLE_CHARGE),
        ("srv\\pp-other", ProblemKind.DOUBLE_CHARGE),
    }
    target = next(p for p in problems if p.name == "srv\\pp-target")
    assert "personal account" in target.message and "double charge" in target.message
    assert target.fixable
    # Printers proxyprint does not send to keep charging their users.
    assert not any(p.kind is ProblemKind.DOUBLE_CHARGE and p.name == "srv\\good" for p in problems)

    report = await fix(client, clearing_account="clearing", managed=managed)
    assert kinds(report.fixed) >= charge
    assert sim.is_shared_account_exists("clearing")
    assert sim.get_printer_property("srv", "pp-target", "charge-to-shared-account") == "clearing"
    again = await check(client, clearing_account="clearing", managed=managed)
    assert not [p for p in again if p.name == "clearing" or "pp-" in p.name]
    assert (await fix(client, clearing_account="clearing", managed=managed)).fixed == []


async def test_without_proxyprint_queues_the_clearing_account_is_not_required(
    client: PaperCutClient,
) -> None:
    problems = await check(client, clearing_account="clearing", managed=set())
    assert not [p for p in problems if p.kind is ProblemKind.NO_CLEARING_ACCOUNT]
    assert not [p for p in problems if p.kind is ProblemKind.DOUBLE_CHARGE]
    every = await check(client, clearing_account="clearing")  # managed None: every printer
    assert ("srv\\good", ProblemKind.DOUBLE_CHARGE) in kinds(every)
