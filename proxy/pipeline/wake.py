"""Wake-ups: intake and API nudge the workers instead of letting them wait a tick.

A wake-up names the loops that have new work (``DISPATCH`` after a job became
pending, ``TRACKER`` after one was sent): waking every loop for every job
would cost each of them a database round trip (and on PostgreSQL an
advisory lock) per job for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib

DISPATCH = "dispatch"
TRACKER = "tracker"


class Waker:
    """One event per worker loop: no loop steals another's wake-up."""

    def __init__(self) -> None:
        self._events: dict[str, list[asyncio.Event]] = {}

    def subscribe(self, loop: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(loop, []).append(event)
        return event

    def wake(self, *loops: str) -> None:
        for loop in loops or tuple(self._events):
            for event in self._events.get(loop, ()):
                event.set()


async def sleep_or_wake(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()
