"""The files in ``contrib/`` stay true to the code.

* ``proxyprint.toml.example`` names every configuration key with its default
  (loading it gives the default configuration) and explains each one.
* ``proxyprint.service`` runs ``proxyprint serve`` as root with the runtime
  and state directories, restarts on failure, and is a valid unit.
* ``cupsd.conf.snippet`` keeps jobs while the service is down.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, build_config

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def test_the_example_configuration_is_every_key_with_its_default() -> None:
    text = (CONTRIB / "proxyprint.toml.example").read_text()
    raw = tomllib.loads(text)
    assert build_config(raw, env={}) == Config()
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(raw.get(section.name, {})) == keys, section.name
    # Each key sits in a paragraph (lines between blank lines) with a comment.
    for paragraph in text.split("\n\n"):
        lines = paragraph.strip().splitlines()
        settings = [line for line in lines if "=" in line and not line.startswith("#")]
        if settings:
            assert any(line.startswith("#") for line in lines), paragraph


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)  # repeated keys: the last wins
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((CONTRIB / "proxyprint.service").read_text())
    return parser


def test_the_systemd_unit() -> None:
    unit = _unit()
    service: Any = unit["Service"]
    assert service["ExecStart"].endswith("/bin/proxyprint serve")
    assert service["User"] == "root"
    assert service["Restart"] == "on-failure"
    assert service["RuntimeDirectory"] == "proxyprint"  # /run/proxyprint/intake.sock
    assert service["StateDirectory"] == "proxyprint"  # /var/lib/proxyprint/proxyprint.db
    assert int(service["LimitNOFILE"]) >= 4 * (256 + 128) + 256  # as check_nofile asks
    assert "AF_UNIX" in service["RestrictAddressFamilies"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":  # systemd ships with the Debian machines we run on
            pytest.fail("CI=true and systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed")
    text = (CONTRIB / "proxyprint.service").read_text()
    unit = tmp_path / "proxyprint.service"
    # The real ExecStart exists only once installed; verify checks that it does.
    unit.write_text(text.replace("/opt/proxyprint/.venv/bin/proxyprint serve", "/bin/true"))
    out = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_the_cupsd_snippet() -> None:
    lines = (CONTRIB / "cupsd.conf.snippet").read_text().splitlines()
    directives = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    assert directives == [["JobRetryLimit", "0"], ["JobRetryInterval", "30"]]
