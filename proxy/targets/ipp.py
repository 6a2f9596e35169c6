"""The IPP target over aiohttp: IPP printers and queues of the local cupsd.

One class serves both ``ipp(s)://`` printers and ``cups://QUEUE``: cupsd
speaks IPP at ``/printers/QUEUE``, over its Unix socket (aiohttp's
``UnixConnector``) or TCP.  Why IPP to cupsd rather than pycups in a thread:
the document streams from the spool file without a thread per job, pycups's
``getJobs`` cannot send ``job-ids``, a pycups ``Connection`` is blocking and
per-thread, and both targets share one tested code path and request counter.

- **Print-Job** streams the document: the body is the encoded IPP header
  followed by the spool file read in ``CHUNK`` pieces, with a Content-Length
  (no chunked encoding needed), so memory does not grow with the job.
- **Get-Jobs** is one request per ``poll`` for all tracked jobs (a printer
  asked about one job alone gets Get-Job-Attributes for it: one request as
  well, and an answer that does not grow with its history).  What the
  servers do with the selectors (verified on CUPS 2.4.2):

  * cupsd honours ``job-ids`` (any printer's jobs, whatever the printer-uri),
    rejects it together with ``which-jobs`` (client-error-conflicting-
    attributes), and fails the whole request with client-error-not-found
    ("Job #N does not exist.") when one id is unknown; ``which-jobs=all`` is
    capped at 500 jobs ("Limiting Get-Jobs response to 500 jobs"), oldest
    first, so with a long history it would miss the newest jobs.  cups://
    targets therefore send ``job-ids``; when a job was purged they drop the
    id named in the error and ask again (only then more than one request).
  * ippeveprinter advertises ``job-ids-supported=true`` but ignores
    ``job-ids``: it answers with the ``which-jobs`` selection (default
    not-completed, so completed jobs would look gone).  ipp(s):// targets
    therefore send ``which-jobs=all`` + ``my-jobs=false`` and keep the
    tracked ids.  A printer that refuses or substitutes ``which-jobs=all``
    (RFC 8011 only has completed/not-completed) is asked twice from then on.
- **Finding a job after a crash** (``find``): Print-Job carries our
  ``job-uuid``.  cupsd keeps a client's ``job-uuid``; ippeveprinter (and most
  printers) replace it with their own, so for ipp(s):// targets the job-name
  also carries a short marker, `` (pp-<12 hex>)``.  ``find`` walks cupsd's
  history in pages with its ``first-job-id``/``limit`` extensions (past the
  500-job cap); a printer is asked with ``which-jobs=all``.  A printer that
  already forgot a completed job (ippeveprinter: after about a minute) cannot
  be asked: ``find`` then answers None.
- **Cancel-Job** by job-id; cupsd under its default policy wants the owner
  or an admin: over the Unix socket we answer its 401 with ``PeerCred`` (our
  uid, as libcups does), which cupsd checks against the socket's credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import pwd
import re
import ssl
import time
from collections.abc import AsyncIterator, Collection, Iterable
from typing import BinaryIO, Literal

import aiohttp
from yarl import URL

from . import ipp_codec as codec
from .base import IppJobState, JobState, PrintRequest, SubmittedJob, job_marker
from .capabilities import REQUESTED as CAPABILITY_ATTRIBUTES
from .capabilities import Capabilities
from .errors import TargetRequestError, http_status_retryable, ipp_status_retryable
from .ipp_codec import Attribute, GroupTag, Operation, StatusCode

CHUNK = 256 * 1024
BUSY_RETRY_AFTER = 2.0  # seconds: a busy printer is usually printing one other job
CAPABILITIES_TTL = 300.0  # seconds; a printer's set-up rarely changes
MAX_RESPONSE = 16 * 1024 * 1024  # Get-Jobs of a long history is far below this
REQUESTED_JOB_ATTRIBUTES = (
    "job-id",
    "job-state",
    "job-state-reasons",
    "job-impressions-completed",
    "job-pages-completed",
    "job-state-message",
    "job-printer-state-message",
    "job-uuid",  # whose job it is (the tracker never trusts a job id alone)
    "job-name",
)
# Print-Job attributes that belong in the operation group, not the job group.
_OPERATION_ATTRIBUTES = frozenset(
    {
        "compression",
        "document-name",
        "document-natural-language",
        "document-charset",
        "ipp-attribute-fidelity",
        "job-impressions",
        "job-k-octets",
        "job-media-sheets",
        "job-password",
        "job-password-encryption",
        "job-mandatory-attributes",
    }
)
_NOT_FOUND_JOB = re.compile(r"#(\d+)")
_IPP_NAME_MAX = 255  # octets, RFC 8011 name(MAX)
FIND_PAGE = 500  # cupsd answers at most 500 jobs per Get-Jobs
_FIND_ATTRIBUTES = ("job-id", "job-uuid", "job-name", "job-uri")

PollStrategy = Literal["job-ids", "which-jobs"]


class _Refused(Exception):
    """The printer refused or substituted ``which-jobs=all``."""


class IppTarget:
    """An IPP printer or cupsd queue; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        printer_uri: str,
        endpoint: URL,
        unix_socket: str | None = None,
        timeout: float = 30.0,
        poll_strategy: PollStrategy = "which-jobs",
        verify_tls: bool = False,
    ) -> None:
        self._uri = uri
        self.printer_uri = printer_uri
        self.endpoint = endpoint
        self.unix_socket = unix_socket
        self.timeout = timeout
        self.poll_strategy: PollStrategy = poll_strategy
        self.verify_tls = verify_tls
        self.requests_made = 0
        # False once a printer refused/substituted which-jobs=all.
        self.which_jobs_all = True
        # cupsd keeps the job-uuid a client sends; printers make their own.
        self.keeps_job_uuid = poll_strategy == "job-ids"
        self._request_ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._capabilities: tuple[float, Capabilities] | None = None

    @classmethod
    def for_printer(cls, uri: str, *, timeout: float, verify_tls: bool = False) -> IppTarget:
        url = URL(uri)
        tls = url.scheme == "ipps"
        # IPP's default port is 631 for both schemes (RFC 7472), unlike HTTP(S).
        endpoint = URL.build(
            scheme="https" if tls else "http",
            host=url.host or "",
            port=url.explicit_port or 631,
            path=url.path or "/",
        )
        return cls(
            uri,
            printer_uri=uri,
            endpoint=endpoint,
            timeout=timeout,
            verify_tls=verify_tls,
            poll_strategy="which-jobs",
        )

    @classmethod
    def for_cups_queue(cls, uri: str, queue: str, *, cups_server: str, timeout: float) -> IppTarget:
        path = f"/printers/{queue}"
        if cups_server.startswith("/"):
            # Over the socket cupsd accepts Host "localhost" and this printer-uri.
            return cls(
                uri,
                printer_uri=str(URL.build(scheme="ipp", host="localhost", path=path)),
                endpoint=URL.build(scheme="http", host="localhost", path=path),
                unix_socket=cups_server,
                timeout=timeout,
                poll_strategy="job-ids",
            )
        host, port_no = _split_host_port(cups_server)
        return cls(
            uri,
            printer_uri=str(URL.build(scheme="ipp", host=host, port=port_no, path=path)),
            endpoint=URL.build(scheme="http", host=host, port=port_no, path=path),
            timeout=timeout,
            poll_strategy="job-ids",
        )

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"<IppTarget {self._uri} via {self.unix_socket or self.endpoint}>"

    # --- operations ------------------------------------------------------

    async def submit(self, req: PrintRequest) -> SubmittedJob:
        operation = [
            Attribute.name_("requesting-user-name", _ipp_name(req.requesting_user)),
            Attribute.name_("job-name", self._job_name(req)),
            Attribute.mime_type("document-format", req.document_format),
        ]
        if req.job_uuid is not None:
            operation.append(Attribute.uri("job-uuid", f"urn:uuid:{req.job_uuid}"))
        job = [Attribute.integer("copies", req.copies)]
        try:
            for name, value in req.job_attributes.items():
                attr = codec.make_attribute(name, value)
                (operation if name in _OPERATION_ATTRIBUTES else job).append(attr)
            header = self._request(Operation.PRINT_JOB, operation, job).encode()
        except (TypeError, ValueError) as exc:
            raise self._error(f"Print-Job: bad job attribute: {exc}", False) from exc
        try:
            document = await asyncio.to_thread(open, req.path, "rb")
        except OSError as exc:
            raise self._error(f"cannot read the document {req.path}: {exc}", False) from exc
        try:
            size = os.fstat(document.fileno()).st_size
            response = await self._post(
                _stream(header, document), content_length=len(header) + size, what="Print-Job"
            )
        finally:
            document.close()
        self._raise_for_status(response, "Print-Job")
        group = response.group(GroupTag.JOB)
        job_id = group.first("job-id") if group is not None else None
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            # The printer may have created the job: do not retry blindly.
            raise self._error("Print-Job succeeded but the response has no job-id", False)
        job_uri = group.first("job-uri") if group is not None else None
        return SubmittedJob(job_id, job_uri if isinstance(job_uri, str) else None)

    async def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """Get-Printer-Attributes, cached for ``CAPABILITIES_TTL`` (``refresh``
        after the printer rejected a job: its set-up may have changed)."""
        now = time.monotonic()
        cached = self._capabilities
        if cached is not None and not refresh and now - cached[0] < CAPABILITIES_TTL:
            return cached[1]
        message = self._request(
            Operation.GET_PRINTER_ATTRIBUTES,
            [
                Attribute.name_("requesting-user-name", _local_user()),
                Attribute.keyword("requested-attributes", *CAPABILITY_ATTRIBUTES),
            ],
        )
        response = await self._post(message.encode(), what="Get-Printer-Attributes")
        self._raise_for_status(response, "Get-Printer-Attributes")
        group = response.group(GroupTag.PRINTER)
        if group is None:
            raise self._error("Get-Printer-Attributes: no printer attributes in the answer", True)
        found = Capabilities.from_group(group)
        if self.poll_strategy == "job-ids":  # a cupsd queue (cups://)
            found = dataclasses.replace(found, passes_options=True)
        self._capabilities = (now, found)
        return found

    async def find(self, req: PrintRequest) -> SubmittedJob | None:
        if req.job_uuid is None:
            return None
        want_uuid, want_name = f"urn:uuid:{req.job_uuid}", self._job_name(req)
        async for job in self.history():
            if self.keeps_job_uuid and job.first("job-uuid") == want_uuid:
                return _submitted(job)
            if not self.keeps_job_uuid and job.first("job-name") == want_name:
                return _submitted(job)
        return None

    async def history(self) -> AsyncIterator[codec.Group]:
        """Every job the target still knows (``job-id``, ``job-uuid``,
        ``job-name``, ``job-uri``); cupsd's whole history, a page at a time."""
        if self.keeps_job_uuid:
            first = 1
            while True:
                jobs = await self._find_page(
                    [
                        Attribute.keyword("which-jobs", "all"),
                        Attribute.integer("first-job-id", first),
                        Attribute.integer("limit", FIND_PAGE),
                    ]
                )
                for job in jobs:
                    yield job
                ids = [i for job in jobs if isinstance(i := job.first("job-id"), int)]
                if len(jobs) < FIND_PAGE or not ids:
                    return
                first = max(ids) + 1
        found: list[codec.Group] | None = None
        if self.which_jobs_all:
            try:
                found = await self._find_page(_which_jobs("all"))
            except _Refused:
                self.which_jobs_all = False
        if found is None:
            found = [
                *await self._find_page(_which_jobs("not-completed")),
                *await self._find_page(_which_jobs("completed")),
            ]
        for job in found:
            yield job

    async def _find_page(self, selectors: list[Attribute]) -> list[codec.Group]:
        message = self._request(
            Operation.GET_JOBS,
            [
                Attribute.name_("requesting-user-name", _local_user()),
                *selectors,
                Attribute.keyword("requested-attributes", *_FIND_ATTRIBUTES),
            ],
        )
        response = await self._post(message.encode(), what="Get-Jobs")
        if _refused(response, "which-jobs"):
            raise _Refused
        self._raise_for_status(response, "Get-Jobs")
        return list(response.groups_of(GroupTag.JOB))

    def _job_name(self, req: PrintRequest) -> str:
        """The job-name sent: for printers that replace our job-uuid, with a marker."""
        if req.job_uuid is None or self.keeps_job_uuid:
            return _ipp_name(req.job_name)
        marker = job_marker(req.job_uuid)
        return _ipp_name(req.job_name, reserve=len(marker)) + marker

    async def poll(self, job_ids: Collection[int]) -> dict[int, JobState]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        if self.poll_strategy == "job-ids":
            return await self._poll_job_ids(wanted)
        if len(wanted) == 1:
            # One job (usually one just sent, followed eagerly): Get-Job-Attributes is
            # one request too, and its answer does not grow with the printer's history.
            return await self._poll_one(next(iter(wanted)))
        return await self._poll_which_jobs(wanted)

    async def cancel(self, job_id: int) -> None:
        message = self._request(
            Operation.CANCEL_JOB,
            [
                Attribute.integer("job-id", job_id),
                Attribute.name_("requesting-user-name", _local_user()),
            ],
        )
        response = await self._post(message.encode(), what="Cancel-Job", peer_cred=True)
        self._raise_for_status(response, f"Cancel-Job {job_id}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- Get-Jobs strategies ---------------------------------------------

    def _get_jobs(self, selectors: Iterable[Attribute]) -> codec.Message:
        return self._request(
            Operation.GET_JOBS,
            [
                Attribute.name_("requesting-user-name", _local_user()),
                *selectors,
                Attribute.keyword("requested-attributes", *REQUESTED_JOB_ATTRIBUTES),
            ],
        )

    async def _poll_job_ids(self, wanted: set[int]) -> dict[int, JobState]:
        remaining = set(wanted)
        while remaining:
            message = self._get_jobs([Attribute.integer("job-ids", *sorted(remaining))])
            response = await self._post(message.encode(), what="Get-Jobs")
            if response.code == StatusCode.CLIENT_ERROR_NOT_FOUND:
                # cupsd names the first unknown job; that one is gone, ask for the rest.
                match = _NOT_FOUND_JOB.search(response.status_message or "")
                gone = int(match[1]) if match else None
                if gone not in remaining:
                    return await self._poll_which_jobs(wanted)
                remaining.discard(gone)
                continue
            self._raise_for_status(response, "Get-Jobs")
            return _job_states(response, wanted)
        return {}

    async def _poll_one(self, job_id: int) -> dict[int, JobState]:
        message = self._request(
            Operation.GET_JOB_ATTRIBUTES,
            [
                Attribute.integer("job-id", job_id),
                Attribute.name_("requesting-user-name", _local_user()),
                Attribute.keyword("requested-attributes", *REQUESTED_JOB_ATTRIBUTES),
            ],
        )
        response = await self._post(message.encode(), what="Get-Job-Attributes")
        if response.code == StatusCode.CLIENT_ERROR_NOT_FOUND:
            # No such job, or no such printer (a wrong path): Get-Jobs tells them apart.
            return await self._poll_which_jobs({job_id})
        self._raise_for_status(response, "Get-Job-Attributes")
        return _job_states(response, {job_id})

    async def _poll_which_jobs(self, wanted: set[int]) -> dict[int, JobState]:
        kinds = ("all",) if self.which_jobs_all else ("not-completed", "completed")
        states: dict[int, JobState] = {}
        for kind in kinds:
            message = self._get_jobs(
                [Attribute.keyword("which-jobs", kind), Attribute.boolean("my-jobs", False)]
            )
            response = await self._post(message.encode(), what="Get-Jobs")
            if kind == "all" and _refused(response, "which-jobs"):
                self.which_jobs_all = False
                return await self._poll_which_jobs(wanted)
            self._raise_for_status(response, "Get-Jobs")
            states.update(_job_states(response, wanted))
        return states

    # --- transport -------------------------------------------------------

    def _request(
        self,
        operation: int,
        operation_attrs: Iterable[Attribute],
        job_attrs: Iterable[Attribute] = (),
    ) -> codec.Message:
        return codec.request(
            operation, next(self._request_ids), self.printer_uri, operation_attrs, job_attrs
        )

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # Created lazily: open_target() may run outside the event loop.
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self.unix_socket is not None:
                connector = aiohttp.UnixConnector(path=self.unix_socket)
            else:
                ssl_ctx: ssl.SSLContext | bool = True
                if self.endpoint.scheme == "https" and not self.verify_tls:
                    ssl_ctx = False  # printers use self-signed certificates
                connector = aiohttp.TCPConnector(ssl=ssl_ctx)
            # No total timeout: a big upload takes as long as it takes.  Connect
            # and each read (including the wait for the response) are bounded.
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.timeout,
                sock_connect=self.timeout,
                sock_read=self.timeout,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def _post(
        self,
        body: bytes | AsyncIterator[bytes],
        *,
        what: str,
        content_length: int | None = None,
        peer_cred: bool = False,
    ) -> codec.Message:
        headers = {"Content-Type": "application/ipp", "Accept": "application/ipp"}
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        session = self._session_for_loop()
        try:
            self.requests_made += 1
            async with session.post(self.endpoint, data=body, headers=headers) as resp:
                retry_auth = (
                    resp.status == 401
                    and peer_cred
                    and self.unix_socket is not None
                    and isinstance(body, bytes)
                )
                if not retry_auth:
                    return await self._read(resp, what)
            # cupsd wants the job's owner or an admin: prove our uid as libcups
            # does; cupsd checks the name against the socket's peer credentials.
            headers["Authorization"] = f"PeerCred {_local_user()}"
            self.requests_made += 1
            async with session.post(self.endpoint, data=body, headers=headers) as resp:
                return await self._read(resp, what)
        except TargetRequestError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._error(f"{what}: no answer within {self.timeout} s", True) from exc
        except aiohttp.ClientError as exc:
            raise self._error(f"{what}: {_describe(exc)}", True) from exc
        except ConnectionError as exc:  # a reset aiohttp did not wrap
            raise self._error(f"{what}: {exc}", True) from exc
        except OSError as exc:  # reading the document mid-upload
            raise self._error(f"{what}: {exc}", False) from exc

    async def _read(self, resp: aiohttp.ClientResponse, what: str) -> codec.Message:
        if resp.status != 200:
            text = ""
            if resp.content_type == "text/plain":  # cupsd's error pages are HTML: skip
                text = (await resp.content.read(200)).decode("utf-8", "replace").strip()
            hint = " (authentication required)" if resp.status in (401, 403) else ""
            if resp.status == 426:
                hint = " (the printer requires TLS: use ipps://)"
            raise TargetRequestError(
                f"{what}: HTTP {resp.status} {resp.reason or ''}{hint} {text[:120]}".strip(),
                retryable=http_status_retryable(resp.status),
                target=self._uri,
                http_status=resp.status,
                retry_after=_retry_after(resp.headers.get("Retry-After")),
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > MAX_RESPONSE:
                raise self._error(f"{what}: response larger than {MAX_RESPONSE} bytes", False)
        try:
            return codec.decode(body)
        except codec.DecodeError as exc:
            kind = resp.headers.get("Content-Type", "?")
            raise self._error(f"{what}: not an IPP response ({kind}): {exc}", False) from exc

    def _raise_for_status(self, response: codec.Message, what: str) -> None:
        if response.is_successful:
            return
        detail = response.status_message or ""
        unsupported = response.group(GroupTag.UNSUPPORTED)
        if unsupported is not None and unsupported.attributes:
            names = ", ".join(unsupported.attributes)
            detail = f"{detail} (unsupported: {names})".strip()
        raise TargetRequestError(
            f"{what}: {codec.status_name(response.code)}{': ' + detail if detail else ''}",
            retryable=ipp_status_retryable(response.code),
            target=self._uri,
            ipp_status=response.code,
            retry_after=BUSY_RETRY_AFTER if response.code == StatusCode.SERVER_ERROR_BUSY else None,
        )

    def _error(self, message: str, retryable: bool) -> TargetRequestError:
        return TargetRequestError(message, retryable=retryable, target=self._uri)


def _split_host_port(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port); IPP's port is 631."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":")
    elif server.count(":") == 1:
        host, _, port = server.partition(":")
    else:
        host, port = server, ""
    if port and not port.isdigit():
        raise TargetRequestError(f"bad CUPS server {server!r}", retryable=False)
    return host, int(port) if port else 631


async def _stream(header: bytes, document: BinaryIO) -> AsyncIterator[bytes]:
    """The request body: IPP header, then the document in pieces (read off the loop)."""
    yield header
    while chunk := await asyncio.to_thread(document.read, CHUNK):
        yield chunk


def _job_states(response: codec.Message, wanted: Collection[int]) -> dict[int, JobState]:
    states: dict[int, JobState] = {}
    for group in response.groups_of(GroupTag.JOB):
        job_id = group.first("job-id")
        state = group.first("job-state")
        if not isinstance(job_id, int) or job_id not in wanted or not isinstance(state, int):
            continue
        try:
            job_state = IppJobState(state)
        except ValueError:
            continue  # not a job-state value: skip rather than guess
        reasons = group.get("job-state-reasons")
        message = group.first("job-state-message") or group.first("job-printer-state-message")
        states[job_id] = JobState(
            state=job_state,
            reasons=tuple(str(r) for r in reasons.values if isinstance(r, str)) if reasons else (),
            impressions_completed=_int_or_none(group.first("job-impressions-completed")),
            pages_completed=_int_or_none(group.first("job-pages-completed")),
            message=message.text
            if isinstance(message, codec.LangString)
            else (message if isinstance(message, str) and message else None),
            job_uuid=_text_or_none(group.first("job-uuid")),
            job_name=_text_or_none(group.first("job-name")),
        )
    return states


def _refused(response: codec.Message, attribute: str) -> bool:
    """The printer rejected or substituted ``attribute`` (it lists it as unsupported)."""
    if response.code not in (
        StatusCode.SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED,
        StatusCode.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
    ):
        return False
    unsupported = response.group(GroupTag.UNSUPPORTED)
    return unsupported is not None and attribute in unsupported


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not worth parsing here)."""
    if header is None or not header.strip().isdigit():
        return None
    return float(header.strip())


def _text_or_none(value: codec.Value | None) -> str | None:
    if isinstance(value, codec.LangString):
        return value.text
    return value if isinstance(value, str) else None


def _int_or_none(value: codec.Value | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ipp_name(text: str, reserve: int = 0) -> str:
    """At most 255 (minus ``reserve``) UTF-8 octets, cut on a character boundary."""
    raw = text.encode("utf-8")[: _IPP_NAME_MAX - reserve]
    return raw.decode("utf-8", "ignore")


def _which_jobs(kind: str) -> list[Attribute]:
    return [Attribute.keyword("which-jobs", kind), Attribute.boolean("my-jobs", False)]


def _submitted(job: codec.Group) -> SubmittedJob | None:
    job_id = job.first("job-id")
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        return None
    job_uri = job.first("job-uri")
    return SubmittedJob(job_id, job_uri if isinstance(job_uri, str) else None)


def _local_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = ["CHUNK", "REQUESTED_JOB_ATTRIBUTES", "IppTarget", "PollStrategy"]
