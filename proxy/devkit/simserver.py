"""What every simulator of a remote product shares: a local aiohttp server's lifecycle.

``SimServer`` is the base of the PaperCut and OfficeRnD simulators. It serves
the application ``_app()`` builds on ``host`` (``127.0.0.1``) and ``port``
(0: a free one, known after ``start()``), as ``start()``/``stop()`` or
``async with``; it counts requests (``requests``); it keeps the queue of
scripted faults (a simulator's ``inject`` fills it through ``_script``,
``_next_scripted`` takes the first that matches a request, ``clear_faults``
empties it and turns the random faults off) and draws the seeded random ones
(``_random_fault``); and it hangs a request (``_hang``) until
``hang_seconds`` pass or the server stops, so that stopping never waits for
a hung request. ``serve_until_signalled`` is ``python -m …simulator``: serve
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import random
import signal
from collections import Counter, deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from aiohttp import web

__all__ = ["SimServer"]

FaultT = TypeVar("FaultT", bound=enum.Enum)


class SimServer(abc.ABC, Generic[FaultT]):
    """A simulator's server; ``FaultT`` is its enum of scripted faults."""

    def __init__(self, *, host: str, port: int, hang_seconds: float) -> None:
        self.host = host
        self.port = port
        self.hang_seconds = hang_seconds
        self.requests: Counter[str] = Counter()
        self._scripted: deque[tuple[FaultT, str | None]] = deque()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @abc.abstractmethod
    def _app(self) -> web.Application:
        """The application to serve, its routes added."""

    @abc.abstractmethod
    def set_faults(self) -> None:
        """Set the shares of requests that get random faults (none: no arguments)."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self._after_stop()

    def _after_stop(self) -> None:
        """What leaving ``async with`` does after ``stop()``: nothing here."""

    async def start(self) -> None:
        self._closing = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()  # ends every hang
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _hang(self, answer: web.Response) -> web.Response:
        """``answer`` once ``hang_seconds`` have passed or the server stops, if sooner."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
        return answer

    # --- scripted faults ------------------------------------------------------------------

    def _script(self, kind: FaultT, target: str | None, count: int) -> None:
        """The next ``count`` requests that ``target`` matches get ``kind``."""
        self._scripted.extend([(kind, target)] * count)

    def _next_scripted(self, matches: Callable[[str | None], bool]) -> FaultT | None:
        """Take off the first scripted fault whose target ``matches`` the request."""
        for i, (kind, target) in enumerate(self._scripted):
            if matches(target):
                del self._scripted[i]
                return kind
        return None

    def _random_fault(
        self, rng: random.Random, *outcomes: tuple[float, Callable[[], FaultT]]
    ) -> FaultT | None:
        """A seeded random fault: each outcome takes its share of [0, 1), in order.

        Nothing is drawn while every share is 0.
        """
        if not any(share for share, _ in outcomes):
            return None
        draw = rng.random()
        bound = 0.0
        for share, outcome in outcomes:
            bound += share
            if draw < bound:
                return outcome()
        return None

    @property
    def scripted_faults(self) -> int:
        """Scripted faults not used yet."""
        return len(self._scripted)

    def clear_faults(self) -> None:
        self._scripted.clear()
        self.set_faults()

    # --- running alone --------------------------------------------------------------------

    def _banner(self) -> Sequence[str]:
        """The lines ``serve_until_signalled`` prints once the server listens."""
        return ()

    async def serve_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, printing ``_banner()`` once listening."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        async with self:
            for line in self._banner():
                print(line, flush=True)
            await stopping.wait()
