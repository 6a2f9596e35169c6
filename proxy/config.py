"""Configuration: TOML file + ``PROXYPRINT_<SECTION>_<KEY>`` environment overrides.

The result is a tree of frozen dataclasses passed into the app factory and the
CLI; nothing reads the environment after ``load_config`` returns.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.enums import Provisioning
from billing.exceptions import CurrencyError, InvalidInput
from billing.money import Currency, parse_amount
from billing.officernd.models import STATUS_FIELDS, STATUS_VALUES

from .exceptions import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/proxyprint/proxyprint.toml")
ENV_PREFIX = "PROXYPRINT_"
# Environment variables with our prefix that are not configuration keys.
_ENV_NOT_KEYS = frozenset({"PROXYPRINT_CONFIG", "PROXYPRINT_INTAKE_SECRET_FILE"})


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:////var/lib/proxyprint/proxyprint.db"
    echo: bool = False


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = "/var/spool/proxyprint"
    max_job_bytes: int = 4 * 1024**3
    # A job its printer rejected keeps its document this long, so that it can be
    # redirected to another printer (POST /jobs/{id}/redirect); 0: removed at once.
    keep_rejected_hours: float = 24.0


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:6310"


@dataclass(frozen=True)
class IntakeConfig:
    socket: str = "/run/proxyprint/intake.sock"
    tcp: str = ""
    # The TCP intake's HMAC key (at least 32 bytes); see proxy.pipeline.intake_auth.
    secret: str = ""
    # A signed request whose time is further than this from ours is refused.
    max_skew_secs: float = 300.0
    # TLS on the TCP intake (PEM files); with tls_client_ca, clients need a certificate.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Direct jobs: the backend stays with the CUPS job until its print-out ends.
    follow: bool = True


@dataclass(frozen=True)
class CupsConfig:
    server: str = "/run/cups/cups.sock"
    serverbin: str = "/usr/lib/cups"


@dataclass(frozen=True)
class CurrencyConfig:
    code: str = "EUR"
    decimals: int = 2


@dataclass(frozen=True)
class TrackerConfig:
    interval_secs: float = 2.0
    # A dispatched job its printer no longer knows (restarted, history gone) ends
    # aborted ``lost-at-target`` after this long.
    lost_after_secs: float = 300.0


@dataclass(frozen=True)
class DispatchConfig:
    # A conversion (Ghostscript, cups-filters, qpdf) that takes longer fails;
    # the job is held ``conversion-failed``, not lost.
    convert_timeout_secs: float = 600.0


@dataclass(frozen=True)
class ChargingConfig:
    # Which page count is charged when the printer reports one
    # (job-impressions-completed): "printer" (default) or "document" (ours).
    trust: str = "printer"


@dataclass(frozen=True)
class DelegationConfig:
    """Rights to charge (SPEC §3)."""

    # A job from a CUPS user name that is no known, active user: "hold" (held
    # ``user-unknown`` until an admin adds the user and rechecks it), "refuse"
    # (CUPS fails the job) or "guest:<shared account>" (charged to that account).
    unknown_user: str = "hold"
    # Which other users a delegate with the ``delegate`` right may charge:
    # "any", "same-group" (users sharing a group with her) or "none".
    users: str = "any"

    @property
    def guest_account(self) -> str | None:
        """The shared account path that unknown users print on, if any."""
        if self.unknown_user.startswith(GUEST_PREFIX):
            return self.unknown_user[len(GUEST_PREFIX) :]
        return None


GUEST_PREFIX = "guest:"
DELEGATION_USERS = ("any", "same-group", "none")


@dataclass(frozen=True)
class PaperCutConfig:
    url: str = ""
    token: str = ""
    db_url: str = ""
    account: str = ""
    # The shared account proxyprint's PaperCut-managed queues charge (SPEC §8: no
    # double charge); created by `papercut fix`, verified by `papercut check`.
    clearing_account: str = "proxyprint-clearing"
    # How the OfficeRnD sync provisions users: "user-source" (PaperCut's directory is our
    # `papercut user-source` program; the sync asks PaperCut to import them) or "internal"
    # (the sync creates PaperCut internal users). One path, chosen here.
    provisioning: str = "user-source"
    missing_after_mins: int = 60
    # PaperCut's hold/release timeout ("Delete held jobs if not released after"; 4 h in
    # commercial installs): a row still held this + missing_after_mins after dispatch is
    # read as expired; a job with no row is missing only then. 0: no hold timeout known.
    hold_timeout_mins: int = 240
    timeout_secs: float = 10.0


@dataclass(frozen=True)
class OfficeRnDConfig:
    api_url: str = ""
    token_url: str = ""
    org: str = ""
    client_id: str = ""
    client_secret: str = ""
    scope: str = "officernd.api.read officernd.api.write"
    # Member Management: who is synced into PaperCut. ``status_field`` is the
    # member field compared with ``statuses``: "status" (active, contact,
    # former) or "calculatedStatus" (the platform's: also drop-in, pending,
    # lead, not_approved).
    status_field: str = "status"
    statuses: tuple[str, ...] = ("active",)
    include_companies: tuple[str, ...] = ()  # empty: every company
    exclude_companies: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()  # empty: any plan
    sync_interval_mins: int = 60
    # "Do not manage printing fees inside OfficeRnD" = manage_fees false.
    manage_fees: bool = True
    fees_at: str = "07:30"
    timezone: str = "UTC"
    fees_plan: str = "PaperCut Fees"
    # The fees' OfficeRnD office (location) id; "" = each member's own office.
    office: str = ""
    # Balance allowance added to each synced user's PaperCut balance.
    allowance_amount: str = "0"
    allowance_period: str = "monthly"  # daily | weekly | monthly


@dataclass(frozen=True)
class NfcConfig:
    tcp_listen: str = ""
    # TLS on the reader listener (PEM files): the connection, tokens and taps encrypted.
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class LimitsConfig:
    """What one client may take of a listener (the API, each intake, the NFC one)."""

    max_connections: int = 256  # per listener; keep the sum under LimitNOFILE
    head_timeout_secs: float = 10.0  # a request head (or a reader's hello) must arrive by then
    body_timeout_secs: float = 60.0  # the longest wait for the next body bytes


@dataclass(frozen=True)
class InstanceConfig:
    # This instance's name among several sharing one PostgreSQL database; its
    # claims carry it. Default: HOSTNAME:<intake socket>.
    name: str = ""


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # text | json (one JSON object per line)
    level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR | CRITICAL


@dataclass(frozen=True)
class WebConfig:
    """The web app at ``/`` (proxy/web/): sign-in, sessions, throttling."""

    # "local" = passwords set by `proxyprint user passwd` (scrypt); "pam" = the
    # print server's own accounts through PAM. Local is tried first, then PAM;
    # either way the name must be an active proxyprint user (roles stay ours).
    auth: tuple[str, ...] = ("local",)
    # The PAM service (/etc/pam.d/<name>; without that file, PAM's "other").
    pam_service: str = "proxyprint"
    session_hours: float = 12.0  # a session ends this long after sign-in
    idle_mins: float = 120.0  # ... or after this long without a request
    # The session cookie's Secure flag: "auto" = when the request came over TLS
    # (or a proxy in front said so with X-Forwarded-Proto: https), "always", "never".
    cookie_secure: str = "auto"
    # Failed sign-ins allowed per user name and per client address in the window.
    login_attempts: int = 5
    login_window_secs: float = 300.0
    # How often the live feed (Server-Sent Events to the pages) looks for status changes.
    poll_secs: float = 1.0


WEB_AUTH = ("local", "pam")
COOKIE_SECURE = ("auto", "always", "never")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    cups: CupsConfig = field(default_factory=CupsConfig)
    currency: CurrencyConfig = field(default_factory=CurrencyConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    charging: ChargingConfig = field(default_factory=ChargingConfig)
    delegation: DelegationConfig = field(default_factory=DelegationConfig)
    papercut: PaperCutConfig = field(default_factory=PaperCutConfig)
    officernd: OfficeRnDConfig = field(default_factory=OfficeRnDConfig)
    nfc: NfcConfig = field(default_factory=NfcConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    web: WebConfig = field(default_factory=WebConfig)

    @property
    def money(self) -> Currency:
        return Currency(self.currency.code, self.currency.decimals)

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (tests, demo)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **values)})


MIN_SECRET_BYTES = 32  # an HMAC-SHA256 key: as long as the digest


def _check_intake(intake: IntakeConfig) -> None:
    if intake.tcp and len(intake.secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"intake.secret: the TCP intake needs a secret of at least {MIN_SECRET_BYTES} bytes "
            "(e.g. `openssl rand -hex 32`)"
        )
    if intake.max_skew_secs <= 0:
        raise ConfigError("intake.max_skew_secs: must be positive")
    if bool(intake.tls_cert) != bool(intake.tls_key):
        raise ConfigError("intake.tls_cert and intake.tls_key: give both or neither")
    if intake.tls_client_ca and not intake.tls_cert:
        raise ConfigError("intake.tls_client_ca needs intake.tls_cert and intake.tls_key")


def _sections() -> dict[str, type[Any]]:
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(where: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if kind == tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(i.strip() for i in items if i.strip())
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _merge(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = _sections()
    merged: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown configuration section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table")
        merged[section].update(values)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if section not in sections or key not in {
            f.name for f in dataclasses.fields(sections[section])
        }:
            raise ConfigError(f"{name}: no such configuration key")
        merged[section][key] = value
    return merged


def build_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML mapping (plus env overrides) into a Config."""
    sections = _sections()
    built: dict[str, Any] = {}
    for section, values in _merge(raw, env or {}).items():
        cls = sections[section]
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown configuration key {section}.{key}")
        kwargs = {k: _coerce(f"{section}.{k}", hints[k], v) for k, v in values.items()}
        built[section] = cls(**kwargs)
    config = Config(**built)
    try:
        _ = config.money
    except CurrencyError as exc:
        raise ConfigError(f"currency: {exc}") from exc
    if config.log.format not in LOG_FORMATS:
        raise ConfigError(f"log.format: use {' or '.join(LOG_FORMATS)}, not {config.log.format!r}")
    if config.log.level.upper() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        raise ConfigError(f"log.level: use one of {levels}, not {config.log.level!r}")
    limits = config.limits
    if limits.max_connections < 1 or limits.head_timeout_secs <= 0 or limits.body_timeout_secs <= 0:
        raise ConfigError("limits: max_connections and the timeouts must be positive")
    _check_web(config.web)
    if config.tracker.interval_secs <= 0:
        raise ConfigError("tracker.interval_secs: must be positive")
    _check_intake(config.intake)
    if bool(config.nfc.tls_cert) != bool(config.nfc.tls_key):
        raise ConfigError("nfc.tls_cert and nfc.tls_key: give both or neither")
    if config.dispatch.convert_timeout_secs <= 0:
        raise ConfigError("dispatch.convert_timeout_secs: must be positive")
    if config.charging.trust not in ("printer", "document"):
        raise ConfigError('charging.trust: must be "printer" or "document"')
    delegation = config.delegation
    if delegation.users not in DELEGATION_USERS:
        raise ConfigError(f"delegation.users: use one of {', '.join(DELEGATION_USERS)}")
    if delegation.unknown_user not in ("hold", "refuse") and not delegation.guest_account:
        raise ConfigError(
            'delegation.unknown_user: use "hold", "refuse" or "guest:<shared account>"'
        )
    if config.papercut.hold_timeout_mins < 0 or config.papercut.missing_after_mins < 0:
        raise ConfigError("papercut.hold_timeout_mins and missing_after_mins: not negative")
    if config.papercut.provisioning not in {p.value for p in Provisioning}:
        raise ConfigError('papercut.provisioning: use "user-source" or "internal"')
    if config.officernd.allowance_period not in {"daily", "weekly", "monthly"}:
        raise ConfigError("officernd.allowance_period: use daily, weekly or monthly")
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", config.officernd.fees_at):
        raise ConfigError("officernd.fees_at: use HH:MM (24 h)")
    try:
        ZoneInfo(config.officernd.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"officernd.timezone: unknown time zone {config.officernd.timezone!r}"
        ) from None
    try:
        parse_amount(config.officernd.allowance_amount, field="officernd.allowance_amount")
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from exc
    _check_statuses(config.officernd)
    return config


def _check_statuses(officernd: OfficeRnDConfig) -> None:
    """A status the chosen field never has would silently match nobody: refused."""
    status_field = officernd.status_field
    if status_field not in STATUS_FIELDS:
        raise ConfigError(
            f"officernd.status_field: use {' or '.join(STATUS_FIELDS)}, not {status_field!r}"
        )
    documented = STATUS_VALUES[status_field]
    wrong = [s for s in officernd.statuses if s.strip().casefold() not in documented]
    if wrong or not officernd.statuses:
        raise ConfigError(
            f"officernd.statuses: {status_field} is one of {', '.join(sorted(documented))};"
            f" not {', '.join(map(repr, wrong)) or 'an empty list'}"
        )


def _check_web(web: WebConfig) -> None:
    unknown = [a for a in web.auth if a not in WEB_AUTH]
    if unknown or not web.auth:
        raise ConfigError(f"web.auth: use {', '.join(WEB_AUTH)}, not {list(web.auth)!r}")
    if "pam" in web.auth and not web.pam_service.strip():
        raise ConfigError("web.pam_service: the PAM service's name is needed with auth pam")
    if web.cookie_secure not in COOKIE_SECURE:
        raise ConfigError(f"web.cookie_secure: use one of {', '.join(COOKIE_SECURE)}")
    if min(web.session_hours, web.idle_mins, web.login_window_secs, web.poll_secs) <= 0:
        raise ConfigError("web: session_hours, idle_mins, login_window_secs, poll_secs > 0")
    if web.login_attempts < 1:
        raise ConfigError("web.login_attempts: must be at least 1")


# Keys whose value is a secret: a file holding one must not be readable by others.
SECRET_KEYS = (
    ("intake", "secret"),
    ("papercut", "token"),
    ("papercut", "db_url"),
    ("officernd", "client_secret"),
    ("database", "url"),
)


def secrets_in(raw: Mapping[str, Any]) -> list[str]:
    """The secret-holding keys a parsed file sets (URLs only when they carry a password)."""
    found = []
    for section, key in SECRET_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), Mapping) else None
        if not isinstance(value, str) or not value:
            continue
        if key.endswith("url") and not re.search(r"://[^/@]*:[^/@]+@", value):
            continue  # a URL without a password is no secret
        found.append(f"{section}.{key}")
    return found


def check_private(path: Path, raw: Mapping[str, Any], *, allow_readable: bool) -> str | None:
    """Refuse (or, when allowed, warn about) a secret-holding file others can read."""
    mode = path.stat().st_mode
    held = secrets_in(raw)
    if not held or not mode & 0o044:
        return None
    who = "others" if mode & 0o004 else "its group"
    message = (
        f"{path} holds secrets ({', '.join(held)}) and is readable by {who} "
        f"(mode {mode & 0o777:04o}): chmod 0600 {path}"
    )
    if not allow_readable:
        raise ConfigError(message)
    return message


@dataclass(frozen=True)
class Loaded:
    """A config and what the loader has to tell the operator about it."""

    config: Config
    path: Path
    from_file: bool
    warning: str | None = None


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    allow_readable: bool = False,
) -> Loaded:
    """Read the TOML file (missing default file = all defaults) and apply the env."""
    env = os.environ if env is None else env
    explicit = path is not None or "PROXYPRINT_CONFIG" in env
    path = path or Path(env.get("PROXYPRINT_CONFIG", str(DEFAULT_CONFIG_PATH)))
    raw: dict[str, Any] = {}
    warning = None
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        warning = check_private(path, raw, allow_readable=allow_readable)
    elif explicit:
        raise ConfigError(f"{path}: configuration file not found")
    return Loaded(build_config(raw, env), path, from_file=path.exists(), warning=warning)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    return load(path, env).config
