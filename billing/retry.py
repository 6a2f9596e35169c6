"""The one retry policy: how many attempts, and the jittered pause between them.

Used by the HTTP clients (per call), the outbox runner (per row, for as long
as it takes), dispatch (per print-out) and the OfficeRnD sync's PaperCut writes.
"""

from __future__ import annotations

import random
import sys

__all__ = ["RetryPolicy"]

_MAX_DOUBLINGS = 60  # 2**60 x any backoff is past every max_backoff; no float overflow


class RetryPolicy:
    """At most ``attempts`` attempts (first try included; at least 1) with jittered backoff.

    The pause before retry n is uniform in [d/2, d] with
    d = min(max_backoff, backoff * 2**(n-1)), drawn from ``rng``.
    """

    def __init__(
        self, attempts: int, backoff: float, max_backoff: float, rng: random.Random | None = None
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.rng = rng or random.Random()

    @classmethod
    def forever(cls, backoff: float, max_backoff: float) -> RetryPolicy:
        """No bound on attempts: durable work retried until it succeeds (or gives up)."""
        return cls(sys.maxsize, backoff, max_backoff)

    def pause(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1-based), before the next one."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        ceiling = min(self.max_backoff, self.backoff * 2.0**doublings)
        return self.rng.uniform(ceiling / 2, ceiling)
