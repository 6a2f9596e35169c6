"""The PaperCut simulator held to a client we did not write.

``papercut-xml-webservices-api`` (PyPI, a dev dependency) wraps PaperCut's
``ServerCommandProxy`` Web Services methods over the standard library's
``xmlrpc.client``, with PaperCut's documented names, argument orders and types.
This test drives the simulator with it for every method proxyprint's client
(``billing/papercut/client.py``) calls, and checks that the simulator refuses
what PaperCut refuses: an ``<int>`` where PaperCut declares a ``double``, a
missing argument, ``<nil/>`` for an "optional" one, an unknown property.

Two things about the package itself, found here: its ``with`` support is
broken (``__enter__`` is wrapped in ``contextmanager``), so the test sets its
``api`` attribute as ``__enter__`` means to (a ``ServerProxy`` on its own
``url``); and its ``setPrinterProperty`` sends the arguments in another order
than PaperCut documents (property, value, server, printer), which the
simulator, like PaperCut, answers with a fault: the test shows that too and
then calls the method in the documented order through the package's proxy.
"""

from __future__ import annotations

import asyncio
import re
import xmlrpc.client
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from papercut_xml_webservices_api.ServerCommand.ServerCommandProxy import (  # type: ignore[import-untyped]
    ServerCommandProxy,
)

from proxy.devkit.papercut import simrpc
from proxy.devkit.papercut.simulator import PaperCutSimulator

TOKEN = "fidelity-token"
CLIENT_SOURCE = Path(__file__).parents[1] / "billing" / "papercut" / "client.py"
_CALLED = re.compile(r'(?:call|_bool|_str|_strings|_money)\(\s*"(api\.\w+)"')


def methods_proxyprint_calls() -> set[str]:
    """Every Web Services method ``billing/papercut/client.py`` sends."""
    return set(_CALLED.findall(CLIENT_SOURCE.read_text()))


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PaperCutSimulator]:
    async with PaperCutSimulator(tmp_path / "sim.db", token=TOKEN) as simulator:
        simulator.add_user("amy", Decimal("5.00"), card="1234")
        simulator.add_group("crew", members=["amy"])
        simulator.add_shared_account("Projects")
        simulator.add_printer("srv", "office", cost_mono=Decimal("0.10"))
        yield simulator


@pytest.fixture
def proxy(sim: PaperCutSimulator) -> Iterator[ServerCommandProxy]:
    url = urlsplit(sim.url)
    client = ServerCommandProxy(host=url.hostname, port=url.port)
    assert client.url == sim.url  # the package's own idea of PaperCut's endpoint
    server = xmlrpc.client.ServerProxy(client.url, allow_none=True)
    client.api = server.api
    yield client
    server("close")()


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """The package is blocking; the simulator runs on this event loop."""
    return await asyncio.to_thread(fn, TOKEN, *args)


async def refused(fn: Callable[..., Any], *args: Any) -> str:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        await call(fn, *args)
    return str(caught.value.faultString)


async def test_every_method_proxyprint_calls_through_the_independent_client(
    proxy: ServerCommandProxy, sim: PaperCutSimulator
) -> None:
    used = methods_proxyprint_calls()
    assert used <= set(simrpc.METHODS), used - set(simrpc.METHODS)
    seen: set[str] = set()

    async def ok(method: str, *args: Any) -> Any:
        seen.add(f"api.{method}")
        return await call(getattr(proxy, method), *args)

    # Users and their accounts.
    assert await ok("isUserExists", "AMY") is True
    assert await ok("isUserExists", "nobody") is False
    assert await ok("getUserAccountBalance", "amy", "") == 5.0
    assert await ok("adjustUserAccountBalance", "amy", -1.25, "", "fidelity [pp:1]") is True
    assert sim.balance("amy") == Decimal("3.75")
    assert [a.comment for a in sim.adjustments("fidelity")] == ["fidelity [pp:1]"]
    assert await ok("setUserProperty", "amy", "full-name", "Amy Adams") is True
    assert await ok("getUserProperty", "amy", "full-name") == "Amy Adams"
    assert await ok("setUserProperties", "amy", [["email", "amy@example.org"]]) is True
    assert await ok("getUserProperties", "amy", ["email", "balance"]) == [
        "amy@example.org",
        "3.75",
    ]
    assert await ok("addNewInternalUser", "bo", "pw", "Bo", "bo@example.org", "", "") is True
    assert await ok("listUserAccounts", 0, 10) == ["amy", "bo"]
    assert await ok("lookUpUserNameByCardNo", "1234") == "amy"
    assert await ok("deleteExistingUser", "bo", False) is True
    assert await ok("isUserExists", "bo") is False

    # Groups: the directory source offers "crew" and "night"; a new group is added in
    # the background, after a user/group sync.
    sim.set_directory(groups=["crew", "night"])
    sim.task_seconds = 0.2
    assert await ok("performUserAndGroupSync") is True
    assert await ok("performGroupSync") is True
    for _ in range(100):
        status = await ok("getTaskStatus")
        if status["completed"]:
            break
        assert status == {"completed": False, "message": status["message"]}
        await asyncio.sleep(0.05)
    assert status["completed"] and status["message"].startswith("Completed")
    assert await ok("isGroupExists", "crew") is True
    assert await ok("addNewGroup", "crew") is True  # the group exists: nothing changes
    assert await ok("addNewGroup", "night") is True
    assert await ok("isGroupExists", "night") is False  # not yet: a background task
    assert "not exist in the user directory source" in await refused(proxy.addNewGroup, "day")
    for _ in range(100):
        if (await ok("getTaskStatus"))["completed"]:
            break
        await asyncio.sleep(0.05)
    assert await ok("isGroupExists", "night") is True
    assert await ok("removeUserFromGroup", "amy", "crew") is True
    sim.task_seconds = 0.0
    assert await ok("listUserGroups", 0, 10) == ["crew", "night"]
    assert await ok("getGroupMembers", "crew", 0, 10) == []
    assert await ok("addUserToGroup", "amy", "crew") is True
    assert await ok("getGroupMembers", "crew", 0, 10) == ["amy"]
    assert await ok("removeUserFromGroup", "amy", "crew") is True
    assert await ok("getUserGroups", "amy") == []
    assert await ok("addUserToGroup", "amy", "crew") is True
    assert await ok("getUserGroups", "amy") == ["crew"]

    # Shared accounts.
    assert await ok("isSharedAccountExists", "Projects") is True
    assert await ok("addNewSharedAccount", "Projects\\Gala") is True
    assert await ok("adjustSharedAccountAccountBalance", "Projects\\Gala", -0.3, "x") is True
    assert sim.shared_balance("Projects/Gala") == Decimal("-0.3")

    # Printers.
    assert await ok("listPrinters", 0, 10) == ["srv\\office"]
    assert await ok("getPrinterProperty", "srv", "office", "cost-model") == "SIMPLE"
    assert await ok("getPrinterCostSimple", "srv", "office") == 0.1
    assert await ok("setPrinterCostSimple", "srv", "office", 0.15) is True
    assert sim.get_printer_cost_simple("srv", "office") == 0.15
    # The package's setPrinterProperty swaps PaperCut's order: refused, as PaperCut would.
    message = await refused(proxy.setPrinterProperty, "office", "disabled", "srv", "true")
    assert "does not exist" in message
    assert sim.get_printer_property("srv", "office", "disabled") == "false"
    seen.add("api.setPrinterProperty")
    assert await call(proxy.api.setPrinterProperty, "srv", "office", "disabled", "true") is True
    assert sim.get_printer_property("srv", "office", "disabled") == "true"

    assert used <= seen, f"not driven through the independent client: {sorted(used - seen)}"


async def test_the_simulator_refuses_what_papercut_refuses(proxy: ServerCommandProxy) -> None:
    # An <int> where PaperCut declares a double matches no method.
    assert "No method matching" in await refused(
        proxy.adjustUserAccountBalance, "amy", -1, "", "an int"
    )
    assert "No method matching" in await refused(
        proxy.adjustSharedAccountAccountBalance, "Projects", 2, "an int"
    )
    assert "No method matching" in await refused(proxy.setPrinterCostSimple, "srv", "office", 1)
    # The package's "optional" arguments default to None: <nil/>, which PaperCut refuses.
    assert "No method matching" in await refused(proxy.getUserAccountBalance, "amy")
    assert "No method matching" in await refused(proxy.adjustUserAccountBalance, "amy", -1.0)
    assert "No method matching" in await refused(proxy.addNewInternalUser, "cy", "pw")
    # Missing arguments (straight through the package's proxy).
    assert "No method matching" in await refused(proxy.api.adjustUserAccountBalance, "amy", -1.0)
    assert "No method matching" in await refused(proxy.api.listUserAccounts, 0)
    assert "No method matching" in await refused(proxy.api.getGroupMembers, "crew")
    # An int where PaperCut wants one: a double or text is refused.
    assert "No method matching" in await refused(proxy.listUserAccounts, 0.0, 10)
    # Unknown properties.
    assert "Invalid user property" in await refused(proxy.getUserProperty, "amy", "shoe-size")
    assert "read-only user property" in await refused(
        proxy.setUserProperty, "amy", "shoe-size", "9"
    )
    assert "Invalid printer property" in await refused(
        proxy.getPrinterProperty, "srv", "office", "colour"
    )
    assert "read-only printer property" in await refused(
        proxy.api.setPrinterProperty, "srv", "office", "colour", "x"
    )
    # A bad token and an unknown method.
    with pytest.raises(xmlrpc.client.Fault, match="Invalid authentication token"):
        await asyncio.to_thread(proxy.isUserExists, "wrong-token", "amy")
    with pytest.raises(xmlrpc.client.Fault, match="No such handler"):
        await call(proxy.api.noSuchMethod)
