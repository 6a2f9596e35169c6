"""Target errors: every failure says whether trying again later can help.

``retryable=True``: the target could not be reached or was busy (connection
refused, DNS, timeout, HTTP 5xx/408/429, IPP ``server-error-*`` such as
``server-error-busy``, ``client-error-timeout``); the dispatcher keeps the job
and tries again.  ``retryable=False``: the target answered and refused the
request for good (``client-error-document-format-not-supported``, bad
attributes, authentication required, not an IPP server...); retrying would
only be refused again.
"""

from __future__ import annotations

from proxy.exceptions import TargetError

from .ipp_codec import StatusCode, status_name

# server-error-* that no retry can fix: the printer does not do this at all.
_PERMANENT_SERVER_ERRORS = frozenset(
    {
        StatusCode.SERVER_ERROR_OPERATION_NOT_SUPPORTED,
        StatusCode.SERVER_ERROR_VERSION_NOT_SUPPORTED,
        StatusCode.SERVER_ERROR_JOB_CANCELED,
    }
)


class TargetRequestError(TargetError):
    """A request to a target failed; ``retryable`` tells the caller what to do.

    ``ipp_status`` is the IPP status code when the target answered in IPP
    (e.g. ``0x040A`` document-format-not-supported, ``0x0404`` not-possible
    for a Cancel-Job of a finished job), ``http_status`` the HTTP status when
    it did not answer 200.  ``retry_after`` (seconds) is set when the target
    is merely busy (``server-error-busy``: ippeveprinter and many printers take
    one job at a time; HTTP ``Retry-After``): retry that soon, not on the
    exponential back-off meant for outages.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        target: str | None = None,
        ipp_status: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{target}: {message}" if target else message)
        self.retryable = retryable
        self.target = target
        self.ipp_status = ipp_status
        self.http_status = http_status
        self.retry_after = retry_after

    @property
    def ipp_status_name(self) -> str | None:
        return None if self.ipp_status is None else status_name(self.ipp_status)


def ipp_status_retryable(code: int) -> bool:
    """Whether an IPP error status is worth retrying (server-side and transient)."""
    if code == StatusCode.CLIENT_ERROR_TIMEOUT:  # we were too slow sending: try again
        return True
    return 0x0500 <= code <= 0x05FF and code not in _PERMANENT_SERVER_ERRORS


def http_status_retryable(code: int) -> bool:
    return code >= 500 or code in (408, 429)


__all__ = ["TargetError", "TargetRequestError", "http_status_retryable", "ipp_status_retryable"]
