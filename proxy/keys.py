"""Every ``web.AppKey`` of the service, typed, in one place.

Handlers, workers and the factory import their keys from here, never from
``proxy.app``: this module imports only the leaf modules that define the
values' types, so nothing that needs a key depends on the factory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import jinja2
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.officernd.client import OfficeRnDClient
from billing.outbox import Handler
from billing.papercut.client import PaperCutClient

from .config import Config
from .metrics_registry import Metrics
from .pipeline.intake_auth import IntakeAuth
from .pipeline.leader import Instance
from .pipeline.pool import TargetPool
from .pipeline.wake import Waker
from .spool import Spool
from .web.live import LiveFeed
from .web.syncrun import SyncProgress
from .web.throttle import LoginThrottle

Sessions = async_sessionmaker[AsyncSession]


class ReaderServer(Protocol):
    """What the app keeps of the NFC reader listener (``nfc_listener.ReaderListener``).

    A protocol, not the class: the listener taps cards, so it depends on the
    release path, which needs keys; importing it here would close a cycle.
    """

    host: str
    port: int

    async def close(self) -> None: ...


@dataclass(frozen=True)
class IntakeResources:
    """What the intake sub-app shares with the main app (its only key)."""

    config: Config
    sessions: Sessions
    spool: Spool
    waker: Waker
    targets: TargetPool  # a CUPS cancel reaches the printer (intake_status)
    # Nonces and failed attempts of the TCP intake: one per intake, from the config.
    auth: IntakeAuth = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        intake = self.config.intake
        object.__setattr__(self, "auth", IntakeAuth(intake.secret, intake.max_skew_secs))


# The service (proxy/app.py)
CONFIG = web.AppKey("config", Config)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", Sessions)
# Sessions for handlers that only read (no lock at BEGIN on SQLite).
READ_SESSIONS = web.AppKey("read_sessions", Sessions)
SPOOL = web.AppKey("spool", Spool)
TARGETS = web.AppKey("targets", TargetPool)
INSTANCE = web.AppKey("instance", Instance)
WAKE = web.AppKey("wake", Waker)
METRICS = web.AppKey("metrics", Metrics)
INTAKE_RUNNER = web.AppKey("intake_runner", web.AppRunner)
READER_LISTENER = web.AppKey("reader_listener", ReaderServer)
# Nonces and failed attempts of signed HTTP taps (the reader key signs; see api/nfc.py).
TAP_AUTH = web.AppKey("tap_auth", IntakeAuth)

# The web app (proxy/web/)
WEB_TEMPLATES = web.AppKey("web_templates", jinja2.Environment)
WEB_THROTTLE = web.AppKey("web_throttle", LoginThrottle)
# Print-out changes for the pages' Server-Sent Events (proxy/web/live.py).
WEB_LIVE = web.AppKey("web_live", LiveFeed)
# The OfficeRnD sync started from the Integrations page (proxy/web/syncrun.py).
WEB_SYNC = web.AppKey("web_sync", SyncProgress)

# The intake sub-app (proxy/pipeline/intake.py)
INTAKE = web.AppKey("intake", IntakeResources)

# The workers (proxy/pipeline/)
WORKERS = web.AppKey("workers", list[asyncio.Task[None]])
# A Protocol is no concrete class: the value type is given by annotation.
HANDLERS: web.AppKey[dict[str, Handler]] = web.AppKey("outbox_handlers")
PAPERCUT_ON = web.AppKey("papercut_on", bool)
PAPERCUT = web.AppKey("papercut", PaperCutClient)
PRINTLOG = web.AppKey("papercut_printlog", AsyncEngine)
OFFICERND = web.AppKey("officernd", OfficeRnDClient)
SCHEDULER = web.AppKey("officernd_scheduler", asyncio.Task[None])
