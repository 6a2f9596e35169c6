"""The web app in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against the real service on a real port
with a private cupsd and ippeveprinter (``ServiceStack``).

Selenium is blocking and the service runs on this test's event loop, so every
browser call goes through ``asyncio.to_thread``. Under CI=true a missing
Chromium fails the run. Screenshots (phone and desktop size) go to the test
run's temporary directory, ``.../screenshots``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from sqlalchemy import select, update

from billing import ledger
from billing.enums import AccountType, PrintStatus
from billing.models import Account, Event, ScheduledRun, User
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.officernd.simulator import OfficeRnDSimulator
from proxy.devkit.papercut.simulator import PaperCutSimulator
from proxy.devkit.stack import ServiceStack
from proxy.keys import SESSIONS
from proxy.web import passwords
from proxy.web.sessions import COOKIE
from tests.fixtures_cups import unavailable, unique

pytestmark = pytest.mark.cups
S = PrintStatus
T = TypeVar("T")
PASSWORD = "correct horse battery"
MARKUP_NAME = "<img>mallory<b>"
PHONE = (390, 844)
DESKTOP = (1280, 900)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select
except ImportError:  # pragma: no cover - a dev dependency
    webdriver = None  # type: ignore[assignment]


class Browser:
    """One Chromium, driven from async code (each call in a thread)."""

    def __init__(self, driver: WebDriver, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def get(self, path: str) -> None:
        await self._run(self.driver.get, self.base_url + path)

    async def find(self, css: str, timeout: float = 15.0) -> Any:
        """The element, once the page shows it (a click's navigation is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self._run(self.driver.find_elements, By.CSS_SELECTOR, css)
            if found or time.monotonic() > deadline:
                return (
                    found[0]
                    if found
                    else await self._run(self.driver.find_element, By.CSS_SELECTOR, css)
                )  # raises NoSuchElementException with selenium's message
            await asyncio.sleep(0.05)

    async def text(self, css: str) -> str:
        element = await self.find(css)
        return str(await self._run(lambda: element.text))

    async def exists(self, css: str) -> bool:
        found = await self._run(self.driver.find_elements, By.CSS_SELECTOR, css)
        return bool(found)

    async def click(self, css: str) -> None:
        element = await self.find(css)
        await self._run(element.click)

    async def fill(self, css: str, value: str) -> None:
        element = await self.find(css)
        await self._run(element.clear)
        await self._run(element.send_keys, value)

    async def choose(self, css: str, value: str) -> None:
        element = await self.find(css)
        await self._run(lambda: Select(element).select_by_value(value))

    async def path(self) -> str:
        url = str(await self._run(lambda: self.driver.current_url))
        return url.removeprefix(self.base_url)

    async def wait_path(self, wanted: str, timeout: float = 20.0, *, prefix: bool = False) -> str:
        """The path once the browser got there (a click's navigation is
        asynchronous); ``prefix``: a path that starts with ``wanted``."""
        deadline = time.monotonic() + timeout
        while True:
            path = await self.path()
            there = path.startswith(wanted) if prefix else path == wanted
            if there or time.monotonic() > deadline:
                return path
            await asyncio.sleep(0.05)

    async def script(self, source: str) -> Any:
        return await self._run(self.driver.execute_script, source)

    async def wait_text(self, css: str, wanted: str, timeout: float = 30.0) -> str:
        """Wait (without reloading) until the element's text contains ``wanted``."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            try:
                seen = await self.text(css)
            except (NoSuchElementException, StaleElementReferenceException):
                seen = "<absent>"  # not there yet, or the page changed under us
            if wanted in seen:
                return seen
            await asyncio.sleep(0.2)
        raise AssertionError(f"{css}: {seen!r}, not {wanted!r}, after {timeout} s")

    async def sign_in(self, name: str, password: str = PASSWORD) -> None:
        await self._run(self.driver.delete_all_cookies)
        await self.get("/")
        await self.fill("#user", name)
        await self.fill("#password", password)
        form = await self.find("#sign-in")
        await self.click("#sign-in button[type=submit]")
        # Done when the sign-in page has been replaced (the next page, or the form
        # again with its error): the POST and its cookie are then complete.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await self._run(form.is_displayed)
            except WebDriverException:  # stale or gone: the page was replaced
                return
            await asyncio.sleep(0.05)

    async def cookie(self, name: str) -> dict[str, Any]:
        found = await self._run(self.driver.get_cookie, name)
        assert found is not None, f"no cookie {name}"
        return dict(found)

    def no_alert(self) -> bool:
        try:
            self.driver.switch_to.alert  # noqa: B018  (raises when there is none)
        except NoAlertPresentException:
            return True
        return False

    async def shoot(self, name: str) -> None:
        """A screenshot at phone size and one at desktop size."""
        for label, (width, height) in (("phone", PHONE), ("desktop", DESKTOP)):
            await self._run(self.driver.set_window_size, width, height)
            await self._run(self.driver.save_screenshot, str(self.shots / f"{name}-{label}.png"))
        await self._run(self.driver.set_window_size, *PHONE)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if webdriver is None:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    if chromium is None or chromedriver is None:
        unavailable("chromium/chromedriver missing (Debian chromium, chromium-driver)")
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={PHONE[0]},{PHONE[1]}")
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
async def stack(private_cupsd: PrivateCupsd, short_tmp: Path) -> AsyncIterator[ServiceStack]:
    async with ServiceStack(private_cupsd, short_tmp / "svc") as svc:
        await svc.add_users("alice", "bob", "carol", "erin", "otto", MARKUP_NAME)
        for name, role in (
            ("alice", "user"),
            ("bob", "user"),
            ("carol", "user"),
            ("erin", "admin"),
            ("otto", "ticket-operator"),
        ):
            await set_password(svc, name, role)
        yield svc


@pytest.fixture
def browser(
    driver: WebDriver, stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory
) -> Browser:
    driver.delete_all_cookies()
    return Browser(driver, stack.base_url, screenshots(tmp_path_factory))


def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go: the test run's base temporary directory."""
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    shots.mkdir(exist_ok=True)
    return shots


async def set_password(svc: ServiceStack, name: str, role: str) -> None:
    assert svc.app is not None
    hashed = await asyncio.to_thread(passwords.hash_password, PASSWORD)
    async with svc.app[SESSIONS]() as s, s.begin():
        await s.execute(
            update(User).where(User.name == name).values(password_hash=hashed, web_role=role)
        )


async def balance_of(svc: ServiceStack, user: str) -> Any:
    assert svc.app is not None
    async with svc.app[SESSIONS]() as s:
        account = await s.scalar(
            select(Account)
            .join(User, User.id == Account.user_id)
            .where(Account.type == AccountType.USER.value, User.name == user)
        )
        assert account is not None
        return await ledger.balance(s, account.id)


async def post_without_csrf(base_url: str, path: str, secret: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(base_url, cookies={COOKIE: secret}) as http,
        http.post(path, data={"printer": ""}, allow_redirects=False) as resp,
    ):
        return resp.status, resp.headers.get("Location", "")


async def test_alice_releases_her_held_job_and_an_admin_reverses_it(
    stack: ServiceStack, browser: Browser, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = unique("pp-webhold")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold", cost_mono="0.25")
    title = unique("web-held")
    job = await stack.lp(queue, make_pdf(short_tmp / "a.pdf", 2), user="alice", title=title)
    po = await stack.wait_print_out(queue, job, {S.HELD})
    xss_title = "<script>alert(1)</script>"
    xss_job = await stack.lp(queue, make_pdf(short_tmp / "x.pdf", 1), user="alice", title=xss_title)
    xss = await stack.wait_print_out(queue, xss_job, {S.HELD})

    # alice signs in on a phone-sized window and sees her held job.
    await browser.sign_in("alice")
    assert await browser.wait_path("/jobs") == "/jobs"
    assert title in await browser.text(f"#held-{po.id} .title")
    # A title that is markup renders as text: no script ran, no dialog.
    assert await browser.text(f"#held-{xss.id} .title") == xss_title
    assert await asyncio.to_thread(browser.no_alert)
    cookie = await browser.cookie(COOKIE)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert await browser.script("return document.cookie") == ""  # not readable by script
    await browser.shoot("jobs")

    # A POST without the CSRF token is refused, even with her live session.
    status, _ = await post_without_csrf(stack.base_url, f"/jobs/{po.id}/release", cookie["value"])
    assert status == 403
    assert await browser.text(f"#held-{po.id} .status") == "held"

    # She releases it and watches it complete without reloading.
    await browser.click(f"#release-{po.id}")
    assert (await browser.wait_path("/jobs?done=released", prefix=True)).startswith(
        "/jobs?done=released"
    )
    await browser.script("window.ppNoReload = 'still here'")
    await browser.find("body[data-live=open]")  # the page's script has its event stream
    await browser.wait_text(f"#job-{po.id} .status", "completed")
    assert await browser.script("return window.ppNoReload") == "still here"
    # The script wrote it from a pushed event (it follows no other way); the job
    # still held stays followed.
    assert await browser.exists(f'#job-{po.id}[data-live-status="completed"]')
    assert not await browser.exists(f"#job-{po.id}[data-live-job]")
    assert await browser.exists(f"#held-{xss.id}[data-live-job]")
    done = await stack.wait_print_out(queue, job)
    assert done.status == S.COMPLETED and done.cost is not None
    await browser.shoot("jobs-completed")
    # She prints again: the new job appears on the open page, followed, no reload.
    again = await stack.lp(queue, make_pdf(short_tmp / "b.pdf", 1), user="alice", title="again")
    po_again = await stack.wait_print_out(queue, again, {S.HELD})
    assert "again" in await browser.wait_text(f"#held-{po_again.id} .title", "again")
    assert await browser.exists(f"#held-{po_again.id}[data-live-job] #release-{po_again.id}")
    assert await browser.script("return window.ppNoReload") == "still here"

    # The document page shows her share in the Transactions Summary.
    await browser.get(f"/documents/{po.id}")
    assert await browser.text("#doc-title") == title
    row = await browser.text('#transactions tr[data-account="alice"]')
    assert f"{done.cost:.2f} EUR" in row and "completed" in row
    assert "completed" in await browser.text("#doc-status")
    assert not await browser.exists("#reverse")  # a user has no Reverse
    assert "web-release" in await browser.text("#events")
    await browser.shoot("document")
    await browser.get("/history")
    assert title in await browser.text(f"#printout-{po.id}")
    await browser.shoot("history")
    await browser.get("/balance")
    assert f"-{done.cost:.2f} EUR" == await browser.text("#balance")
    await browser.shoot("balance")
    # Not hers to see: the admin pages.
    await browser.get("/admin/documents")
    assert "Not allowed" in await browser.text("h1")

    # Sign-out ends the session: the old cookie opens nothing any more.
    await browser.get("/jobs")
    await browser.click("#sign-out")
    assert await browser.wait_path("/") == "/"
    assert await browser.exists("#sign-in")
    await browser.shoot("sign-in")
    async with (
        aiohttp.ClientSession(stack.base_url, cookies={COOKIE: cookie["value"]}) as http,
        http.get("/jobs", allow_redirects=False) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"] == "/"

    # An admin finds the print-out in the document log and presses Reverse.
    before = await balance_of(stack, "alice")
    await browser.sign_in("erin")
    await browser.get("/admin/documents?user=alice&status=completed")
    assert title in await browser.text(f"#doc-{po.id}")
    await browser.shoot("admin-documents")
    await browser.click(f"#doc-{po.id} a")
    await browser.fill("#reverse-reason", "printer jammed after the charge")
    await browser.click("#reverse")
    wanted = f"/documents/{po.id}?reversed=1"
    assert await browser.wait_path(wanted) == wanted
    assert await browser.exists("#doc-reversed")
    after = await balance_of(stack, "alice")
    assert before == -done.cost and after == 0
    await browser.get("/admin/accounts?type=user")
    assert "0.00 EUR" in await browser.text('#accounts tr[data-account="alice"] .balance')
    await browser.shoot("admin-accounts")
    # alice's ledger shows the compensation.
    await browser.sign_in("alice")
    await browser.get("/balance")
    assert await browser.text("#balance") == "0.00 EUR"
    assert await browser.exists('#ledger tr[data-kind="reversal"]')


async def test_a_disabled_users_session_ends_and_names_render_as_text(
    stack: ServiceStack, browser: Browser
) -> None:
    assert stack.app is not None
    await browser.sign_in("bob")
    assert await browser.wait_path("/jobs") == "/jobs"
    bob_cookie = (await browser.cookie(COOKIE))["value"]

    # An admin disables bob on the Users page; his session ends at once.
    await browser.sign_in("erin")
    await browser.get("/admin/users")
    async with stack.app[SESSIONS]() as s:
        bob_id = await s.scalar(select(User.id).where(User.name == "bob"))
    await browser.click(f"#active-{bob_id}")  # untick
    await browser.click(f"#save-{bob_id}")
    assert "changed-bob" in await browser.text("#done")
    await browser.shoot("admin-users")
    async with (
        aiohttp.ClientSession(stack.base_url, cookies={COOKIE: bob_cookie}) as http,
        http.get("/balance", allow_redirects=False) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"] == "/"
    await browser.sign_in("bob")
    assert "Wrong user name or password" in await browser.text("#error-message")

    # A user name that is markup shows as text in the admin's lists.
    await browser.sign_in("erin")
    for path, css in (("/admin/accounts?type=user", "#accounts"), ("/admin/users", "#users")):
        await browser.get(path)
        assert MARKUP_NAME in await browser.text(css)
        assert not await browser.exists(f"{css} img")
    assert await asyncio.to_thread(browser.no_alert)


async def test_an_operator_releases_one_ticket_to_another_printer_and_cancels_another(
    stack: ServiceStack, browser: Browser, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    tickets = unique("pp-webticket")
    other = unique("pp-webother")
    await stack.add_printer(tickets, target="ipp://127.0.0.1:9/ipp/print", mode="ticket")
    await stack.add_printer(other, target=ippeve_printer.uri, mode="direct")
    first = await stack.lp(tickets, make_pdf(short_tmp / "t1.pdf", 1), user="carol", title="t-one")
    second = await stack.lp(tickets, make_pdf(short_tmp / "t2.pdf", 1), user="carol", title="t-two")
    one = await stack.wait_print_out(tickets, first, {S.HELD})
    two = await stack.wait_print_out(tickets, second, {S.HELD})

    await browser.sign_in("otto")
    assert await browser.wait_path("/tickets") == "/tickets"
    assert "t-one" in await browser.text(f"#ticket-{one.id}")
    await browser.shoot("tickets")
    await browser.choose(f"#tprinter-{one.id}", other)
    await browser.click(f"#trelease-{one.id}")
    assert "released" in await browser.wait_text("#done", "released")
    assert (await browser.wait_path("/tickets?done=released", prefix=True)).startswith(
        "/tickets?done=released"
    )
    await browser.click(f"#tcancel-{two.id}")
    assert "canceled" in await browser.wait_text("#done", "canceled")
    assert (await browser.wait_path("/tickets?done=canceled", prefix=True)).startswith(
        "/tickets?done=canceled"
    )
    assert not await browser.exists(f"#ticket-{one.id}")
    assert not await browser.exists(f"#ticket-{two.id}")
    # A new ticket joins the open (now empty) queue without a reload.
    await browser.find("body[data-live=open]")
    await browser.script("window.ppNoReload = 'still here'")
    third = await stack.lp(tickets, make_pdf(short_tmp / "t3.pdf", 1), user="carol", title="t-3")
    three = await stack.wait_print_out(tickets, third, {S.HELD})
    assert "t-3" in await browser.wait_text(f"#ticket-{three.id} .title", "t-3")
    assert await browser.exists(f"#trelease-{three.id}")
    assert await browser.script("return window.ppNoReload") == "still here"
    printed = await stack.wait_print_out(tickets, first)
    canceled = await stack.wait_print_out(tickets, second)
    assert printed.status == S.COMPLETED and printed.target == ippeve_printer.uri
    assert canceled.status == S.CANCELED
    docs = [d for d in ippeve_printer.documents() if d.title == "t-one"]
    assert len(docs) == 1


async def tap(base_url: str, reader: str, token: str, card: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(base_url) as http,
        http.post(
            f"/api/v1/readers/{reader}/tap",
            json={"card": card},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_card_self_association_then_a_tap_releases_her_held_jobs(
    stack: ServiceStack, browser: Browser, ippeve_printer: IppEvePrinter, short_tmp: Path
) -> None:
    queue = unique("pp-webcard")
    await stack.add_printer(queue, target=ippeve_printer.uri, mode="hold")
    reader = unique("door")
    token = await stack.add_reader(reader, [queue])
    job = await stack.lp(queue, make_pdf(short_tmp / "c.pdf", 1), user="carol", title="carded")
    po = await stack.wait_print_out(queue, job, {S.HELD})

    # An unknown card: nothing released, the tap is remembered for a few minutes.
    status, _ = await tap(stack.base_url, reader, token, "04 C0 FF EE 42")
    assert status == 404
    await browser.sign_in("carol")
    await browser.get("/cards")
    assert await browser.exists("#my-cards") and not await browser.exists("#my-cards li")
    offer = await browser.find("#offers li")
    assert "…ee42" in await browser.text("#offers li .title")
    assert reader in await browser.text("#offers li .meta")
    await browser.shoot("cards")
    await browser.click(f"#{await browser._run(offer.get_attribute, 'id')} button")
    assert "claimed-ee42" in await browser.wait_text("#done", "claimed")
    assert "…ee42" in await browser.text("#my-cards")
    assert await browser.exists("#no-offers")  # claimed: offered to no one any more
    await browser.shoot("cards-claimed")
    await browser.get("/delegate")
    assert await browser.exists("#delegate-form")
    await browser.shoot("delegate")
    # The claim is an event.
    assert stack.app is not None
    async with stack.app[SESSIONS]() as s:
        claimed = await s.scalar(select(Event).where(Event.reason == "self-associated"))
    assert claimed is not None and claimed.data == {
        "user": "carol",
        "card": "04c0ffee42",
        "reader": reader,
    }
    assert claimed.actor == "web:user:carol"

    # She taps again: her held job prints, and My jobs follows it without a
    # reload: it leaves "Held for me" for "Printing and recent".
    await browser.get("/jobs")
    assert await browser.text(f"#held-{po.id} .status") == "held"
    assert await browser.script("return document.querySelector('[data-empty-for=held]').hidden")
    await browser.find("body[data-live=open]")
    await browser.script("window.ppNoReload = 'still here'")
    status, body = await tap(stack.base_url, reader, token, "04c0ffee42")
    assert status == 200, body
    assert [r["id"] for r in body["released"]] == [po.id]
    done = await stack.wait_print_out(queue, job)
    assert done.status == S.COMPLETED
    await browser.wait_text(f"#recent #job-{po.id} .status", "completed")
    assert not await browser.exists(f"#held-{po.id}")  # moved, not copied
    assert not await browser.exists(f"#release-{po.id}")  # released: nothing left to press
    assert not await browser.script(
        "return document.querySelector('[data-empty-for=held]').hidden"
    )  # "No held jobs."
    assert await browser.script("return window.ppNoReload") == "still here"


async def wait_sync_run(svc: ServiceStack, timeout: float = 60.0) -> ScheduledRun:
    """The service's first (scheduled) OfficeRnD sync, once it has ended."""
    assert svc.app is not None
    deadline = time.monotonic() + timeout
    while True:
        async with svc.app[SESSIONS]() as s:
            run = await s.scalar(
                select(ScheduledRun).where(
                    ScheduledRun.job == "officernd-sync",
                    ScheduledRun.period != "initial",
                    ScheduledRun.state != "started",
                )
            )
        if run is not None or time.monotonic() > deadline:
            assert run is not None, "the scheduled sync did not end"
            return run
        await asyncio.sleep(0.1)


async def test_integrations_papercut_fix_and_officernd_sync_progress(
    private_cupsd: PrivateCupsd,
    short_tmp: Path,
    driver: WebDriver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with (
        PaperCutSimulator(short_tmp / "pc.db", token="pc-token", hang_seconds=1) as pc_sim,
        OfficeRnDSimulator(hang_seconds=1) as ornd_sim,
    ):
        pc_sim.add_printer("srv", "lobby", cost_mono=0)  # no cost: charges nobody
        ornd_sim.seed_members(6, 2, 2, seed=3)
        extra = {
            # No directory program on this simulator: the sync creates internal users.
            "papercut": {
                "url": pc_sim.url,
                "token": "pc-token",
                "db_url": pc_sim.db_url,
                "provisioning": "internal",
            },
            "officernd": {
                "api_url": ornd_sim.api_url,
                "token_url": ornd_sim.token_url,
                "org": ornd_sim.org,
                "client_id": ornd_sim.client_id,
                "client_secret": ornd_sim.client_secret,
            },
        }
        async with ServiceStack(private_cupsd, short_tmp / "svc-int", extra=extra) as svc:
            await svc.add_users("erin")
            await set_password(svc, "erin", "admin")
            first = await wait_sync_run(svc)  # the scheduler's, at start-up
            assert first.state == "done", first.summary
            browser = Browser(driver, svc.base_url, screenshots(tmp_path_factory))
            await browser.sign_in("erin")

            # PaperCut: the costless printer, fixed with a page cost.
            await browser.get("/admin/integrations")
            row = await browser.text('#problems tr[data-kind="no-cost"]')
            assert "srv\\lobby" in row
            await browser.fill("#default-cost", "0.05")
            await browser.click("#fix")
            assert "1 fixed, 0 failed" in await browser.wait_text("#fix-report", "fixed")
            assert await browser.exists("#papercut-ok")
            assert Decimal(str(pc_sim.get_printer_cost_simple("srv", "lobby"))) == Decimal("0.05")

            # OfficeRnD: new members; Sync shows its progress to the end, no reload.
            for i in range(12):
                ornd_sim.add_member(f"New Member{i}", email=f"new{i}@example.com")
            await browser.click("#sync")
            await browser.find("#sync-progress")
            await browser.script("window.ppNoReload = 'still here'")
            await browser.find('#sync-run[data-state="done"]', timeout=60)
            assert await browser.script("return window.ppNoReload") == "still here"
            bar = await browser.find("#sync-progress")
            value = await browser._run(bar.get_attribute, "value")
            assert value == await browser._run(bar.get_attribute, "max") == "12"
            assert await browser.text("#sync-count") == "12 / 12"
            assert "created 12" in await browser.text("#sync-summary")
            assert set(pc_sim.list_user_accounts(0, 1000)) >= {
                f"new{i}@example.com" for i in range(12)
            }
            await browser.shoot("admin-integrations")
            # The last runs' summaries: this one first, then the scheduler's.
            await browser.get("/admin/integrations")
            assert "created 12" in await browser.text("#runs tbody tr:first-child")
            assert await browser.exists('#runs tbody tr[data-state="done"]:nth-child(2)')
