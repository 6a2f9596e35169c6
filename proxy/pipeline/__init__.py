"""The job lifecycle: intake, dispatch, tracking, charging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.db import is_sqlite

from .leader import WORKER_ROLES, configured_name, exclusive_instance, hold_name, leading
from .wake import WAKE, sleep_or_wake

log = logging.getLogger(__name__)
WORKERS = web.AppKey("workers", list)

Tick = Callable[[web.Application], Awaitable[int]]


async def run_loop(app: web.Application, name: str, tick: Tick, interval: float) -> None:
    """Run ``tick`` forever: again at once while it finds work, else after a
    wake-up or ``interval`` seconds."""
    event = app[WAKE].subscribe(name)
    while True:
        try:
            busy = await tick(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s tick failed", name)
            busy = 0
        if not busy:
            await sleep_or_wake(event, interval)


async def _workers(app: web.Application) -> AsyncIterator[None]:
    from ..app import CONFIG
    from .dispatch import dispatch_tick
    from .outbox_worker import outbox_tick
    from .release import expire_tick
    from .tracker import track_tick

    config = app[CONFIG]
    instance_lock = exclusive_instance(config.database.url)
    name_lock = await _settle_name(app)
    interval = config.tracker.interval_secs
    tasks = [
        asyncio.create_task(run_loop(app, "dispatch", dispatch_tick, interval)),
        # The tracker never loops at once: one poll per target per tick.
        asyncio.create_task(
            run_loop(app, "tracker", _led("tracker", _no_spin(track_tick)), interval)
        ),
        asyncio.create_task(
            run_loop(app, "expiry", _led("expiry", expire_tick), max(interval, 1.0))
        ),
        asyncio.create_task(run_loop(app, "outbox", outbox_tick, interval)),
    ]
    if PAPERCUT_ON in app:
        from .papercut import monitor_tick

        tasks.append(
            asyncio.create_task(
                run_loop(app, "papercut", _led("papercut", _no_spin(monitor_tick)), interval)
            )
        )
    app[WORKERS] = tasks
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if instance_lock is not None:
        instance_lock.close()
    if name_lock is not None:
        await name_lock.close()


async def _settle_name(app: web.Application) -> AsyncConnection | None:
    """Take this instance's name and void the claims a dead predecessor left
    under it (leader.py). Returns the connection holding the name's lock."""
    from ..app import CONFIG, ENGINE, INSTANCE, SESSIONS
    from .dispatch import release_claims

    config = app[CONFIG]
    name = configured_name(config.instance.name, config.intake.socket)
    lock = None
    if is_sqlite(config.database.url):
        owners = None  # one instance (exclusive_instance): every claim is void
    else:
        lock = await hold_name(app[ENGINE], name)
        if lock is None:
            log.warning(
                "another live instance is named %r: claiming as %s:%d; give each instance "
                "its own [instance] name",
                name,
                name,
                os.getpid(),
            )
            name = f"{name}:{os.getpid()}"
        owners = [name, *(f"{name}:{role}" for role in WORKER_ROLES)] if lock else []
    app[INSTANCE].name = name
    if owners is None or owners:
        async with app[SESSIONS]() as session, session.begin():
            released = await release_claims(session, owners)
        if released:
            log.info("released %d claim(s) left by the previous run of %s", released, name)
    return lock


def _led(name: str, tick: Tick) -> Tick:
    """Run a whole-table sweep on one instance at a time (see leader.py)."""

    async def wrapped(app: web.Application) -> int:
        from ..app import ENGINE

        async with leading(app[ENGINE], name) as leader:
            return await tick(app) if leader else 0

    return wrapped


def _no_spin(tick: Tick) -> Tick:
    async def wrapped(app: web.Application) -> int:
        await tick(app)
        return 0

    return wrapped


PAPERCUT_ON = web.AppKey("papercut_on", bool)


def setup_workers(app: web.Application) -> None:
    from ..app import CONFIG
    from .outbox_worker import HANDLERS

    app[HANDLERS] = {}
    if app[CONFIG].papercut.url:
        from .papercut import papercut_ctx

        app[PAPERCUT_ON] = True
        app.cleanup_ctx.append(papercut_ctx)
        app.cleanup_ctx.append(_papercut_handlers)
    if app[CONFIG].officernd.api_url:
        from .officernd import officernd_ctx

        app.cleanup_ctx.append(officernd_ctx)
    app.cleanup_ctx.append(_workers)


async def _papercut_handlers(app: web.Application) -> AsyncIterator[None]:
    from .outbox_worker import HANDLERS
    from .papercut import ADJUST_KIND, PAPERCUT, PRINTLOG, PaperCutAdjustments

    app[HANDLERS][ADJUST_KIND] = PaperCutAdjustments(app[PAPERCUT], app[PRINTLOG])
    yield
