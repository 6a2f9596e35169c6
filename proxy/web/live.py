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
sent there (the feed may hand out a change twice).

New print-outs: a status event with no from-status is a print-out's first
(intake, a reprint, a redirect). A page that asks for them (``?new=``, see
``News``) is told ``event: new`` once per print-out, only of those it may
list: My jobs of the viewer's own, the ticket queue (operators) of new
tickets. ``?since=`` (the newest print-out id when the page was drawn) adds
those created before the stream began to its first messages.

Every poll also checks the streams' web sessions, in one query: a stream
whose session ended (sign-out, a disabled user) or whose role changed ends
there and then. A stream ends with ``event: end`` and its reason: after
``MAX_STREAM_SECS`` (``renew``: the script opens a new one, the session is
checked again), at shutdown, or when its session is no longer live.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import PrinterMode, PrintStatus, Role
from billing.models import Event, PrintOut

log = logging.getLogger(__name__)
# Imports no proxy module: proxy.keys imports this one (for the feed's key).
Sessions = Callable[[], AsyncSession]
# The web sessions among these ids that are still live, with their user's role
# (proxy.web.sessions.live_roles, passed in by setup: this module imports no proxy module).
SessionCheck = Callable[[AsyncSession, Collection[int]], Awaitable[dict[int, Role]]]

LOOKBACK = 200  # ids behind the newest seen that may still commit (PostgreSQL)
BATCH = 500
MAX_STREAM_SECS = 300.0
KEEPALIVE_SECS = 15.0
RETRY_MS = 2000
MAX_NEW = 100  # print-outs a stream's first messages announce at most (``?since=``)


class News(enum.Enum):
    """Which new print-outs a page is told of (``?new=``)."""

    MINE = "mine"  # My jobs: the viewer's own (held, in flight, her tickets)
    TICKETS = "tickets"  # the ticket queue: every new ticket (operators only)


class End(enum.Enum):
    """Why a stream ends (``event: end``; the script decides whether to reopen it)."""

    RENEW = "renew"
    SHUTDOWN = "shutdown"
    SIGNED_OUT = "signed-out"

    def sse(self) -> bytes:
        return f"event: end\ndata: {json.dumps({'reason': self.value})}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose stream: staff see every print-out, others their own.

    ``session_id`` and ``role`` are the web session's when the stream began:
    the feed ends the stream when that session is no longer live with that role.
    """

    user_name: str | None
    staff: bool
    session_id: int
    role: Role
    news: News | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A print-out's status after a change (or now, for a stream's first message)."""

    print_out_id: int
    delegate: str
    status: PrintStatus
    reason: str | None
    mode: str
    created: bool = False  # this print-out is new (its first event was in the batch)

    def visible_to(self, viewer: Viewer) -> bool:
        return viewer.staff or self.delegate == viewer.user_name

    def announced_to(self, viewer: Viewer) -> bool:
        """A new print-out the viewer's page lists (never another user's on My jobs)."""
        if not self.created or viewer.news is None:
            return False
        if viewer.news is News.MINE:
            return self.delegate == viewer.user_name
        return viewer.staff and self.mode == PrinterMode.TICKET.value

    def sse(self, kind: str = "status") -> bytes:
        data = {
            "id": self.print_out_id,
            "status": self.status.label,
            "final": self.status.is_final,
            "reason": self.reason,
        }
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


_COLUMNS = (PrintOut.id, PrintOut.delegate, PrintOut.status, PrintOut.status_reason, PrintOut.mode)


async def _current(
    sessions: Sessions, ids: Sequence[int], created: Collection[int] = ()
) -> list[Change]:
    if not ids:
        return []
    async with sessions() as session, session.begin():
        rows = await session.execute(select(*_COLUMNS).where(PrintOut.id.in_(list(ids))))
        return [Change(i, d, PrintStatus(s), r, m, i in created) for i, d, s, r, m in rows]


async def newest(session: AsyncSession) -> int:
    """The newest print-out id now: a page's ``?since=`` for its stream."""
    return int(await session.scalar(select(func.max(PrintOut.id))) or 0)


async def _created_since(sessions: Sessions, viewer: Viewer, since: int | None) -> list[Change]:
    """The print-outs the viewer's page would list that are newer than ``since``."""
    if viewer.news is None or since is None:
        return []
    query = select(*_COLUMNS).where(PrintOut.id > since)
    if viewer.news is News.MINE:
        query = query.where(PrintOut.delegate == viewer.user_name)
    else:
        query = query.where(
            PrintOut.mode == PrinterMode.TICKET.value, PrintOut.status == int(PrintStatus.HELD)
        )
    async with sessions() as session, session.begin():
        rows = await session.execute(query.order_by(PrintOut.id).limit(MAX_NEW))
        found = [Change(i, d, PrintStatus(s), r, m, True) for i, d, s, r, m in rows]
    return [c for c in found if c.announced_to(viewer)]


Message = Change | End


class LiveFeed:
    """One poller for all of an app's streams; each stream has its own queue."""

    def __init__(
        self, sessions: Sessions, interval: float, check: SessionCheck | None = None
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._check = check
        self._queues: dict[asyncio.Queue[Message], Viewer] = {}
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None
        self._seen: set[int] = set()
        self.closing = False

    @contextlib.contextmanager
    def subscribe(self, viewer: Viewer) -> Iterator[asyncio.Queue[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._queues[queue] = viewer
        if self._task is None or self._task.done():
            # Idle until now: start near the newest event, not where the last listener left.
            self._last, self._seen = None, set()
            self._task = asyncio.create_task(self._run(), name="web-live-feed")
        try:
            yield queue
        finally:
            self._queues.pop(queue, None)

    async def current(self, ids: Sequence[int]) -> list[Change]:
        return await _current(self._sessions, ids)

    async def created_since(self, viewer: Viewer, since: int | None) -> list[Change]:
        return await _created_since(self._sessions, viewer, since)

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (on_shutdown: open streams would hold the shutdown)."""
        del app
        self.closing = True
        for queue in list(self._queues):
            queue.put_nowait(End.SHUTDOWN)
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
        """End the streams whose session ended; hand the print-out changes committed
        since the last poll to the others."""
        async with self._sessions() as session, session.begin():
            if self._check is not None and self._queues:
                listening = {v.session_id for v in self._queues.values()}
                live = await self._check(session, listening)
                for queue, viewer in list(self._queues.items()):
                    if live.get(viewer.session_id) is not viewer.role:
                        self._queues.pop(queue, None)  # hand it nothing more
                        queue.put_nowait(End.SIGNED_OUT)
            if self._last is None:
                # The first poll: from just before now. A change between a stream's
                # first snapshot and this poll is then not lost; the few older ones
                # re-sent say a print-out's current status, which the page already shows.
                self._last = int(await session.scalar(select(func.max(Event.id))) or 0)
            rows = (
                await session.execute(
                    select(Event.id, Event.subject_id, Event.from_status)
                    .where(
                        Event.id > self._last - LOOKBACK,
                        Event.subject_type == "print_out",
                        Event.to_status.is_not(None),
                    )
                    .order_by(Event.id)
                    .limit(BATCH)
                )
            ).all()
        fresh = [(eid, sid, was) for eid, sid, was in rows if eid not in self._seen]
        if not fresh:
            return
        self._seen.update(eid for eid, _, _ in fresh)
        self._last = max(self._last, *(eid for eid, _, _ in fresh))
        self._seen = {eid for eid in self._seen if eid > self._last - LOOKBACK}
        ids = list(dict.fromkeys(int(sid) for _, sid, _ in fresh if sid.isdigit()))
        # A status event without a from-status is a print-out's first: it is new.
        created = {int(sid) for _, sid, was in fresh if was is None and sid.isdigit()}
        for change in await _current(self._sessions, ids, created):
            for queue in list(self._queues):
                queue.put_nowait(change)


async def stream(
    request: web.Request,
    feed: LiveFeed,
    viewer: Viewer,
    ids: Sequence[int],
    headers: dict[str, str],
    *,
    since: int | None = None,
) -> web.StreamResponse:
    """The ``text/event-stream`` of one page: its jobs now (and those new since
    ``since``), then every change it may see and every new print-out it lists."""
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
            kind = "status"
            if change.print_out_id not in sent and change.announced_to(viewer):
                kind = "new"  # once per print-out: the page fetches its row
            elif not change.visible_to(viewer) or sent.get(change.print_out_id) == change.status:
                return
            sent[change.print_out_id] = change.status
            await response.write(change.sse(kind))

        with feed.subscribe(viewer) as queue:
            for now in await feed.current(ids):
                await send(now)
            for new in await feed.created_since(viewer, since):
                await send(new)
            await response.write(b"event: ready\ndata: {}\n\n")  # the snapshot is complete
            end = End.RENEW  # unless a message says otherwise
            while not feed.closing and loop.time() < ends:
                message: Message
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if isinstance(message, End):
                    end = message
                    break
                await send(message)
            if feed.closing and end is End.RENEW:
                end = End.SHUTDOWN
            await response.write(end.sse())
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    return response
