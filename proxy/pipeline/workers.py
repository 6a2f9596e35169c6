"""The worker loops: dispatch, tracker, expiry, outbox, PaperCut monitor (setup_workers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.db import is_sqlite
from billing.outbox import Handler

from .. import metrics
from ..keys import (
    CONFIG,
    ENGINE,
    HANDLERS,
    INSTANCE,
    PAPERCUT,
    PAPERCUT_ON,
    PRINTLOG,
    SESSIONS,
    WAKE,
    WORKERS,
)
from .dispatch import dispatch_tick, release_claims
from .expiry import expire_tick
from .leader import WORKER_ROLES, configured_name, exclusive_instance, hold_name, leading
from .officernd import officernd_ctx
from .outbox_worker import outbox_tick
from .papercut import ADJUST_KIND, PaperCutAdjustments, monitor_tick, papercut_ctx
from .tracker import follow_sent, track_tick
from .wake import sleep_or_wake

log = logging.getLogger(__name__)

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
        # Jobs just sent, on every instance (its own): their ends reach the waiting
        # backends at once, not a tick later.
        asyncio.create_task(follow_sent(app)),
        asyncio.create_task(
            run_loop(app, "expiry", _led("expiry", expire_tick), max(interval, 1.0))
        ),
        asyncio.create_task(run_loop(app, "outbox", outbox_tick, interval)),
    ]
    if PAPERCUT_ON in app:
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
        async with leading(app[ENGINE], name) as leader:
            return await tick(app) if leader else 0

    return wrapped


def _no_spin(tick: Tick) -> Tick:
    async def wrapped(app: web.Application) -> int:
        await tick(app)
        return 0

    return wrapped


def setup_workers(app: web.Application) -> None:
    handlers: dict[str, Handler] = {}  # filled by the contexts below
    app[HANDLERS] = handlers
    metrics.watch_outbox(app, handlers)
    if app[CONFIG].papercut.url:
        app[PAPERCUT_ON] = True
        app.cleanup_ctx.append(papercut_ctx)
        app.cleanup_ctx.append(_papercut_handlers)
    if app[CONFIG].officernd.api_url:
        app.cleanup_ctx.append(officernd_ctx)
    app.cleanup_ctx.append(_workers)


async def _papercut_handlers(app: web.Application) -> AsyncIterator[None]:
    app[HANDLERS][ADJUST_KIND] = PaperCutAdjustments(app[PAPERCUT], app[PRINTLOG])
    yield
