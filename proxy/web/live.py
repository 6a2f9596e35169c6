"""Live status for the pages: print-out changes pushed as Server-Sent Events.

Every status change writes an event row (``billing.status.transition``),
whichever instance made it, so one feed per app tails the events table and
hands each change to the open streams; a stream passes on only what its
principal may see (her own print-outs; staff see all). The feed polls only
while someone listens, one query per ``[web] poll_secs`` whatever the number
of streams. On PostgreSQL ids are not committed in order, so the feed looks
back ``LOOKBACK`` ids and remembers what it has already handed out.

A stream starts with the current status of the print-outs the page shows
(``?ids=``), then an ``event: ready``: nothing that changed between the page
and the stream is lost. A stream sends a print-out's status only when it differs from what it last
sent there (the feed may hand out a change twice). It ends after
``MAX_STREAM_SECS`` (the browser's EventSource reconnects, and the session
is checked again) and when the service shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import PrintStatus
from billing.models import Event, PrintOut

log = logging.getLogger(__name__)
# Imports no proxy module: proxy.keys imports this one (for the feed's key).
Sessions = Callable[[], AsyncSession]

LOOKBACK = 200  # ids behind the newest seen that may still commit (PostgreSQL)
BATCH = 500
MAX_STREAM_SECS = 300.0
KEEPALIVE_SECS = 15.0
RETRY_MS = 2000


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose stream: staff see every print-out, others their own."""

    user_name: str | None
    staff: bool


@dataclass(frozen=True, slots=True)
class Change:
    """A print-out's status after a change (or now, for a stream's first message)."""

    print_out_id: int
    delegate: str
    status: PrintStatus
    reason: str | None

    def visible_to(self, viewer: Viewer) -> bool:
        return viewer.staff or self.delegate == viewer.user_name

    def sse(self) -> bytes:
        data = {
            "id": self.print_out_id,
            "status": self.status.label,
            "final": self.status.is_final,
            "reason": self.reason,
        }
        return f"event: status\ndata: {json.dumps(data)}\n\n".encode()


async def _current(sessions: Sessions, ids: Sequence[int]) -> list[Change]:
    if not ids:
        return []
    async with sessions() as session, session.begin():
        rows = await session.execute(
            select(PrintOut.id, PrintOut.delegate, PrintOut.status, PrintOut.status_reason).where(
                PrintOut.id.in_(list(ids))
            )
        )
        return [Change(i, d, PrintStatus(s), r) for i, d, s, r in rows]


class LiveFeed:
    """One poller for all of an app's streams; each stream has its own queue."""

    def __init__(self, sessions: Sessions, interval: float) -> None:
        self._sessions = sessions
        self._interval = interval
        self._queues: set[asyncio.Queue[Change | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None
        self._seen: set[int] = set()
        self.closing = False

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Change | None]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._queues.add(queue)
        if self._task is None or self._task.done():
            # Idle until now: start near the newest event, not where the last listener left.
            self._last, self._seen = None, set()
            self._task = asyncio.create_task(self._run(), name="web-live-feed")
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def current(self, ids: Sequence[int]) -> list[Change]:
        return await _current(self._sessions, ids)

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (on_shutdown: open streams would hold the shutdown)."""
        del app
        self.closing = True
        for queue in list(self._queues):
            queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._queues and not self.closing:
            try:
                await self.poll()
            except Exception:  # a database hiccup: the next tick tries again
                log.warning("live feed: polling the events failed", exc_info=True)
            await asyncio.sleep(self._interval)

    async def poll(self) -> None:
        """Hand the print-out changes committed since the last poll to every stream."""
        async with self._sessions() as session, session.begin():
            if self._last is None:
                # The first poll: from just before now. A change between a stream's
                # first snapshot and this poll is then not lost; the few older ones
                # re-sent say a print-out's current status, which the page already shows.
                self._last = int(await session.scalar(select(func.max(Event.id))) or 0)
            rows = (
                await session.execute(
                    select(Event.id, Event.subject_id)
                    .where(
                        Event.id > self._last - LOOKBACK,
                        Event.subject_type == "print_out",
                        Event.to_status.is_not(None),
                    )
                    .order_by(Event.id)
                    .limit(BATCH)
                )
            ).all()
        fresh = [(eid, sid) for eid, sid in rows if eid not in self._seen]
        if not fresh:
            return
        self._seen.update(eid for eid, _ in fresh)
        self._last = max(self._last, *(eid for eid, _ in fresh))
        self._seen = {eid for eid in self._seen if eid > self._last - LOOKBACK}
        ids = list(dict.fromkeys(int(sid) for _, sid in fresh if sid.isdigit()))
        for change in await _current(self._sessions, ids):
            for queue in list(self._queues):
                queue.put_nowait(change)


async def stream(
    request: web.Request,
    feed: LiveFeed,
    viewer: Viewer,
    ids: Sequence[int],
    headers: dict[str, str],
) -> web.StreamResponse:
    """The ``text/event-stream`` of one page: its jobs now, then every change it may see."""
    response = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not buffer the stream
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    ends = loop.time() + MAX_STREAM_SECS
    try:
        await response.write(f"retry: {RETRY_MS}\n: live\n\n".encode())
        sent: dict[int, PrintStatus] = {}  # what this page was told last, per print-out

        async def send(change: Change) -> None:
            if change.visible_to(viewer) and sent.get(change.print_out_id) != change.status:
                sent[change.print_out_id] = change.status
                await response.write(change.sse())

        with feed.subscribe() as queue:
            for now in await feed.current(ids):
                await send(now)
            await response.write(b"event: ready\ndata: {}\n\n")  # the snapshot is complete
            while not feed.closing and loop.time() < ends:
                change: Change | None
                try:
                    change = await asyncio.wait_for(queue.get(), KEEPALIVE_SECS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if change is None:
                    break
                await send(change)
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    return response
