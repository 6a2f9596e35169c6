"""PAM sign-in (``[web] auth = ["local", "pam"]``) against the machine's real PAM stack:
a throwaway system account made with useradd/chpasswd signs in through the real app,
and only when it is also an active proxyprint user (roles stay proxyprint's)."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import User
from proxy.config import build_config
from proxy.exceptions import ConfigError
from proxy.web import passwords
from tests import factories as f
from tests.fixtures_cups import unavailable
from tests.test_web import PASSWORD, add_user, make_app, page, sign_in

Sessions = async_sessionmaker[AsyncSession]
SERVICE = build_config({}).web.pam_service


@pytest.fixture
def system_account() -> Iterator[tuple[str, str]]:
    """A system account with a password (name, password), removed afterwards."""
    if os.geteuid() != 0:
        unavailable("useradd, and pam_unix reading /etc/shadow, need root")
    name = f"pppam{secrets.token_hex(5)}"
    password = f"Pam-{secrets.token_urlsafe(12)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True
        )
        yield name, password
    finally:
        # -r: its (absent) home and mail spool too; it warns about them, hence no check.
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


async def test_a_print_server_account_signs_in_through_pam_when_proxyprint_knows_it(
    aiohttp_client: AiohttpClient,
    db_url: str,
    tmp_path: Path,
    sessionmaker: Sessions,
    system_account: tuple[str, str],
) -> None:
    name, password = system_account
    assert passwords.verify_pam(name, password, SERVICE)  # the PAM stack itself accepts it
    client = await aiohttp_client(make_app(db_url, tmp_path, auth=["local", "pam"]))

    # PAM says yes, but proxyprint has no such user: refused.
    resp = await sign_in(client, name, password)
    assert resp is not None and resp.status == 401

    async with sessionmaker() as s, s.begin():
        await f.user(s, name)  # no local password: only PAM can let her in
        await s.execute(update(User).where(User.name == name).values(web_role="accounts-editor"))
    resp = await sign_in(client, name, password)
    assert resp is not None and resp.status == 303 and resp.headers["Location"] == "/jobs"
    text = await page(client, "/admin/documents")  # proxyprint's role, not the system's
    assert name in text
    client.session.cookie_jar.clear()

    resp = await sign_in(client, name, password + "x")  # a wrong password
    assert resp is not None and resp.status == 401

    # Local is tried first and still works next to PAM.
    await add_user(sessionmaker, "alice")
    resp = await sign_in(client, "alice", PASSWORD)
    assert resp is not None and resp.status == 303
    client.session.cookie_jar.clear()

    async with sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.name == name).values(active=False))
    resp = await sign_in(client, name, password)  # disabled: refused, PAM or not
    assert resp is not None and resp.status == 401


async def test_pam_passwords_are_refused_with_local_auth_only_and_throttled_with_pam(
    aiohttp_client: AiohttpClient,
    db_url: str,
    tmp_path: Path,
    sessionmaker: Sessions,
    system_account: tuple[str, str],
) -> None:
    name, password = system_account
    await add_user(sessionmaker, name)  # known, active, with a local password too
    local_only = await aiohttp_client(make_app(db_url, tmp_path / "local"))
    resp = await sign_in(local_only, name, PASSWORD)  # the app signs her in locally ...
    assert resp is not None and resp.status == 303
    local_only.session.cookie_jar.clear()
    resp = await sign_in(local_only, name, password)  # ... but not with her PAM password
    assert resp is not None and resp.status == 401

    throttled = await aiohttp_client(
        make_app(db_url, tmp_path / "pam", auth=["local", "pam"], login_attempts=1)
    )
    resp = await sign_in(throttled, name, password + "x")
    assert resp is not None and resp.status == 401
    resp = await sign_in(throttled, name, password)  # right, but after too many failures
    assert resp is not None and resp.status == 429


def test_pam_is_a_known_auth_and_needs_its_service() -> None:
    assert build_config({"web": {"auth": ["local", "pam"]}}).web.auth == ("local", "pam")
    with pytest.raises(ConfigError, match=r"web\.pam_service"):
        build_config({"web": {"auth": ["pam"], "pam_service": " "}})
    with pytest.raises(ConfigError, match=r"web\.auth"):
        build_config({"web": {"auth": ["ldap"]}})
