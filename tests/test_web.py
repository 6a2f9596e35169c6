"""The web app through the real app factory (aiohttp_client): sign-in, sessions,
CSRF, throttling, cookie flags, roles, and the pages' data. The browser tests
(tests/test_web_browser.py) drive the same pages in headless Chromium."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import charging, events, ledger, rights
from billing.accounts import find_account
from billing.enums import AccountType, PrinterMode, PrintStatus
from billing.models import Delegation, LedgerEntry, User, WebSession
from proxy.app import create_app
from proxy.config import build_config
from proxy.tokens import hash_token
from proxy.web import passwords, sessions
from proxy.web.render import CSP
from proxy.web.sessions import COOKIE
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def make_app(db_url: str, tmp_path: Path, **web_config: object) -> web.Application:
    config = build_config({"web": web_config} if web_config else {})
    config = config.replace("database", url=db_url).replace("spool", dir=str(tmp_path / "spool"))
    return create_app(config, workers=False, intake=False)


async def add_user(sessions: Sessions, name: str, role: str = "user") -> None:
    hashed = passwords.hash_password(PASSWORD)
    async with sessions() as s, s.begin():
        await f.user(s, name)
        await s.execute(
            update(User).where(User.name == name).values(password_hash=hashed, web_role=role)
        )


def csrf_of(page: str) -> str:
    found = CSRF_RE.search(page)
    assert found is not None, page
    return found.group(1)


async def sign_in(client: Client, name: str, password: str = PASSWORD) -> web.Response | None:
    async with client.get("/") as resp:
        assert resp.status == 200
        token = csrf_of(await resp.text())
    async with client.post(
        "/login",
        data={"csrf": token, "user": name, "password": password},
        allow_redirects=False,
    ) as resp:
        return resp  # type: ignore[return-value]


async def page(client: Client, path: str, expect: int = 200) -> str:
    async with client.get(path, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == expect, (path, resp.status, text[:500])
        return text


async def sse_events(resp: ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a text/event-stream response, as they arrive."""
    name, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")


async def sse_until_ready(resp: ClientResponse) -> list[dict[str, Any]]:
    """The stream's first messages: the current status of the asked ids, up to ``ready``."""
    found = []
    async with asyncio.timeout(10):
        async for name, data in sse_events(resp):
            if name == "ready":
                return found
            found.append(data)
    raise AssertionError(f"the stream ended before 'ready': {found}")


async def next_status(resp: ClientResponse) -> dict[str, Any]:
    """The next status message pushed on the stream (keep-alives skipped)."""
    async with asyncio.timeout(10):
        async for name, data in sse_events(resp):
            assert name == "status", (name, data)
            return data
    raise AssertionError("the stream ended")


@pytest.fixture
async def web_client(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path
) -> Callable[..., Awaitable[Client]]:
    async def make(**web_config: object) -> Client:
        return await aiohttp_client(make_app(db_url, tmp_path, **web_config))

    return make


async def test_passwords_are_scrypt_salted_and_verified() -> None:
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    assert first.startswith("scrypt$14$8$1$") and first != second
    assert passwords.verify_password(PASSWORD, first)
    assert not passwords.verify_password(PASSWORD + "x", first)
    assert not passwords.verify_password(PASSWORD, None)
    assert not passwords.verify_password(PASSWORD, "plain$text")
    assert passwords.acceptable("short") is not None
    assert passwords.acceptable(PASSWORD) is None


async def test_sign_in_sets_a_server_side_session_cookie(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    async with client.get("/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert resp.headers["X-Frame-Options"] == "DENY"
        login_cookie = resp.headers["Set-Cookie"]
        assert "pp_login=" in login_cookie and "HttpOnly" in login_cookie
        assert "<script>" not in (await resp.text())  # no inline script
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303 and resp.headers["Location"] == "/jobs"
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secret = cookie.split(";")[0].split("=", 1)[1]
    async with sessionmaker() as s:
        row = await s.scalar(select(WebSession).where(WebSession.token_hash == hash_token(secret)))
    assert row is not None and row.revoked_at is None  # stored hashed, server-side
    text = await page(client, "/jobs")
    assert "alice" in text and "My jobs" in text
    await page(client, "/", expect=303)  # signed in: home is My jobs


async def test_secure_cookie_behind_tls(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    async with client.get("/", headers={"X-Forwarded-Proto": "https"}) as resp:
        token = csrf_of(await resp.text())
        assert "Secure" in resp.headers["Set-Cookie"]
        login = resp.cookies["pp_login"].value
    async with client.post(
        "/login",
        data={"csrf": token, "user": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
        cookies={"pp_login": login},  # a Secure cookie: the client keeps it for https
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}="))
        assert "Secure" in cookie and "HttpOnly" in cookie


async def test_posts_without_the_csrf_token_are_refused(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    # The sign-in form's own token: without it, a correct password still gets 403.
    async with client.post(
        "/login", data={"user": "alice", "password": PASSWORD}, allow_redirects=False
    ) as resp:
        assert resp.status == 403
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    text = await page(client, "/jobs")
    token = csrf_of(text)
    for path in ("/logout", "/jobs/1/cancel", "/jobs/1/release"):
        async with client.post(path, data={}, allow_redirects=False) as resp:
            assert resp.status == 403, path
            assert "CSRF" in await resp.text()
        async with client.post(path, data={"csrf": "x" + token}, allow_redirects=False) as resp:
            assert resp.status == 403, path
    await page(client, "/jobs")  # still signed in: nothing of those went through
    async with client.post("/logout", data={"csrf": token}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_sign_out_ends_the_session_for_its_cookie(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    token = csrf_of(await page(client, "/jobs"))
    secret = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    async with client.post("/logout", data={"csrf": token}, allow_redirects=False) as resp:
        assert resp.status == 303
    # The old cookie, sent again (as a stolen copy would be), opens nothing.
    async with client.get("/jobs", cookies={COOKIE: secret}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"
    async with sessionmaker() as s:
        row = await s.scalar(select(WebSession).where(WebSession.token_hash == hash_token(secret)))
    assert row is not None and row.revoked_at is not None


async def test_a_disabled_users_session_ends_at_once(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    await page(client, "/balance")
    async with sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.name == "alice").values(active=False))
    await page(client, "/balance", expect=303)
    client.session.cookie_jar.clear()
    resp = await sign_in(client, "alice")  # and cannot sign in again
    assert resp is not None and resp.status == 401


async def test_sign_in_is_throttled_per_user_and_per_address(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client(login_attempts=3, login_window_secs=600)
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    for _ in range(3):
        resp = await sign_in(client, "alice", "wrong password")
        assert resp is not None and resp.status == 401
    resp = await sign_in(client, "alice")  # the right password, too late
    assert resp is not None and resp.status == 429
    assert 0 < int(resp.headers["Retry-After"]) <= 601
    # The address has had 3 failures as well: another name from it waits too.
    resp = await sign_in(client, "bob")
    assert resp is not None and resp.status == 429


async def test_throttle_counts_users_and_addresses_apart() -> None:
    from proxy.web.throttle import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(2, 60, clock=lambda: now[0])
    throttle.failed("alice", "10.0.0.1")
    throttle.failed("alice", "10.0.0.2")
    assert throttle.retry_after("alice", "10.0.0.3") == 60  # the user's count
    assert throttle.retry_after("bob", "10.0.0.3") is None
    throttle.failed("carol", "10.0.0.1")
    assert throttle.retry_after("dave", "10.0.0.1") == 60  # the address's count
    now[0] = 61
    assert throttle.retry_after("alice", "10.0.0.1") is None  # the window has passed
    throttle.failed("erin", "10.0.0.9")
    throttle.succeeded("erin")
    throttle.failed("erin", "10.0.0.8")
    assert throttle.retry_after("erin", "10.0.0.7") is None


async def test_pages_follow_the_api_roles(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        bob_acct = await find_account(s, AccountType.USER, "bob")
        assert bob_acct is not None
        bobs = await f.print_out(s, printer, "bob", charged_to=[(bob_acct, 1)], title="bob's")
        await f.finish(s, bobs, PrintStatus.HELD, reason="hold")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    for path in ("/admin/documents", "/admin/accounts", "/tickets"):
        text = await page(client, path, expect=403)
        assert "Not allowed" in text
    await page(client, f"/documents/{bobs.id}", expect=404)
    assert "bob&#39;s" not in await page(client, "/jobs")
    token = csrf_of(await page(client, "/jobs"))
    async with client.post(
        f"/jobs/{bobs.id}/cancel", data={"csrf": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 404
    async with client.get(f"/jobs/events?ids={bobs.id}") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await sse_until_ready(resp) == []  # bob's job is not hers to follow
    # The JSON API is untouched: still JSON errors there.
    async with client.get("/api/v1/printouts") as resp:
        assert resp.status == 401 and resp.content_type == "application/json"
    async with client.get("/nowhere") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"


async def test_titles_and_names_render_as_text(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        acct = await find_account(s, AccountType.USER, "alice")
        assert acct is not None
        po = await f.print_out(
            s, printer, "alice", charged_to=[(acct, 1)], title="<script>alert(1)</script>"
        )
        await f.finish(s, po, PrintStatus.HELD, reason="hold")
    resp = await sign_in(client, "alice")
    assert resp is not None
    text = await page(client, "/jobs")
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


async def test_reverse_by_an_accounts_editor_compensates_the_balance(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "erin", role="accounts-editor")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s)
        acct = await find_account(s, AccountType.USER, "alice")
        assert acct is not None
        po = await f.print_out(s, printer, "alice", charged_to=[(acct, 1)], title="charged.pdf")
        await f.charge(s, po, "1.20")
    resp = await sign_in(client, "alice")
    assert resp is not None
    assert "-1.20 EUR" in await page(client, "/balance")
    doc = await page(client, f"/documents/{po.id}")
    assert "Transactions Summary" in doc and "charged.pdf" in doc
    assert 'id="reverse"' not in doc  # a user has no Reverse
    token = csrf_of(doc)
    async with client.post(
        f"/documents/{po.id}/reverse", data={"csrf": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 403

    client.session.cookie_jar.clear()
    resp = await sign_in(client, "erin")
    assert resp is not None and resp.status == 303
    log = await page(client, "/admin/documents")
    assert "charged.pdf" in log and "1.20 EUR" in log
    async with client.get("/admin/documents.csv?user=alice") as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        csv_text = await resp.text()
    assert "charged.pdf" in csv_text and "alice:user:1:1.20" in csv_text
    doc = await page(client, f"/documents/{po.id}")
    assert 'id="reverse"' in doc and 'name="reason"' in doc
    # A reversal takes a reason: without one, refused and nothing changed.
    async with client.post(
        f"/documents/{po.id}/reverse", data={"csrf": csrf_of(doc)}, allow_redirects=False
    ) as resp:
        assert resp.status == 400 and "reason" in await resp.text()
    async with sessionmaker() as s:
        assert await ledger.balance(s, acct.id) == Decimal("-1.20")
    async with client.post(
        f"/documents/{po.id}/reverse",
        data={"csrf": csrf_of(doc), "reason": "jammed after the charge"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == f"/documents/{po.id}?reversed=1"
    accounts = await page(client, "/admin/accounts?type=user")
    assert re.search(r'data-account="alice">.*?0\.00 EUR', accounts, re.S)
    async with sessionmaker() as s:
        assert await ledger.balance(s, acct.id) == Decimal("0.00")
        comments = (
            await s.scalars(select(LedgerEntry.comment).where(LedgerEntry.amount > Decimal(0)))
        ).all()
    assert any("jammed after the charge" in (c or "") for c in comments), comments


async def test_reverse_one_share_from_the_document_page(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    await add_user(sessionmaker, "erin", role="accounts-editor")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s)
        alice = await find_account(s, AccountType.USER, "alice")
        bob = await find_account(s, AccountType.USER, "bob")
        assert alice is not None and bob is not None
        po = await f.print_out(s, printer, "alice", charged_to=[(alice, 1), (bob, 1)])
        await f.charge(s, po, "1.00")
        bob_txn = next(
            t for t in await charging.transactions_of(s, po.id) if t.account_id == bob.id
        )
    await sign_in(client, "erin")
    doc = await page(client, f"/documents/{po.id}")
    assert f'name="transaction" value="{bob_txn.id}"' in doc
    async with client.post(
        f"/documents/{po.id}/reverse",
        data={"csrf": csrf_of(doc), "reason": "bob was not there", "transaction": str(bob_txn.id)},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
    async with sessionmaker() as s:
        assert await ledger.balance(s, bob.id) == Decimal("0.00")
        assert await ledger.balance(s, alice.id) == Decimal("-0.50")
    doc = await page(client, f"/documents/{po.id}")
    # Alice's share is still offered; bob's is given back already.
    assert 'id="reverse"' in doc and f'value="{bob_txn.id}"' not in doc


async def test_a_held_job_is_released_only_to_a_printer_its_reader_serves(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    from proxy import nfc_admin

    client = await web_client()
    await add_user(sessionmaker, "alice")
    async with sessionmaker() as s, s.begin():
        hold = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-hold-2", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-far", mode=PrinterMode.HOLD)
        await nfc_admin.add_reader(s, "lobby", ["pp-hold", "pp-hold-2"])
        acct = await find_account(s, AccountType.USER, "alice")
        assert acct is not None
        po = await f.print_out(s, hold, "alice", charged_to=[(acct, 1)], title="held.pdf")
        await f.finish(s, po, PrintStatus.HELD, reason="hold")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    text = await page(client, "/jobs")
    choices = re.findall(r'<option value="([^"]+)">', text)
    assert choices == ["pp-hold", "pp-hold-2"]  # its own first; pp-far has no common reader
    token = csrf_of(text)
    async with client.post(
        f"/jobs/{po.id}/release",
        data={"csrf": token, "printer": "pp-far"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
    async with client.post(
        f"/jobs/{po.id}/release",
        data={"csrf": token, "printer": "pp-hold-2"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
    async with sessionmaker() as s:
        released = await s.get(type(po), po.id)
    assert released is not None and released.status == PrintStatus.PENDING
    assert released.target == "ipp://127.0.0.1:8631/ipp/print"
    # Now in flight: the pages' script follows it through /jobs/events.
    async with client.get(f"/jobs/events?ids={po.id},x,0") as resp:
        assert await sse_until_ready(resp) == [
            {"id": po.id, "status": "pending", "final": False, "reason": "web-release"}
        ]
    assert f'data-live-job="{po.id}"' in await page(client, "/jobs")
    async with client.post(
        f"/jobs/{po.id}/release", data={"csrf": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 409  # not held any more
        assert "not held" in await resp.text()


async def test_history_shows_what_i_printed_and_what_i_pay_for(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s)
        alice = await find_account(s, AccountType.USER, "alice")
        bob = await find_account(s, AccountType.USER, "bob")
        assert alice is not None and bob is not None
        mine = await f.print_out(s, printer, "alice", charged_to=[(alice, 1)], title="mine.pdf")
        await f.charge(s, mine, "0.30")
        # bob printed it and alice pays two thirds.
        paid = await f.print_out(
            s, printer, "bob", charged_to=[(alice, 2), (bob, 1)], title="bobs-for-alice.pdf"
        )
        await f.charge(s, paid, "0.90")
    resp = await sign_in(client, "alice")
    assert resp is not None
    printed = await page(client, "/history")
    assert "mine.pdf" in printed and "bobs-for-alice.pdf" not in printed
    paying = await page(client, "/history?view=paid")
    assert "mine.pdf" in paying and "bobs-for-alice.pdf" in paying
    assert "my share 0.60 EUR" in paying
    # A payer may open the document; its summary shows every account's share.
    doc = await page(client, f"/documents/{paid.id}")
    assert re.search(r'data-account="alice">.*?0\.60 EUR', doc, re.S)
    assert re.search(r'data-account="bob">.*?0\.30 EUR', doc, re.S)
    await page(client, "/history?view=nope", expect=404)
    await page(client, "/history?cursor=bogus", expect=400)


def test_user_passwd_sets_a_password_from_stdin_and_a_role(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env["PROXYPRINT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env["PROXYPRINT_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxy.cli", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("db", "upgrade").returncode == 0
    assert run("user", "add", "alice").returncode == 0
    out = run("user", "passwd", "alice", "--role", "accounts-editor", stdin=PASSWORD + "\n")
    assert out.returncode == 0 and "password set" in out.stdout, out.stderr
    for args, stdin, needle in (
        (("user", "passwd", "alice"), "short\n", "at least 8"),
        (("user", "passwd", "nobody"), PASSWORD + "\n", "unknown user"),
        (("user", "passwd", "alice", "--role", "root"), PASSWORD + "\n", "unknown role"),
        (("user", "passwd", "alice", "--role", "reader"), PASSWORD + "\n", "card readers"),
    ):
        out = run(*args, stdin=stdin)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)

    import asyncio

    from billing.db import make_engine, make_sessionmaker

    async def stored() -> tuple[str | None, str]:
        engine = make_engine(env["PROXYPRINT_DATABASE_URL"])
        try:
            async with make_sessionmaker(engine)() as s:
                user = await s.scalar(select(User).where(User.name == "alice"))
                assert user is not None
                return user.password_hash, user.web_role
        finally:
            await engine.dispose()

    hashed, role = asyncio.run(stored())
    assert role == "accounts-editor" and passwords.verify_password(PASSWORD, hashed)


async def test_an_admin_sets_roles_passwords_and_disables_users(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path, sessionmaker: Sessions
) -> None:
    # Two instances on one database: sessions and their ends are shared.
    admin = await aiohttp_client(make_app(db_url, tmp_path))
    bobs = await aiohttp_client(make_app(db_url, tmp_path))
    await add_user(sessionmaker, "erin", role="admin")
    await add_user(sessionmaker, "bob")
    async with sessionmaker() as s:
        bob = await s.scalar(select(User).where(User.name == "bob"))
        erin = await s.scalar(select(User).where(User.name == "erin"))
    assert bob is not None and erin is not None
    resp = await sign_in(bobs, "bob")
    assert resp is not None and resp.status == 303
    await page(bobs, "/admin/users", expect=403)

    resp = await sign_in(admin, "erin")
    assert resp is not None and resp.status == 303
    listing = await page(admin, "/admin/users")
    assert 'data-user="bob"' in listing
    token = csrf_of(listing)

    async def edit(user_id: int, **fields: str) -> tuple[int, str]:
        async with admin.post(
            f"/admin/users/{user_id}", data={"csrf": token, **fields}, allow_redirects=False
        ) as resp:
            return resp.status, resp.headers.get("Location", "") or await resp.text()

    assert (await edit(bob.id, role="accounts-editor", active="on"))[0] == 303
    await page(bobs, "/admin/accounts")  # bob's live session has the new role at once
    assert (await edit(bob.id, role="root", active="on"))[0] == 400
    assert (await edit(bob.id, role="user", active="on", password="short"))[0] == 400
    assert (await edit(erin.id, role="admin"))[0] == 400  # not herself
    status, location = await edit(bob.id, role="user", active="on", password="new password 2")
    assert status == 303 and location == "/admin/users?done=changed-bob"
    await page(bobs, "/jobs", expect=303)  # a new password ends bob's sessions
    resp = await sign_in(bobs, "bob", "new password 2")
    assert resp is not None and resp.status == 303
    await page(bobs, "/jobs")
    assert (await edit(bob.id, role="user"))[0] == 303  # "active" unticked: disabled
    await page(bobs, "/jobs", expect=303)
    async with sessionmaker() as s:
        rows = (
            await s.scalars(
                select(WebSession).where(
                    WebSession.user_id == bob.id, WebSession.revoked_at.is_(None)
                )
            )
        ).all()
        assert rows == []
        from billing.models import Event

        messages = [
            e.message
            for e in await s.scalars(
                select(Event).where(Event.subject_type == "user").order_by(Event.id)
            )
        ]
    assert messages[0] == "web role user -> accounts-editor"
    assert "disabled" in messages[-1]


async def test_an_accounts_editor_reads_any_accounts_ledger(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "erin", role="accounts-editor")
    async with sessionmaker() as s, s.begin():
        gala = await f.shared(s, "Events/Gala")
        await f.topup(s, gala, "5.00", "test:gala")
    resp = await sign_in(client, "erin")
    assert resp is not None
    assert f'href="/admin/accounts/{gala.id}"' in await page(client, "/admin/accounts")
    ledger_page = await page(client, f"/admin/accounts/{gala.id}")
    assert "Balance of Events/Gala" in ledger_page and 'id="balance">5.00 EUR' in ledger_page
    await page(client, "/admin/accounts/999999", expect=404)


async def test_signing_in_again_ends_the_previous_session(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    async with client.get("/") as resp:  # a sign-in form left open in another tab
        token = csrf_of(await resp.text())
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    first = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    async with client.post(
        "/login",
        data={"csrf": token, "user": "alice", "password": PASSWORD},
        cookies={"pp_login": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    second = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    assert first != second
    await page(client, "/jobs")
    async with sessionmaker() as s:
        rows = {
            ws.token_hash: ws.revoked_at
            for ws in await s.scalars(select(WebSession).order_by(WebSession.id))
        }
    assert rows[hash_token(first)] is not None and rows[hash_token(second)] is None


async def test_live_status_is_pushed_to_its_owner_and_to_staff_only(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client(poll_secs=0.05)
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    await add_user(sessionmaker, "erin", role="admin")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s, "pp-live")
        accounts = {n: await find_account(s, AccountType.USER, n) for n in ("alice", "bob")}
        jobs = {
            n: await f.print_out(s, printer, n, charged_to=[(a, 1)], title=f"{n}.pdf")
            for n, a in accounts.items()
            if a is not None
        }
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    async with client.get(f"/jobs/events?ids={jobs['alice'].id}") as alice_stream:
        assert alice_stream.headers["Content-Security-Policy"] == CSP
        assert await sse_until_ready(alice_stream) == [
            {"id": jobs["alice"].id, "status": "pending", "final": False, "reason": None}
        ]
        # bob's job changes first, then hers: only hers reaches her stream.
        async with sessionmaker() as s, s.begin():
            await f.finish(s, jobs["bob"], PrintStatus.PROCESSING, reason="sent")
        async with sessionmaker() as s, s.begin():
            await f.finish(s, jobs["alice"], PrintStatus.PROCESSING, reason="sent")
        assert await next_status(alice_stream) == {
            "id": jobs["alice"].id,
            "status": "processing",
            "final": False,
            "reason": "sent",
        }
        async with sessionmaker() as s, s.begin():
            await f.finish(s, jobs["alice"], PrintStatus.COMPLETED, reason="printed")
        assert await next_status(alice_stream) == {
            "id": jobs["alice"].id,
            "status": "completed",
            "final": True,
            "reason": "printed",
        }
    # Staff follow everyone's print-outs (the ticket queue, the document log).
    client.session.cookie_jar.clear()
    resp = await sign_in(client, "erin")
    assert resp is not None and resp.status == 303
    async with client.get("/jobs/events") as erin_stream:
        assert await sse_until_ready(erin_stream) == []
        async with sessionmaker() as s, s.begin():
            await f.finish(s, jobs["bob"], PrintStatus.COMPLETED, reason="printed")
        # (A new feed may first re-send the latest changes: their current status.)
        seen = []
        while (pushed := await next_status(erin_stream)) != {
            "id": jobs["bob"].id,
            "status": "completed",
            "final": True,
            "reason": "printed",
        }:
            seen.append(pushed["id"])
        assert set(seen) <= {jobs["alice"].id, jobs["bob"].id}
    # Signed out, the script's stream is refused (401: EventSource stops retrying).
    client.session.cookie_jar.clear()
    async with client.get("/jobs/events") as resp:
        assert resp.status == 401


async def new_print_out(s: AsyncSession, printer: Any, delegate: str, title: str) -> Any:
    """A print-out with its first event (no from-status), as intake writes it."""
    po = await f.print_out(s, printer, delegate, title=title)
    events.record(
        s, subject_type="print_out", subject_id=po.id, actor=delegate, to_status="pending"
    )
    return po


async def next_message(resp: ClientResponse) -> tuple[str, dict[str, Any]]:
    """The next (event, data) pushed on the stream (keep-alives skipped)."""
    async with asyncio.timeout(10):
        async for name, data in sse_events(resp):
            return name, data
    raise AssertionError("the stream ended")


async def test_new_print_outs_are_announced_only_to_the_pages_that_list_them(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client(poll_secs=0.05)
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    await add_user(sessionmaker, "otto", role="ticket-operator")
    async with sessionmaker() as s, s.begin():
        printer = await f.printer(s, "pp-new")
        tickets = await f.printer(s, "pp-new-tickets", mode=PrinterMode.TICKET)
        early = await new_print_out(s, printer, "alice", "before-the-stream.pdf")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    # since=: a job of hers made after the page was drawn is announced first.
    async with client.get(f"/jobs/events?new=mine&since={early.id - 1}") as stream:
        assert await sse_until_ready(stream) == [
            {"id": early.id, "status": "pending", "final": False, "reason": None}
        ]
    async with client.get(f"/jobs/events?new=mine&since={early.id}") as stream:
        assert await sse_until_ready(stream) == []
        # bob's new job first, then hers: only hers is announced on her stream.
        async with sessionmaker() as s, s.begin():
            bobs = await new_print_out(s, printer, "bob", "bobs.pdf")
        async with sessionmaker() as s, s.begin():
            hers = await new_print_out(s, printer, "alice", "hers.pdf")
        name, data = await next_message(stream)
        while data.get("id") == early.id:  # a new feed may re-send the latest changes
            name, data = await next_message(stream)
        assert (name, data["id"]) == ("new", hers.id), (name, data, bobs.id)
        # Then her job's changes as statuses (announced once).
        async with sessionmaker() as s, s.begin():
            await f.finish(s, hers, PrintStatus.PROCESSING, reason="sent")
        assert await next_message(stream) == (
            "status",
            {"id": hers.id, "status": "processing", "final": False, "reason": "sent"},
        )
    # The ticket queue is for operators only.
    async with client.get("/jobs/events?new=tickets") as refused:
        assert refused.status == 403
    async with client.get("/jobs/events?new=everything") as refused:
        assert refused.status == 400
    client.session.cookie_jar.clear()
    resp = await sign_in(client, "otto")
    assert resp is not None and resp.status == 303
    async with client.get(f"/jobs/events?new=tickets&since={hers.id}") as stream:
        assert await sse_until_ready(stream) == []
        async with sessionmaker() as s, s.begin():
            plain = await new_print_out(s, printer, "bob", "not-a-ticket.pdf")
            await f.finish(s, plain, PrintStatus.PROCESSING)
        async with sessionmaker() as s, s.begin():
            ticket = await new_print_out(s, tickets, "bob", "a-ticket.pdf")
        # Staff see every status; only the ticket is announced as new.
        announced = []
        while (message := await next_message(stream))[1]["id"] != ticket.id:
            announced.append(message[0])
        assert message[0] == "new" and "new" not in announced


async def test_a_stream_ends_at_once_when_its_session_does(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client(poll_secs=0.05)
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "erin", role="admin")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    async with client.get("/jobs/events?new=mine") as stream:
        assert await sse_until_ready(stream) == []  # the stream is live
        # Disabled (as the Users page does it): her sessions end, so does the stream.
        async with sessionmaker() as s, s.begin():
            alice = await s.scalar(select(User).where(User.name == "alice"))
            assert alice is not None
            alice.active = False
            assert await sessions.revoke_user(s, alice.id) == 1
        assert await next_message(stream) == ("end", {"reason": "signed-out"})
        async with asyncio.timeout(10):
            assert await stream.content.read() == b""  # closed by the service
    # An admin's role taken away: the stream (which showed everyone's jobs) ends too.
    client.session.cookie_jar.clear()
    resp = await sign_in(client, "erin")
    assert resp is not None and resp.status == 303
    async with client.get("/jobs/events") as stream:
        assert await sse_until_ready(stream) == []
        async with sessionmaker() as s, s.begin():
            await s.execute(update(User).where(User.name == "erin").values(web_role="user"))
        name, data = await next_message(stream)
        while name == "status":  # a new feed may re-send the latest changes
            name, data = await next_message(stream)
        assert (name, data) == ("end", {"reason": "signed-out"})


async def test_the_delegate_form_stores_what_the_api_would_and_refuses_with_its_reason(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "bob")
    async with sessionmaker() as s, s.begin():
        await f.printer(s, "pp-deleg")
        team = await f.shared(s, "Team")
        secret = await f.shared(s, "Board")
        await rights.set_access(s, secret, ["bob"], actor="test")
        await rights.set_user_delegate(s, "alice", True, actor="test")
        assert team.id
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    text = await page(client, "/delegate")
    assert '<option value="pp-deleg"' in text
    assert '<option value="Team">' in text and '<option value="Board">' not in text
    token = csrf_of(text)
    # Board is restricted to bob: refused with the API's reason, nothing stored.
    async with client.post(
        "/delegate",
        data={"csrf": token, "printer": "pp-deleg", "shared-accounts": "Board", "copies": "1"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
        refused = await resp.text()
    assert "alice is not on the access list of shared account Board" in refused
    assert 'value="Board"' in refused  # the form keeps what she typed
    # bob (two copies) and Team (one): stored as the API stores it.
    async with client.post(
        "/delegate",
        data={
            "csrf": token,
            "printer": "pp-deleg",
            "delegators": "bob",
            "shared-accounts": "Team:1",
            "copies": "2",
            "minutes": "15",
        },
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"].startswith("/delegate?done=")
    async with sessionmaker() as s:
        rows = (await s.scalars(select(Delegation))).all()
    assert [(r.delegate, r.options) for r in rows] == [
        ("alice", {"delegators": "bob:2", "shared-accounts": "Team"})
    ]
    assert rows[0].valid_until - rows[0].valid_from == dt.timedelta(minutes=15)
    assert f'id="delegation-{rows[0].id}"' in await page(client, "/delegate")
    # Without the delegate right, the same form is refused with the reason.
    async with sessionmaker() as s, s.begin():
        await rights.set_user_delegate(s, "alice", False, actor="test")
    async with client.post(
        "/delegate",
        data={"csrf": token, "printer": "pp-deleg", "delegators": "bob"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
        assert "alice lacks the delegate right" in await resp.text()
    async with client.post(
        "/delegate", data={"printer": "pp-deleg", "delegators": "bob"}, allow_redirects=False
    ) as resp:
        assert resp.status == 403  # no CSRF token
    async with sessionmaker() as s:
        assert len((await s.scalars(select(Delegation))).all()) == 1


async def test_integrations_are_for_admins_and_say_what_is_not_set_up(
    web_client: Callable[..., Awaitable[Client]], sessionmaker: Sessions
) -> None:
    client = await web_client()
    await add_user(sessionmaker, "alice")
    await add_user(sessionmaker, "erin", role="admin")
    resp = await sign_in(client, "alice")
    assert resp is not None and resp.status == 303
    for path in ("/admin/integrations", "/admin/integrations/sync/status"):
        assert "Not allowed" in await page(client, path, expect=403)
    client.session.cookie_jar.clear()
    resp = await sign_in(client, "erin")
    assert resp is not None and resp.status == 303
    text = await page(client, "/admin/integrations")
    assert 'id="papercut-note">PaperCut is not set up' in text
    assert 'id="officernd-note">OfficeRnD is not set up' in text
    async with client.get("/admin/integrations/sync/status") as resp:
        assert (await resp.json())["state"] == "idle"
    async with client.post(
        "/admin/integrations/sync", data={"csrf": csrf_of(text)}, allow_redirects=False
    ) as resp:
        assert resp.status == 409 and "OfficeRnD is not set up" in await resp.text()
