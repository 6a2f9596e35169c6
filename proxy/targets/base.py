"""The target interface: where a print-out really prints.

The dispatcher calls ``submit``; the tracker calls ``poll`` once per target
per tick with every job it follows there (one request, never one per job);
release/ticket code calls ``cancel``.  ``open_target`` (``proxy.targets.open``)
builds a target from the URI stored with the proxy printer:

- ``ipp://HOST[:PORT]/PATH`` and ``ipps://…``: an IPP (Everywhere) printer;
- ``cups://QUEUE``: a queue of the local cupsd, reached over ``cups_server``
  (a Unix socket path such as ``/run/cups/cups.sock``, or ``HOST:PORT``).

Both speak IPP over aiohttp (see ``proxy.targets.ipp`` for why not pycups).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

from .capabilities import Capabilities
from .ipp_codec import AttributeInput


class IppJobState(IntEnum):
    """IPP ``job-state`` (RFC 8011 §5.3.7); ``PrintStatus`` mirrors these values."""

    PENDING = 3
    PENDING_HELD = 4
    PROCESSING = 5
    PROCESSING_STOPPED = 6
    CANCELED = 7
    ABORTED = 8
    COMPLETED = 9

    @property
    def is_final(self) -> bool:
        return self >= IppJobState.CANCELED


@dataclass(frozen=True, slots=True)
class PrintRequest:
    """One document to print.

    ``requesting_user`` is the delegate: cupsd files the job under that name.
    ``job_attributes`` are extra job template attributes (``sides``,
    ``media``, ``print-color-mode``...): ``str`` values are sent as keywords,
    ``int`` as integers, ``bool`` as booleans, ``dict`` as collections; pass an
    ``ipp_codec.Attribute`` to choose the value tag.  ``job_uuid`` (a bare
    uuid) makes the job findable with ``Target.find`` after a crash.
    """

    path: str | os.PathLike[str]
    document_format: str
    job_name: str
    requesting_user: str
    copies: int = 1
    job_attributes: Mapping[str, AttributeInput] = field(default_factory=dict)
    job_uuid: str | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"copies must be at least 1, not {self.copies}")
        if not self.requesting_user:
            raise ValueError("requesting_user must not be empty")


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """The job the target created: its id there (what ``poll``/``cancel`` take)."""

    job_id: int
    job_uri: str | None = None


def job_marker(job_uuid: str) -> str:
    """What dispatch appends to the job-name for printers that replace our job-uuid."""
    return f" (pp-{job_uuid.replace('-', '')[:12]})"


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as the target reports it.

    ``job_uuid`` and ``job_name`` (when the target reports them) tell whose
    job this is: a printer that restarted reuses its job ids.
    """

    state: IppJobState
    reasons: tuple[str, ...] = ()
    impressions_completed: int | None = None
    pages_completed: int | None = None
    message: str | None = None  # job-state-message / job-printer-state-message
    job_uuid: str | None = None
    job_name: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def is_job(self, dispatch_uuid: str | None) -> bool:
        """Is this the job a dispatch with ``dispatch_uuid`` created?

        By its job-uuid, or by the marker in its name (for printers that make
        their own job-uuid); never by the job id alone. Without our uuid, or
        without either attribute from the target, nothing tells: True.
        """
        if dispatch_uuid is None or (self.job_uuid is None and self.job_name is None):
            return True
        if self.job_uuid == f"urn:uuid:{dispatch_uuid}":
            return True
        return self.job_name is not None and self.job_name.endswith(job_marker(dispatch_uuid))


@runtime_checkable
class Target(Protocol):
    """Where jobs print.  Every failure raises ``TargetError`` (usually
    ``TargetRequestError`` with ``retryable``)."""

    @property
    def uri(self) -> str: ...

    @property
    def requests_made(self) -> int:
        """How many requests this target sent (the tracker benchmark counts them)."""
        ...

    async def submit(self, req: PrintRequest) -> SubmittedJob:
        """Send the document (streamed from ``req.path``); returns the target's job."""
        ...

    async def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """What the target prints (formats, options), cached; ``refresh`` asks again."""
        ...

    async def find(self, req: PrintRequest) -> SubmittedJob | None:
        """The job an earlier ``submit(req)`` created, if the target still knows
        it (found by ``req.job_uuid``); None when it has no such job."""
        ...

    async def poll(self, job_ids: Collection[int]) -> dict[int, JobState]:
        """States of ``job_ids`` in one request; jobs the target no longer knows are absent."""
        ...

    async def cancel(self, job_id: int) -> None:
        """Cancel a job.  A job that already ended raises ``TargetRequestError``
        with ``ipp_status`` ``client-error-not-possible`` (0x0404) and
        ``retryable=False``; callers poll to learn how it ended."""
        ...

    async def close(self) -> None: ...
