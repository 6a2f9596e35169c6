"""CUPS backend of the PaperCut simulator: what reaches a "PaperCut-managed" queue.

Standard library only: ``proxy.devkit.papercut.simulator.install_papercut_backend``
copies this file to ``<ServerBin>/backend/papercut-sim`` (mode 0700, so cupsd
runs it as root) behind a ``#!python -IS`` line, like proxyprint's own backend.
The simulator imports ``record_usage`` from here too, so a job recorded by a
test without cupsd is recorded exactly as one that went through CUPS.

Device URI: ``papercut-sim:/abs/path/sim.db?server=SERVER&printer=NAME``
(the path percent-encoded; ``server`` defaults to ``localhost``, ``printer``
to the CUPS queue name). The database must exist (the simulator or the
installer creates its schema): a missing one stops the queue (exit 4) rather
than losing jobs; a busy one makes CUPS retry the job (exit 6).

Called as ``papercut-sim job-id user title copies options [file]``, it reads
the document (the file, or stdin when the queue has filters), counts pages
crudely but deterministically (a PDF: the ``/Type /Page`` objects, not
``/Pages``; a PDF whose pages sit in compressed object streams counts as 1;
anything else is 1 page) and writes one ``tbl_printer_usage_log`` row, as
PaperCut does for a job it tracks:

* ``document_name`` = the CUPS job title (``argv[3]``), ``copies`` =
  ``argv[4]``, ``total_pages`` = pages x copies (printed pages, as in
  PaperCut), ``usage_cost`` = pages x copies x the printer's page cost
  (the colour cost for a colour job when one is set; 0 when none is set);
* the user (``argv[2]``, lower-cased as PaperCut does) and the printer are
  created on first use, as PaperCut adds both when they first print;
* a normal queue: ``printed='Y'`` at once; a hold/release queue:
  ``printed='N'``, not cancelled, no denied reason: held until a simulator
  control releases, cancels, denies or expires it; a disabled printer:
  denied (``usage_allowed='N'``, ``denied_reason='PRINTER_DISABLED'``).
* when a held job's row appears: the documents found do not say whether
  PaperCut logs a held job at submission or only when the hold ends, so the
  simulator does either (``sim_setting`` ``held_rows``: ``submission``, the
  default, or ``end``). With ``end`` the held job's row is kept with
  ``job_type='HELD'`` (a simulator-only value: readers of PRINT rows do not
  see it) and becomes a ``PRINT`` row, dated then, when the hold ends.

A printed job is charged as PaperCut charges it: its ``usage_cost`` is taken
from the account in ``charged_to_account_id`` (unconditionally), which is the
printing user's built-in personal account unless the printer is configured
to charge a shared account (``tbl_printer.charge_account_id``, the
simulator's model of that printer setting). A held job is charged when it is
released (``simdb.release``), a refund gives it back. PaperCut keeps a job's
charge in the print log, not in ``tbl_account_transaction``: so does the
simulator (a refund is a transaction). proxyprint's queues charge its clearing
shared account, from which the delegators are charged (SPEC §8: no double
charge). The backend exits 0 once the row is written; the hold lives in the
database, not in CUPS.
"""

import datetime
import os
import re
import sqlite3
import sys
from decimal import Decimal
from typing import BinaryIO
from urllib.parse import parse_qs, quote, unquote

BACKEND_NAME = "papercut-sim"
DEFAULT_SERVER = "localhost"

# cups/backend.h
CUPS_BACKEND_OK = 0
CUPS_BACKEND_FAILED = 1
CUPS_BACKEND_STOP = 4
CUPS_BACKEND_RETRY = 6

_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9_])")
_OVERLAP = 64  # longer than any match plus the byte after it
_CHUNK = 1 << 20
_COLOR_OPTIONS = frozenset(
    {
        "print-color-mode=color",
        "colormodel=color",
        "colormodel=rgb",
        "colormodel=cmyk",
        "output-mode=color",
    }
)
_DUPLEX_OPTIONS = frozenset(
    {
        "sides=two-sided-long-edge",
        "sides=two-sided-short-edge",
        "duplex=duplexnotumble",
        "duplex=duplextumble",
    }
)


def device_uri(db_path: object, printer: str, server: str = DEFAULT_SERVER) -> str:
    """``papercut-sim:/path?server=S&printer=P`` for a queue of the simulated PaperCut."""
    query = "server=" + quote(str(server), safe="") + "&printer=" + quote(str(printer), safe="")
    return BACKEND_NAME + ":" + quote(str(db_path)) + "?" + query


def parse_device_uri(uri: str, default_printer: str) -> tuple[str, str, str]:
    """(db path, server, printer) from a device URI; ValueError when it is not ours."""
    prefix = BACKEND_NAME + ":"
    if not uri.startswith(prefix):
        raise ValueError("device URI " + repr(uri) + " does not start with " + prefix)
    path, _, query = uri[len(prefix) :].partition("?")
    path = unquote(path)
    if path.startswith("//"):  # papercut-sim:///abs/path
        path = path[2:]
    if not path.startswith("/"):
        raise ValueError("device URI " + repr(uri) + " does not name an absolute database path")
    params = parse_qs(query)
    server = params.get("server", [DEFAULT_SERVER])[0] or DEFAULT_SERVER
    printer = params.get("printer", [default_printer])[0] or default_printer
    if not printer:
        raise ValueError("device URI " + repr(uri) + " names no printer and PRINTER is unset")
    return path, server, printer


def count_pages(stream: BinaryIO, chunk_size: int = _CHUNK) -> int:
    """Pages of a document read from a binary stream: PDF page objects, else 1."""
    head = stream.read(max(chunk_size, 16))
    if head.lstrip()[:5] != b"%PDF-":
        while stream.read(chunk_size):  # drain, so a pipe's writer is not cut off
            pass
        return 1
    pages = 0
    buffer = head
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        buffer += chunk
        # Count matches that start before the overlap; the rest are counted
        # with the next chunk, so none is counted twice or split.
        cut = max(len(buffer) - _OVERLAP, 0)
        pages += sum(1 for m in _PAGE.finditer(buffer) if m.start() < cut)
        buffer = buffer[cut:]
    pages += sum(1 for _ in _PAGE.finditer(buffer))
    return max(pages, 1)


def job_flags(options: str) -> tuple[bool, bool]:
    """(colour, duplex) from the CUPS options string (argv[5])."""
    words = {w.lower() for w in options.split()}
    return bool(words & _COLOR_OPTIONS), bool(words & _DUPLEX_OPTIONS)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(sep=" ")


def _insert(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> int:
    row_id = conn.execute(sql, params).lastrowid
    if row_id is None:  # pragma: no cover - an INSERT always sets it
        raise sqlite3.DatabaseError("INSERT without a row id")
    return row_id


def _held_rows(conn: sqlite3.Connection) -> str:
    """When a held job's row is logged: ``submission`` (default) or ``end``."""
    try:
        row = conn.execute("SELECT value FROM sim_setting WHERE name = 'held_rows'").fetchone()
    except sqlite3.OperationalError:  # a database made before the setting existed
        return "submission"
    return str(row[0]) if row is not None else "submission"


def ensure_user(conn: sqlite3.Connection, user_name: str, now: str) -> tuple[int, int]:
    """(user_id, built-in account_id) of a user, created as PaperCut does on first print."""
    row = conn.execute(
        "SELECT user_id FROM tbl_user WHERE user_name = ? AND deleted = 'N'", (user_name,)
    ).fetchone()
    if row is None:
        user_id = _insert(
            conn, "INSERT INTO tbl_user (user_name, created_date) VALUES (?, ?)", (user_name, now)
        )
    else:
        user_id = int(row[0])
    row = conn.execute(
        "SELECT account_id FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
        " AND personal_name = '' AND deleted = 'N'",
        (user_id,),
    ).fetchone()
    if row is not None:
        return user_id, int(row[0])
    account_id = _insert(
        conn,
        "INSERT INTO tbl_account (account_type, account_name, user_id, balance, created_date)"
        " VALUES ('USER', ?, ?, '0', ?)",
        (user_name, user_id, now),
    )
    return user_id, account_id


def charge_account(conn: sqlite3.Connection, account_id: int, amount: Decimal) -> None:
    """Take ``amount`` from an account's balance (a job's charge; negative: a refund)."""
    row = conn.execute(
        "SELECT balance FROM tbl_account WHERE account_id = ?", (account_id,)
    ).fetchone()
    if row is None:  # pragma: no cover - the usage log references it
        raise sqlite3.DatabaseError("no account " + str(account_id))
    balance = Decimal(str(row[0])) - amount
    conn.execute(
        "UPDATE tbl_account SET balance = ? WHERE account_id = ?", (str(balance), account_id)
    )


def record_usage(
    conn: sqlite3.Connection,
    *,
    server: str,
    printer: str,
    user: str,
    document_name: str,
    pages: int,
    copies: int,
    color: bool = False,
    duplex: bool = False,
    cups_job_id: int | None = None,
) -> int:
    """Write one tbl_printer_usage_log row (one transaction); returns its id."""
    now = _now()
    pages = max(int(pages), 1)
    copies = max(int(copies), 1)
    conn.execute("BEGIN IMMEDIATE")
    try:
        user_id, account_id = ensure_user(conn, user.lower(), now)
        row = conn.execute(
            "SELECT printer_id, default_cost, color_cost, hold_release, disabled,"
            " charge_account_id FROM tbl_printer"
            " WHERE server_name = ? AND printer_name = ? AND deleted = 'N'",
            (server, printer),
        ).fetchone()
        charged_id = account_id
        if row is None:
            printer_id = _insert(
                conn,
                "INSERT INTO tbl_printer (server_name, printer_name, display_name, created_date)"
                " VALUES (?, ?, ?, ?)",
                (server, printer, printer, now),
            )
            default_cost, color_cost, hold, disabled = "0", "", "N", "N"
        else:
            printer_id, default_cost, color_cost, hold, disabled, shared_id = row
            if shared_id is not None:
                charged_id = int(shared_id)
        page_cost = Decimal(color_cost if color and color_cost else default_cost or "0")
        total = pages * copies
        allowed = disabled != "Y"
        printed = allowed and hold != "Y"
        job_type = "HELD" if allowed and not printed and _held_rows(conn) == "end" else "PRINT"
        usage_id = _insert(
            conn,
            "INSERT INTO tbl_printer_usage_log (usage_date, used_by_user_id,"
            " charged_to_account_id, assoc_with_account_id, printer_id, document_name,"
            " total_pages, total_color_pages, copies, duplex, usage_cost, usage_allowed,"
            " printed, cancelled, refunded, denied_reason, job_type, cups_job_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'N', 'N', ?, ?, ?)",
            (
                now,
                user_id,
                charged_id,
                account_id,
                printer_id,
                document_name,
                total,
                total if color else 0,
                copies,
                "Y" if duplex else "N",
                str(page_cost * total),
                "Y" if allowed else "N",
                "Y" if printed else "N",
                "" if allowed else "PRINTER_DISABLED",
                job_type,
                cups_job_id,
            ),
        )
        if printed:
            charge_account(conn, charged_id, page_cost * total)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return usage_id


def _connect(path: str) -> sqlite3.Connection:
    """An existing database only: mode=rw never creates an empty file."""
    conn = sqlite3.connect(
        "file:" + quote(path) + "?mode=rw", uri=True, timeout=30, isolation_level=None
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        print("network " + BACKEND_NAME + ' "Unknown" "PaperCut simulator (proxyprint test kit)"')
        return CUPS_BACKEND_OK
    if len(argv) not in (6, 7):
        _log("ERROR: usage: " + BACKEND_NAME + " job-id user title copies options [file]")
        return CUPS_BACKEND_FAILED
    args = [os.fsencode(a).decode("utf-8", "replace") for a in argv]
    job_id, user, title, copies_arg, options = args[1:6]
    try:
        db_path, server, printer = parse_device_uri(
            os.environ.get("DEVICE_URI", ""), os.environ.get("PRINTER", "")
        )
    except ValueError as exc:
        _log("ERROR: " + str(exc))
        return CUPS_BACKEND_STOP
    try:
        copies = max(int(copies_arg), 1)
    except ValueError:
        copies = 1
    try:
        if len(argv) == 7:
            with open(argv[6], "rb") as fh:
                pages = count_pages(fh)
        else:
            pages = count_pages(sys.stdin.buffer)
    except OSError as exc:
        _log("ERROR: cannot read the document: " + str(exc))
        return CUPS_BACKEND_RETRY
    color, duplex = job_flags(options)
    try:
        conn = _connect(db_path)
        try:
            record_usage(
                conn,
                server=server,
                printer=printer,
                user=user,
                document_name=title,
                pages=pages,
                copies=copies,
                color=color,
                duplex=duplex,
                cups_job_id=int(job_id) if job_id.isdigit() else None,
            )
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            _log("ERROR: PaperCut simulator database busy, retrying: " + text)
            return CUPS_BACKEND_RETRY
        _log("ERROR: PaperCut simulator database " + db_path + ": " + text)
        return CUPS_BACKEND_STOP
    except sqlite3.DatabaseError as exc:
        _log("ERROR: PaperCut simulator database " + db_path + ": " + str(exc))
        return CUPS_BACKEND_STOP
    _log(
        "INFO: PaperCut simulator logged "
        + str(pages)
        + " page(s) x "
        + str(copies)
        + " on "
        + server
        + "\\"
        + printer
    )
    return CUPS_BACKEND_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
