"""The OfficeRnD sync an admin started from the Integrations page: its live progress.

One per instance (a second press while it runs is refused); the page's
script polls ``/admin/integrations/sync/status`` for it. The run itself is
recorded like a scheduled one (``scheduled_runs``, period ``manual-<time>``,
and its event), so the summaries of past runs come from the database.
Imports no proxy module: ``proxy.keys`` imports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncProgress:
    state: str = "idle"  # idle | running | done | failed
    done: int = 0
    total: int = 0
    period: str = ""
    line: str = ""  # the run's summary once it ended
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.state, self.done, self.total, self.period, self.line = "running", 0, 0, "", ""

    def __call__(self, done: int, total: int) -> None:
        """billing.officernd's ``progress(done, total)``."""
        self.done, self.total = done, total

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "period": self.period,
            "summary": self.line,
        }

    async def stop(self, app: object = None) -> None:
        """on_shutdown: a run in progress is cancelled (its row stays 'started')."""
        del app
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
