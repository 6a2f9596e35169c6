"""Configuration: TOML + PROXYPRINT_* environment, one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, build_config, load_config
from proxy.exceptions import ConfigError


def test_defaults_match_the_spec() -> None:
    config = build_config({})
    assert config.database.url == "sqlite+aiosqlite:////var/lib/proxyprint/proxyprint.db"
    assert config.http.listen == "127.0.0.1:6310"
    assert config.intake.socket == "/run/proxyprint/intake.sock"
    assert config.currency.code == "EUR" and config.currency.decimals == 2
    assert config.money.decimals == 2


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "pp.toml"
    path.write_text(
        '[database]\nurl = "sqlite+aiosqlite:////tmp/x.db"\n'
        '[currency]\ncode = "JPY"\ndecimals = 0\n'
        "[officernd]\nmanage_fees = false\n"
    )
    config = load_config(path, env={"PROXYPRINT_DATABASE_URL": "postgresql+asyncpg://h/db"})
    assert config.database.url == "postgresql+asyncpg://h/db"
    assert config.currency.code == "JPY" and config.money.decimals == 0
    assert config.officernd.manage_fees is False
    env = {"PROXYPRINT_CURRENCY_DECIMALS": "3", "PROXYPRINT_OFFICERND_MANAGE_FEES": "yes"}
    config = load_config(path, env=env)
    assert config.currency.decimals == 3 and config.officernd.manage_fees is True
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"database": {"uri": "x"}}, {}, "database.uri"),
        ({"nosuch": {}}, {}, r"\[nosuch\]"),
        ({}, {"PROXYPRINT_DATABASE_URI": "x"}, "PROXYPRINT_DATABASE_URI"),
        ({}, {"PROXYPRINT_BOGUS": "x"}, "PROXYPRINT_BOGUS"),
        ({"currency": {"decimals": 9}}, {}, "currency"),
        ({"currency": {"decimals": "two"}}, {}, "currency.decimals"),
        ({"currency": {"code": "euro"}}, {}, "currency"),
        ({"officernd": {"manage_fees": "maybe"}}, {}, "officernd.manage_fees"),
        ({"officernd": {"status_field": "state"}}, {}, "officernd.status_field"),
        # a value the chosen field never has would match nobody
        ({"officernd": {"statuses": ["drop-in"]}}, {}, "officernd.statuses.*'drop-in'"),
        ({"officernd": {"statuses": []}}, {}, "officernd.statuses"),
        (
            {"officernd": {"status_field": "calculatedStatus", "statuses": ["actve"]}},
            {},
            "officernd.statuses: calculatedStatus is one of active, contact, drop-in",
        ),
        ({"database": {"url": 5}}, {}, "database.url"),
        ({"database": "x"}, {}, r"\[database\]"),
    ],
)
def test_bad_config_names_the_key(
    raw: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(raw, env)


def test_officernd_status_field_and_its_values() -> None:
    assert build_config({}).officernd.status_field == "status"
    config = build_config(
        {"officernd": {"status_field": "calculatedStatus",
                       "statuses": ["active", "drop-in", "Pending", "not_approved", "lead"]}}
    )  # fmt: skip
    assert config.officernd.status_field == "calculatedStatus"
    env = {"PROXYPRINT_OFFICERND_STATUSES": "active,contact,former"}
    assert build_config({}, env).officernd.statuses == ("active", "contact", "former")


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[database\nurl=")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad, env={})
