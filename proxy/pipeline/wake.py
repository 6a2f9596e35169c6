"""Wake-ups: intake and API nudge the workers instead of letting them wait a tick."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web


class Waker:
    """One event per worker loop, all set by ``wake``: no loop steals another's wake-up."""

    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def wake(self) -> None:
        for event in self._events:
            event.set()


WAKE = web.AppKey("wake", Waker)


def wake(app: web.Application) -> None:
    waker = app.get(WAKE)
    if waker is not None:
        waker.wake()


async def sleep_or_wake(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()
