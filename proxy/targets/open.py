"""``open_target``: the target for a proxy printer's URI (schemes in ``base``)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .base import Target
from .errors import TargetRequestError
from .ipp import IppTarget


def open_target(uri: str, *, cups_server: str, timeout: float) -> Target:
    """The target for ``uri``; no I/O happens until the first request."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("ipp", "ipps"):
        if not parts.hostname:
            raise TargetRequestError(f"no host in target URI {uri!r}", retryable=False)
        return IppTarget.for_printer(uri, timeout=timeout)
    if scheme == "cups":
        # cups://QUEUE (the queue in the host part) or cups:///QUEUE
        queue = unquote(parts.netloc or parts.path.lstrip("/"))
        if not queue or "/" in queue or queue.strip() != queue:
            raise TargetRequestError(f"no valid queue name in target URI {uri!r}", retryable=False)
        return IppTarget.for_cups_queue(uri, queue, cups_server=cups_server, timeout=timeout)
    raise TargetRequestError(
        f"unsupported target URI {uri!r} (use ipp://, ipps:// or cups://QUEUE)", retryable=False
    )
