"""Database probes with a time limit that really fires.

``asyncio.timeout`` around a session cannot answer in time when the database
hangs: cancelling the query runs the session's close, which waits for the same
stuck connection (an aiosqlite thread waiting out ``busy_timeout``, a dead TCP
path). A probe runs in its own task and the caller stops waiting at the limit;
the task is left to finish (or fail) on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Probes still running after their caller gave up; kept so they are not
# garbage-collected mid-flight, dropped when done.
_stragglers: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _stragglers.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("late probe failed: %s", task.exception())


async def within(seconds: float, probe: Coroutine[Any, Any, T]) -> T:
    """The probe's result, or ``TimeoutError`` after ``seconds`` whatever it does."""
    task = asyncio.ensure_future(probe)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.cancel()
    _stragglers.add(task)
    task.add_done_callback(_finished)
    raise TimeoutError(f"no answer within {seconds:g} s")
