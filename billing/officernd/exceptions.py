"""Errors of the OfficeRnD integration, under ``billing.exceptions.BillingError``.

* ``OfficeRnDError``: the API answered and said no (HTTP 4xx other than 401
  and 429: a bad field, an unknown member...). Sending the same request again
  gets the same answer, so it is never retried.
* ``OfficeRnDUnavailable``: no usable answer after the client's bounded
  attempts (connection errors, timeouts, HTTP 5xx, 429 for too long, a body
  that is not JSON). Retryable later. ``maybe_applied`` says whether a *write*
  may have taken effect anyway (the last failure came after the request was
  sent: a timeout or a 5xx), which the caller must check before sending it
  again (see ``billing.officernd.client``).
* ``OfficeRnDAuthError``: the identity server refused the client credentials,
  or the API refused a freshly issued token. Not retried.
"""

from __future__ import annotations

from billing.exceptions import BillingError

__all__ = ["OfficeRnDAuthError", "OfficeRnDError", "OfficeRnDUnavailable"]


class OfficeRnDError(BillingError):
    """Base of every OfficeRnD error; raised as such for a refused request (4xx)."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint  # "METHOD /path-template", e.g. "POST /fees"
        self.status = status


class OfficeRnDUnavailable(OfficeRnDError):
    """No usable answer after ``attempts`` attempts. Retryable later."""

    retryable = True

    def __init__(
        self,
        endpoint: str,
        reason: str,
        *,
        attempts: int = 1,
        status: int | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(
            f"OfficeRnD unavailable for {endpoint} after {attempts} attempt(s): {reason}",
            endpoint=endpoint,
            status=status,
        )
        self.reason = reason
        self.attempts = attempts
        self.maybe_applied = maybe_applied


class OfficeRnDAuthError(OfficeRnDError):
    """The client credentials or the token were refused. Never retried."""
