"""The HTTP plumbing that the PaperCut and OfficeRnD clients share.

``HttpClient`` is the base of ``billing.papercut.client.PaperCutClient`` and
``billing.officernd.client.OfficeRnDClient``. It holds what is the same for
both, and nothing of either protocol:

* One ``aiohttp.ClientSession`` (keep-alive) per client, made on first use
  unless ``session`` is given (then the caller closes it). ``close()`` and
  ``async with`` close only a session the client made.
* ``timeout`` is per attempt (``_attempt_timeout``), not per call.
* A ``RetryPolicy`` (``billing.retry``, the one the outbox uses too):
  ``attempts`` bounds a call (first try included; at least 1).
* ``calls``, ``errors`` and ``retries`` count attempts, failed attempts and
  repeated attempts by a key the client chooses (an XML-RPC method, an
  ``"METHOD /path"``).

What is retried, how often, and which error a caller sees stay with each
client: they are the contracts of its API.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Final, Self

import aiohttp

from .retry import RetryPolicy

__all__ = ["USER_AGENT", "HttpClient", "RetryPolicy", "transport_detail"]

USER_AGENT: Final = "proxyprint"


def transport_detail(exc: BaseException) -> str:
    """``"TypeName: message"`` of a transport error, or its type name when it has no text."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class HttpClient:
    """Session lifecycle, per-attempt timeout, a ``RetryPolicy`` and counters.

    ``attempts``, ``backoff`` and ``max_backoff`` are the policy's.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        timeout: float,
        retry_policy: RetryPolicy,
        session: aiohttp.ClientSession | None,
    ) -> None:
        """``headers`` go on every request of a session the client makes (with ``User-Agent``)."""
        self.timeout = timeout
        self.retry_policy = retry_policy
        self._headers = {**headers, "User-Agent": USER_AGENT}
        self._session = session
        self._own_session = session is None
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()

    @property
    def attempts(self) -> int:
        return self.retry_policy.attempts

    @property
    def backoff(self) -> float:
        return self.retry_policy.backoff

    @property
    def max_backoff(self) -> float:
        return self.retry_policy.max_backoff

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._http()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    # --- attempts and retries -------------------------------------------------------------

    def _attempt_timeout(self) -> aiohttp.ClientTimeout:
        """The timeout of one attempt (one HTTP request)."""
        return aiohttp.ClientTimeout(total=self.timeout)

    async def _backoff(self, key: str, attempt: int, *, at_least: float | None = None) -> None:
        """Count a retry of ``key`` and sleep the pause after ``attempt`` (``at_least`` long)."""
        self.retries[key] += 1
        pause = self.retry_policy.pause(attempt)
        if at_least is not None:
            pause = max(pause, at_least)
        await asyncio.sleep(pause)
