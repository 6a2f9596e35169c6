"""One exception tree for the service; the API middleware maps it to HTTP."""

from billing.exceptions import BillingError


class ProxyPrintError(Exception):
    """Base of every error raised by the service."""

    status = 500
    code = "internal"


class ConfigError(ProxyPrintError):
    """The configuration file or environment is invalid; the message names the key."""

    code = "config"


class BadRequest(ProxyPrintError):
    status = 400
    code = "bad-request"


class RequestTimeout(ProxyPrintError):
    """The client stopped sending its request body."""

    status = 408
    code = "request-timeout"


class TooManyAttempts(ProxyPrintError):
    """Failed authentications from this address: wait before trying again."""

    status = 429
    code = "too-many-attempts"


class Unauthorized(ProxyPrintError):
    status = 401
    code = "unauthorized"


class Forbidden(ProxyPrintError):
    status = 403
    code = "forbidden"


class NotFound(ProxyPrintError):
    status = 404
    code = "not-found"


class Conflict(ProxyPrintError):
    status = 409
    code = "conflict"


class TargetError(ProxyPrintError):
    """A print target (IPP printer, CUPS queue) failed or cannot be reached."""

    status = 502
    code = "target"


class CupsError(TargetError):
    code = "cups"


__all__ = [
    "BadRequest",
    "BillingError",
    "ConfigError",
    "Conflict",
    "CupsError",
    "Forbidden",
    "NotFound",
    "ProxyPrintError",
    "RequestTimeout",
    "TargetError",
    "TooManyAttempts",
    "Unauthorized",
]
