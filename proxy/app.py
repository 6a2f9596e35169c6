"""The app factory: config in, aiohttp application out; resources in cleanup_ctx."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from billing.db import is_sqlite, make_engine, make_read_sessionmaker, make_sessionmaker
from billing.models import PrintIn

from .api import setup_api
from .config import Config
from .exceptions import ConfigError
from .keys import (
    CONFIG,
    ENGINE,
    INSTANCE,
    INTAKE_RUNNER,
    READ_SESSIONS,
    READER_LISTENER,
    SESSIONS,
    SPOOL,
    TAP_AUTH,
    TARGETS,
    WAKE,
    IntakeResources,
)
from .listen import GuardedRunner
from .metrics import instrument_intake, setup_metrics
from .nfc_listener import ReaderListener, parse_hostport
from .pipeline.intake import MAX_META, create_intake_app
from .pipeline.intake_auth import IntakeAuth
from .pipeline.leader import Instance
from .pipeline.pool import TargetPool
from .pipeline.wake import Waker
from .pipeline.workers import setup_workers
from .spool import Spool
from .web.setup import setup_web

log = logging.getLogger(__name__)

SHARED_SPOOL_MIN_AGE = 3600.0  # seconds


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = make_engine(config.database.url, echo=config.database.echo)
    app[ENGINE] = engine
    app[SESSIONS] = make_sessionmaker(engine)
    app[READ_SESSIONS] = make_read_sessionmaker(engine)
    yield
    await engine.dispose()


async def _spool(app: web.Application) -> AsyncIterator[None]:
    spool = app[SPOOL]
    # Instances sharing a database share the spool: another one may be writing
    # a job right now, so only leftovers an hour old are a crash's.
    min_age = 0.0 if is_sqlite(app[CONFIG].database.url) else SHARED_SPOOL_MIN_AGE
    spool.prepare(min_age)
    async with app[SESSIONS]() as session:
        referenced = set(
            await session.scalars(select(PrintIn.spool_path).where(PrintIn.spool_path.is_not(None)))
        )
    removed = spool.sweep({str(p) for p in referenced}, min_age)
    if removed:
        log.info("spool: removed %d files of ended jobs", removed)
    yield


async def _targets(app: web.Application) -> AsyncIterator[None]:
    app[TARGETS] = TargetPool(app[CONFIG])
    yield
    await app[TARGETS].close()


def _parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def server_tls(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext | None:
    """A listener's TLS from PEM files (None without a certificate: plain TCP)."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS: cannot load {cert} / {key}: {exc}") from exc
    return context


async def _intake(app: web.Application) -> AsyncIterator[None]:
    """Serve the intake on its Unix socket (and TCP with a secret, if configured)."""
    config = app[CONFIG].intake
    intake_app = create_intake_app(
        IntakeResources(app[CONFIG], app[SESSIONS], app[SPOOL], app[WAKE], app[TARGETS])
    )
    instrument_intake(intake_app, app)  # request ids, intake latency
    # The metadata header carries the job's options, which may be long.
    runner = GuardedRunner(
        intake_app,
        name="intake",
        limits=app[CONFIG].limits,
        handle_signals=False,
        access_log=None,
        max_field_size=MAX_META + 1024,
    )
    await runner.setup()
    sites: list[web.BaseSite] = []
    if config.socket:
        path = Path(config.socket)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sites.append(web.UnixSite(runner, str(path)))
    if config.tcp:
        host, port = _parse_hostport(config.tcp)
        sites.append(
            web.TCPSite(
                runner,
                host,
                port,
                ssl_context=server_tls(config.tls_cert, config.tls_key, config.tls_client_ca),
            )
        )
    for site in sites:
        await site.start()
    if config.socket:
        # Only root (cupsd runs our backend as root) may hand us jobs.
        os.chmod(config.socket, 0o600)
    app[INTAKE_RUNNER] = runner
    yield
    await runner.cleanup()


async def serve_readers(app: web.Application) -> AsyncIterator[None]:
    """Listen for network card readers on ``nfc.tcp_listen`` (nothing when it is empty)."""
    listen = app[CONFIG].nfc.tcp_listen
    if not listen:
        yield
        return
    host, port = parse_hostport(listen)
    nfc = app[CONFIG].nfc
    limits = app[CONFIG].limits
    listener = ReaderListener(
        app[SESSIONS],
        app[WAKE],
        host,
        port,
        auth_timeout=limits.head_timeout_secs,  # the same guard as the HTTP listeners
        max_connections=limits.max_connections,
        tls=server_tls(nfc.tls_cert, nfc.tls_key),
    )
    await listener.start()
    app[READER_LISTENER] = listener
    try:
        yield
    finally:
        await listener.close()


def create_app(config: Config, *, workers: bool = True, intake: bool = True) -> web.Application:
    """The service. ``workers=False`` leaves out the background loops (API tests)."""
    app = web.Application(client_max_size=1024**2)
    app[CONFIG] = config
    app[SPOOL] = Spool(Path(config.spool.dir))
    app[WAKE] = Waker()
    app[INSTANCE] = Instance()
    app[TAP_AUTH] = IntakeAuth("", config.intake.max_skew_secs)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_spool)
    app.cleanup_ctx.append(_targets)
    if intake:
        app.cleanup_ctx.append(_intake)
    if config.nfc.tcp_listen:
        app.cleanup_ctx.append(serve_readers)
    setup_metrics(app, workers=workers)
    setup_api(app)
    setup_web(app)
    if workers:
        setup_workers(app)
    return app
