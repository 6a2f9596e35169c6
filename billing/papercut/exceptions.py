"""Errors of the PaperCut integration, under ``billing.exceptions.BillingError``.

Two kinds, because callers must treat them differently:

* ``PaperCutFault``: the server answered and said no (unknown user, bad auth
  token, unknown property...). Sending the same call again gets the same
  answer, so it is never retried.
* ``PaperCutUnavailable``: no usable answer (connection refused, timeout,
  HTTP 5xx, a body that is not XML-RPC). Retryable; but a *write* that fails
  this way may or may not have been applied by the server (see
  ``billing.papercut.client``).
"""

from __future__ import annotations

from billing.exceptions import BillingError


class PaperCutError(BillingError):
    """Base of every PaperCut error."""


class PaperCutFault(PaperCutError):
    """An XML-RPC fault: the server refused the call. Never retried."""

    def __init__(self, method: str, code: int, fault_string: str) -> None:
        super().__init__(f"PaperCut refused {method}: {fault_string} (fault {code})")
        self.method = method
        self.code = code
        self.fault_string = fault_string


class PaperCutUnavailable(PaperCutError):
    """No usable answer from the server after ``attempts`` attempts. Retryable later.

    ``retryable`` is False only for answers that are well-formed but wrong
    (a result of an unexpected type, HTTP 4xx from a wrong URL): sending
    them again would not help.
    """

    def __init__(
        self, method: str, reason: str, *, attempts: int = 1, retryable: bool = True
    ) -> None:
        super().__init__(f"PaperCut unavailable for {method} after {attempts} attempt(s): {reason}")
        self.method = method
        self.reason = reason
        self.attempts = attempts
        self.retryable = retryable


class PaperCutSetupError(PaperCutError):
    """PaperCut is not set up the way proxyprint needs (e.g. its user directory source
    does not offer a group the sync must create). An admin must act; not retried."""


class PaperCutTaskTimeout(PaperCutError):
    """A background task (``getTaskStatus``) did not complete in time."""


class PrintLogDriverMissing(PaperCutSetupError):
    """``[papercut] db_url`` names a database whose async driver is not installed (or a
    driver that is not async); the message names the extra to install."""
