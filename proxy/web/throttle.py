"""Sign-in throttling: failed attempts per user name and per client address.

A sliding window per key, kept in this instance's memory (bounded: the
oldest keys go first). A key with ``attempts`` failures inside the window
is refused until the oldest of them leaves it; a success clears the user
name's count (not the address's: one address trying many names stays slow).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_KEYS = 10_000


class LoginThrottle:
    def __init__(
        self, attempts: int, window_secs: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.attempts = attempts
        self.window = window_secs
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @staticmethod
    def _keys(user: str, address: str) -> tuple[str, str]:
        return f"user:{user.casefold()}", f"addr:{address}"

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, user: str, address: str) -> float | None:
        """Seconds until a sign-in as ``user`` from ``address`` may be tried; None = now."""
        now = self._clock()
        waits = []
        for key in self._keys(user, address):
            times = self._recent(key, now)
            if times is not None and len(times) >= self.attempts:
                waits.append(times[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, user: str, address: str) -> None:
        now = self._clock()
        for key in self._keys(user, address):
            times = self._recent(key, now) or deque()
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._failures.pop(self._keys(user, "")[0], None)
