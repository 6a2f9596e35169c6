"""The PaperCut XML-RPC client against the simulator: every method, faults, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from billing.exceptions import InvalidAmount, InvalidInput
from billing.papercut.client import PaperCutClient, shared_account_name, split_printer
from billing.papercut.exceptions import PaperCutFault, PaperCutUnavailable
from proxy.devkit.papercut.simulator import FaultMode, PaperCutSimulator
from tests.fixtures_cups import free_tcp_port

TOKEN = "s3cret-token"
ADJUST = "api.adjustUserAccountBalance"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PaperCutSimulator]:
    async with PaperCutSimulator(tmp_path / "sim.db", token=TOKEN, hang_seconds=5) as simulator:
        simulator.add_user(
            "Alice",
            Decimal("10.00"),
            full_name="Alice Archer",
            email="alice@example.org",
            card="04A1B2C3",
            groups=["staff"],
        )
        simulator.add_user("bob", Decimal("2.50"), groups=["staff", "sales"])
        simulator.add_printer("srv1", "lobby", cost_mono=Decimal("0.10"))
        simulator.add_printer("srv1", "annex", cost_mono=Decimal("0.05"), unauthenticated=False)
        yield simulator


def make_client(sim: PaperCutSimulator, **kwargs: object) -> PaperCutClient:
    options: dict[str, object] = {"timeout": 2.0, "backoff": 0.005, "max_backoff": 0.02}
    options.update(kwargs)
    return PaperCutClient(sim.url, TOKEN, **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(sim: PaperCutSimulator) -> AsyncIterator[PaperCutClient]:
    async with make_client(sim) as pc:
        yield pc


# --- users and accounts ------------------------------------------------------------------


async def test_user_names_are_lower_cased(client: PaperCutClient) -> None:
    assert await client.is_user_exists("alice") is True
    assert await client.is_user_exists("ALICE") is True
    assert await client.is_user_exists("nobody") is False
    assert await client.get_user_account_balance("Alice") == Decimal("10.00")


async def test_adjustments_are_unconditional_and_logged(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    await client.adjust_user_account_balance("alice", Decimal("-0.30"), "po 1 [pp:1]")
    assert await client.get_user_account_balance("alice") == Decimal("9.70")
    # No balance check: PaperCut lets the balance go negative.
    await client.adjust_user_account_balance("BOB", Decimal("-4.00"), "po 2 [pp:2]")
    assert await client.get_user_account_balance("bob") == Decimal("-1.50")
    assert sim.balance("bob") == Decimal("-1.50")
    logged = sim.adjustments(comment_contains="[pp:")
    assert [(a.account_name, a.amount, a.balance_after, a.comment) for a in logged] == [
        ("alice", Decimal("-0.30"), Decimal("9.70"), "po 1 [pp:1]"),
        ("bob", Decimal("-4.00"), Decimal("-1.50"), "po 2 [pp:2]"),
    ]
    assert client.calls[ADJUST] == 2


async def test_balances_come_back_as_exact_decimals(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    await client.adjust_user_account_balance("bob", Decimal("0.1"), "a")
    await client.adjust_user_account_balance("bob", Decimal("0.2"), "b")
    balance = await client.get_user_account_balance("bob")
    assert isinstance(balance, Decimal)
    assert balance == Decimal("2.80")
    assert sim.balance("bob") == Decimal("2.80")


async def test_named_personal_accounts(client: PaperCutClient, sim: PaperCutSimulator) -> None:
    sim.add_personal_account("alice", "Quota", Decimal("3"))
    await client.adjust_user_account_balance("alice", Decimal("-1"), "quota use", "Quota")
    assert await client.get_user_account_balance("alice", "Quota") == Decimal("2")
    # "" is the total of the personal accounts (PaperCut's getUserAccountBalance).
    assert await client.get_user_account_balance("alice") == Decimal("12.00")
    with pytest.raises(PaperCutFault, match="Personal account"):
        await client.adjust_user_account_balance("alice", Decimal("1"), "x", "Nope")


async def test_unknown_user_is_a_fault_never_retried(client: PaperCutClient) -> None:
    with pytest.raises(PaperCutFault, match="User does not exist: nobody") as caught:
        await client.get_user_account_balance("NoBody")
    assert caught.value.method == "api.getUserAccountBalance"
    with pytest.raises(PaperCutFault):
        await client.adjust_user_account_balance("nobody", Decimal("-1"), "x")
    assert client.calls["api.getUserAccountBalance"] == 1
    assert client.calls[ADJUST] == 1
    assert client.retries.total() == 0
    assert client.errors.total() == 2


async def test_bad_token_is_a_fault(sim: PaperCutSimulator) -> None:
    async with PaperCutClient(sim.url, "wrong", backoff=0.001) as pc:
        with pytest.raises(PaperCutFault, match="authentication token"):
            await pc.is_user_exists("alice")
        assert pc.calls["api.isUserExists"] == 1


async def test_user_properties(client: PaperCutClient) -> None:
    assert await client.get_user_property("alice", "full-name") == "Alice Archer"
    assert await client.get_user_property("alice", "balance") == "10.0"
    assert await client.get_user_properties("alice", ["email", "primary-card-number"]) == [
        "alice@example.org",
        "04A1B2C3",
    ]
    await client.set_user_property("alice", "office", "East Wing")
    await client.set_user_properties("alice", {"department": "Sales", "disabled-print": "TRUE"})
    await client.set_user_properties("alice", [("notes", "VIP")])
    assert await client.get_user_properties(
        "alice", ["office", "department", "disabled-print", "notes"]
    ) == ["East Wing", "Sales", "true", "VIP"]
    with pytest.raises(PaperCutFault, match="Invalid user property"):
        await client.get_user_property("alice", "shoe-size")
    with pytest.raises(PaperCutFault, match="read-only"):
        await client.set_user_property("alice", "internal", "true")


async def test_setting_the_balance_property_is_a_transaction(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    await client.set_user_property("bob", "balance", "7.25")
    assert sim.balance("bob") == Decimal("7.25")
    assert sim.adjustments()[-1].amount == Decimal("4.75")


async def test_list_user_accounts_in_pages(client: PaperCutClient, sim: PaperCutSimulator) -> None:
    for name in ("carol", "dave", "erin"):
        sim.add_user(name)
    assert await client.list_user_accounts(0, 2) == ["alice", "bob"]
    assert await client.list_user_accounts(2, 2) == ["carol", "dave"]
    assert await client.list_user_accounts(4, 2) == ["erin"]
    assert await client.all_user_accounts(page_size=2) == ["alice", "bob", "carol", "dave", "erin"]
    assert client.calls["api.listUserAccounts"] == 6


async def test_internal_users_cards_and_deletion(client: PaperCutClient) -> None:
    await client.add_new_internal_user(
        "Dave", "pw", full_name="Dave D", email="d@example.org", card_id="777", pin="1234"
    )
    assert await client.is_user_exists("dave")
    assert await client.get_user_property("dave", "internal") == "true"
    assert await client.lookup_user_name_by_card_no("777") == "dave"
    assert await client.lookup_user_name_by_card_no("04A1B2C3") == "alice"
    assert await client.lookup_user_name_by_card_no("999") is None
    with pytest.raises(PaperCutFault, match="already exists"):
        await client.add_new_internal_user("DAVE", "pw")
    await client.delete_existing_user("dave", redact_user_data=True)
    assert not await client.is_user_exists("dave")
    assert await client.lookup_user_name_by_card_no("777") is None
    with pytest.raises(PaperCutFault, match="does not exist"):
        await client.delete_existing_user("dave")
    # A deleted name can be created again, with a fresh account.
    await client.add_new_internal_user("dave", "pw2")
    assert await client.get_user_account_balance("dave") == 0


async def test_groups(client: PaperCutClient) -> None:
    assert await client.is_group_exists("staff")
    assert not await client.is_group_exists("Individual Member")
    await client.add_new_group("[Individual Member]")
    await client.add_new_group("[Individual Member]")  # adding again changes nothing
    assert await client.is_group_exists("[Individual Member]")
    assert await client.list_user_groups() == ["[Individual Member]", "sales", "staff"]
    assert await client.all_user_groups(page_size=1) == ["[Individual Member]", "sales", "staff"]
    assert await client.get_group_members("staff") == ["alice", "bob"]
    assert await client.get_group_members("staff", 1, 10) == ["bob"]
    assert await client.get_user_groups("bob") == ["sales", "staff"]
    await client.add_user_to_group("Alice", "[Individual Member]")
    await client.remove_user_from_group("alice", "staff")
    assert await client.get_user_groups("alice") == ["[Individual Member]"]
    assert await client.all_group_members("staff", page_size=1) == ["bob"]
    with pytest.raises(PaperCutFault, match="Group does not exist"):
        await client.get_group_members("nope")
    with pytest.raises(PaperCutFault, match="Group does not exist"):
        await client.add_user_to_group("alice", "nope")


async def test_shared_accounts_and_sub_accounts(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    assert not await client.is_shared_account_exists("Events/Gala")
    await client.add_new_shared_account("Events/Gala")
    await client.add_new_shared_account("ProjectX")
    # The parent exists, and the sub-account answers to both spellings.
    assert await client.is_shared_account_exists("Events")
    assert await client.is_shared_account_exists("Events/Gala")
    assert await client.is_shared_account_exists("Events\\Gala")
    await client.adjust_shared_account_account_balance("Events/Gala", Decimal("-1.20"), "po 3")
    await client.adjust_shared_account_account_balance("ProjectX", Decimal("-0.40"), "po 3")
    assert sim.shared_balance("Events/Gala") == Decimal("-1.20")
    assert sim.shared_balance("ProjectX") == Decimal("-0.40")
    names = [a.account_name for a in sim.adjustments(comment_contains="po 3")]
    assert names == ["Events\\Gala", "ProjectX"]  # what PaperCut was sent
    with pytest.raises(PaperCutFault, match="Shared account does not exist"):
        await client.adjust_shared_account_account_balance("Nope", Decimal("1"), "x")


def test_shared_account_names() -> None:
    assert shared_account_name("Events/Gala") == "Events\\Gala"
    assert shared_account_name("ProjectX") == "ProjectX"
    assert shared_account_name("Events\\Gala") == "Events\\Gala"
    for bad in ("a/b/c", "/b", "a/", "a\\b/c"):
        with pytest.raises(InvalidInput):
            shared_account_name(bad)
    assert split_printer("srv1\\lobby") == ("srv1", "lobby")
    with pytest.raises(InvalidInput):
        split_printer("lobby")


# --- printers --------------------------------------------------------------------------------


async def test_printers(client: PaperCutClient, sim: PaperCutSimulator) -> None:
    sim.add_printer("device", "mfd-1")
    assert await client.list_printers() == ["srv1\\annex", "srv1\\lobby", "device\\mfd-1"]
    assert await client.all_printers(page_size=1) == [
        "srv1\\annex",
        "srv1\\lobby",
        "device\\mfd-1",
    ]
    assert await client.get_printer_property("srv1", "lobby", "cost-model") == "SIMPLE"
    assert await client.get_printer_property("srv1", "lobby", "disabled") == "false"
    assert (await client.get_printer_property("srv1", "lobby", "printer-id")).isdigit()
    assert await client.get_printer_property("srv1", "lobby", "print-stats.job-count") == "0"
    await client.set_printer_property("srv1", "lobby", "disabled", "true")
    await client.set_printer_property("srv1", "lobby", "custom-field-2", "floor 2")
    assert await client.get_printer_property("srv1", "lobby", "disabled") == "true"
    assert await client.get_printer_property("srv1", "lobby", "custom-field-2") == "floor 2"
    assert await client.get_printer_cost_simple("srv1", "lobby") == Decimal("0.10")
    await client.set_printer_cost_simple("srv1", "lobby", Decimal("0.15"))
    assert await client.get_printer_cost_simple("srv1", "lobby") == Decimal("0.15")
    # The unauthenticated switch is not settable through the API (as in PaperCut).
    with pytest.raises(PaperCutFault, match="read-only"):
        await client.set_printer_property("srv1", "annex", "unauthenticated", "true")
    with pytest.raises(PaperCutFault, match="Printer does not exist"):
        await client.get_printer_cost_simple("srv1", "nope")
    await client.set_printer_property("srv1", "annex", "cost-model", "SIZE_TABLE")
    with pytest.raises(PaperCutFault, match="simple cost model"):
        await client.get_printer_cost_simple("srv1", "annex")


# --- arguments checked before anything is sent ---------------------------------------------


async def test_amounts_must_be_exact_decimals(client: PaperCutClient) -> None:
    for bad in (0.1, Decimal("NaN"), Decimal("0.12345678901234567890123"), "1.00", True):
        with pytest.raises(InvalidAmount):
            await client.adjust_user_account_balance("alice", bad, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at most 255"):
        await client.adjust_user_account_balance("alice", Decimal(1), "x" * 256)
    with pytest.raises(InvalidInput, match="XML-RPC cannot carry"):
        await client.adjust_user_account_balance("alice", Decimal(1), "bell\x07")
    with pytest.raises(InvalidInput):
        await client.list_user_accounts(-1, 10)
    assert client.calls.total() == 0
    await client.adjust_user_account_balance("alice", 2, "an int is exact")
    assert await client.get_user_account_balance("alice") == Decimal("12.00")


# --- transport errors and retries -------------------------------------------------------------


async def test_reads_are_retried_on_transport_errors(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    sim.inject(FaultMode.HTTP_500, method="api.isUserExists", count=2)
    sim.inject(FaultMode.MALFORMED, method="api.isUserExists")
    assert await client.is_user_exists("alice") is True
    assert client.calls["api.isUserExists"] == 4
    assert client.retries["api.isUserExists"] == 3
    assert sim.requests["api.isUserExists"] == 4


async def test_reads_give_up_after_the_attempts(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    sim.inject(FaultMode.HTTP_500, count=10)
    with pytest.raises(PaperCutUnavailable, match="HTTP 500") as caught:
        await client.get_user_account_balance("alice")
    assert caught.value.attempts == client.attempts == 4
    assert caught.value.retryable
    assert client.calls["api.getUserAccountBalance"] == 4


async def test_a_read_that_times_out_is_retried(sim: PaperCutSimulator) -> None:
    sim.inject(FaultMode.HANG, method="api.getUserAccountBalance")
    async with make_client(sim, timeout=0.2) as pc:
        assert await pc.get_user_account_balance("alice") == Decimal("10.00")
        assert pc.calls["api.getUserAccountBalance"] == 2
        assert pc.errors["api.getUserAccountBalance"] == 1


async def test_writes_get_one_attempt_by_default(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    sim.inject(FaultMode.HTTP_500, method=ADJUST)
    with pytest.raises(PaperCutUnavailable) as caught:
        await client.adjust_user_account_balance("alice", Decimal("-1"), "po 4")
    assert caught.value.attempts == 1
    assert client.calls[ADJUST] == 1
    assert sim.balance("alice") == Decimal("10.00")  # the 500 came before applying
    await client.adjust_user_account_balance("alice", Decimal("-1"), "po 4")
    assert sim.balance("alice") == Decimal("9.00")


async def test_retry_writes_retries_them(sim: PaperCutSimulator) -> None:
    sim.inject(FaultMode.HTTP_500, method=ADJUST)
    async with make_client(sim, retry_writes=True) as pc:
        await pc.adjust_user_account_balance("alice", Decimal("-1"), "po 5")
        assert pc.calls[ADJUST] == 2
    assert sim.applied[ADJUST] == 1
    assert sim.balance("alice") == Decimal("9.00")


async def test_a_write_applied_then_timed_out_is_not_resent(sim: PaperCutSimulator) -> None:
    """The exactly-once case: the server applied it, the client saw a timeout."""
    sim.inject(FaultMode.APPLY_THEN_HANG, method=ADJUST)
    async with make_client(sim, timeout=0.2) as pc:
        with pytest.raises(PaperCutUnavailable, match="Timeout"):
            await pc.adjust_user_account_balance("alice", Decimal("-1"), "po 6 [pp:6]")
        assert pc.calls[ADJUST] == 1
    assert sim.balance("alice") == Decimal("9.00")  # applied once
    assert len(sim.adjustments(comment_contains="[pp:6]")) == 1


async def test_blind_write_retries_charge_twice(sim: PaperCutSimulator) -> None:
    """Why retry_writes is off by default."""
    sim.inject(FaultMode.APPLY_THEN_HANG, method=ADJUST)
    async with make_client(sim, timeout=0.2, retry_writes=True) as pc:
        await pc.adjust_user_account_balance("alice", Decimal("-1"), "po 7 [pp:7]")
    assert sim.balance("alice") == Decimal("8.00")
    assert len(sim.adjustments(comment_contains="[pp:7]")) == 2


async def test_faults_are_not_retried_even_for_retried_writes(sim: PaperCutSimulator) -> None:
    async with make_client(sim, retry_writes=True) as pc:
        with pytest.raises(PaperCutFault):
            await pc.adjust_user_account_balance("nobody", Decimal("1"), "x")
        assert pc.calls[ADJUST] == 1


async def test_random_faults_with_enough_attempts(sim: PaperCutSimulator) -> None:
    sim.set_faults(fail_rate=0.3, seed=7)
    async with make_client(sim, attempts=10) as pc:
        for _ in range(30):
            assert await pc.get_user_account_balance("bob") == Decimal("2.50")
        assert pc.calls["api.getUserAccountBalance"] > 30
        assert pc.retries["api.getUserAccountBalance"] == pc.calls["api.getUserAccountBalance"] - 30


async def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/rpc/api/xmlrpc"
    async with PaperCutClient(url, TOKEN, attempts=3, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable, match="after 3 attempt") as caught:
            await pc.list_printers()
        assert caught.value.retryable
        assert pc.calls["api.listPrinters"] == 3


async def test_a_wrong_url_is_not_retried(sim: PaperCutSimulator) -> None:
    async with PaperCutClient(sim.base_url + "/rpc/api/nope", TOKEN, backoff=0.001) as pc:
        with pytest.raises(PaperCutUnavailable, match="HTTP 404") as caught:
            await pc.is_user_exists("alice")
        assert not caught.value.retryable
        assert pc.calls["api.isUserExists"] == 1


async def test_one_session_for_every_call(client: PaperCutClient, sim: PaperCutSimulator) -> None:
    session = client._http()
    for _ in range(5):
        await client.is_user_exists("alice")
    assert client._http() is session
    assert sim.requests["api.isUserExists"] == 5


async def test_an_unlisted_method_counts_as_a_write(
    client: PaperCutClient, sim: PaperCutSimulator
) -> None:
    sim.inject(FaultMode.HTTP_500, count=5)
    with pytest.raises(PaperCutUnavailable):
        await client.call("api.adjustUserAccountBalanceByGroup", "staff", 1.0, "x")
    assert client.calls["api.adjustUserAccountBalanceByGroup"] == 1
