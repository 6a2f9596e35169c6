"""The OfficeRnD simulator's faults: which request gets which fault.

``FaultKind`` names what a fault does; ``OfficeRnDFaults`` decides, per
request, whether it gets one: a scripted fault first (``inject``), then a
seeded random share (``set_faults``: 429 or 500/503). No HTTP here:
``proxy.devkit.officernd.simapi`` turns the decision into an answer.
"""

from __future__ import annotations

import enum
import random

from proxy.devkit.simserver import SimServer

__all__ = ["FaultKind", "OfficeRnDFaults"]


class FaultKind(enum.StrEnum):
    """What a scripted fault does to one request."""

    HTTP_429 = "429"  # rate limited (Retry-After: sim.retry_after); nothing applied
    HTTP_500 = "500"  # nothing applied
    HTTP_503 = "503"  # nothing applied
    UNAUTHORIZED = "401"  # the token is refused as if revoked; nothing applied
    HANG = "hang"  # no answer for hang_seconds; nothing applied
    APPLY_THEN_500 = "apply-then-500"  # applied (fee created), then answered 500
    APPLY_THEN_HANG = "apply-then-hang"  # applied, then no answer for hang_seconds
    APPLY_THEN_DROP = "apply-then-drop"  # applied, then the connection closed: no answer


class OfficeRnDFaults(SimServer[FaultKind]):
    """Scripted and random faults; ``seed`` seeds the random ones."""

    def __init__(self, *, seed: int, host: str, port: int, hang_seconds: float) -> None:
        super().__init__(host=host, port=port, hang_seconds=hang_seconds)
        self.seed = seed
        self.retry_after: float = 0
        self.rate_429 = 0.0
        self.rate_5xx = 0.0
        self._fault_rng = random.Random(seed)

    def set_faults(
        self,
        rate_429: float = 0.0,
        rate_5xx: float = 0.0,
        seed: int | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer a share of requests with 429 / 500-or-503 (nothing applied); seeded."""
        if rate_429 < 0 or rate_5xx < 0 or rate_429 + rate_5xx > 1:
            raise ValueError("rate_429 and rate_5xx are shares that add up to at most 1")
        self.rate_429, self.rate_5xx = rate_429, rate_5xx
        if retry_after is not None:
            self.retry_after = retry_after
        self._fault_rng = random.Random(self.seed if seed is None else seed)

    def inject(self, kind: FaultKind | str, path: str | None = None, count: int = 1) -> None:
        """The next ``count`` requests to ``path`` (or any API request) get ``kind``.

        ``path`` is ``"METHOD /template"`` (``"POST /fees"``) or a template
        (``"/fees"``, any method). Scripted faults come before random ones.
        """
        self._script(FaultKind(kind), path, count)

    def _fault_for(self, key: str, *, api: bool) -> FaultKind | None:
        """The fault for request ``key`` (``"METHOD /template"``), if any.

        A fault scripted with no path applies to ``api`` requests only (not
        to the token endpoint).
        """
        template = key.split(" ", 1)[1]
        kind = self._next_scripted(lambda only: (only is None and api) or only in (key, template))
        if kind is not None:
            return kind
        return self._random_fault(
            self._fault_rng,
            (self.rate_429, lambda: FaultKind.HTTP_429),
            (
                self.rate_5xx,
                lambda: self._fault_rng.choice((FaultKind.HTTP_500, FaultKind.HTTP_503)),
            ),
        )
