"""Wake-ups: intake and API nudge the workers instead of letting them wait a tick.

A wake-up names the loops that have new work (``DISPATCH`` after a job became
pending, ``SENT`` after one was sent: the tracker follows it eagerly): waking
every loop for every job would cost each of them a database round trip (and
on PostgreSQL an advisory lock) per job for nothing.

The other direction: a handler waiting for a print-out's status (the
backend's long poll, ``intake_status``) is woken when this instance commits a
change of it (``status_changed``, from ``lifecycle.ending``), instead of
finding it at its next look at the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

DISPATCH = "dispatch"
TRACKER = "tracker"
SENT = "sent"  # the tracker's eager follower of just-dispatched jobs


class Waker:
    """One event per worker loop: no loop steals another's wake-up."""

    def __init__(self) -> None:
        self._events: dict[str, list[asyncio.Event]] = {}
        self._sent: list[int] = []
        self._watchers: dict[int, set[asyncio.Event]] = {}

    def subscribe(self, loop: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(loop, []).append(event)
        return event

    def wake(self, *loops: str) -> None:
        for loop in loops or tuple(self._events):
            for event in self._events.get(loop, ()):
                event.set()

    # --- jobs just sent: the tracker looks at them at once, then less often ---

    def sent(self, print_out_id: int) -> None:
        """A print-out reached its target: follow it eagerly (``tracker.follow_sent``)."""
        if SENT in self._events:
            self._sent.append(print_out_id)
            self.wake(SENT)
        else:  # no eager follower here: the tracker's next tick, soon
            self.wake(TRACKER)

    def take_sent(self) -> list[int]:
        taken, self._sent = self._sent, []
        return taken

    # --- handlers waiting for a status ------------------------------------------

    def status_changed(self, print_out_ids: Iterable[int]) -> None:
        """These print-outs' changes are committed: wake whoever waits on them."""
        for print_out_id in print_out_ids:
            for event in self._watchers.get(print_out_id, ()):
                event.set()

    @contextlib.contextmanager
    def watching(self, print_out_id: int) -> Iterator[asyncio.Event]:
        """An event set at each committed change of the print-out, while inside."""
        event = asyncio.Event()
        self._watchers.setdefault(print_out_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._watchers.get(print_out_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._watchers[print_out_id]


async def sleep_or_wake(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()
