"""Delegation options (SPEC §3): who pays for a job, parsed and validated.

Pure functions, no database: the intake resolves the names afterwards.

Two sources give the same structure:

* the CUPS backend's argv[5] options string (``-o delegators=alice,bob:2``),
  split by :func:`parse_cups_options` and read by :func:`parse_delegation`;
* the JSON body of ``POST /api/v1/delegations``, read by
  :func:`delegation_from_json`.

Value syntax of each of the four options: a comma-separated list of
``name[:N]``; ``N`` is the copies (the weight) for that name, an integer
1..9999, default 1. Whitespace around names, colons and commas is ignored.
The same name twice in one list adds up its copies (``alice,alice:2`` is
``alice:3``), in the order of first appearance; the sum must stay <= 9999.

Names follow ``billing.accounts.validate_name``: no whitespace, no control
characters, none of ``, : = / \\ " '``, at most 255 characters, kept exactly
as given (no case folding or Unicode normalisation, like the ledger); shared
accounts may be ``Parent/Sub`` (or PaperCut's ``Parent\\Sub``). Anything
malformed raises :class:`DelegationError`, whose message is short (< 200
characters) and ASCII, since it becomes the CUPS job's printer-state-message
and the API's status_message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from billing.enums import StatusReason
from proxy.exceptions import BadRequest, Forbidden

MAX_COPIES = 9999
"""Largest number of copies for one name (after duplicates are added up)."""
MAX_ENTRIES = 200
"""Most parts in one option's list (before duplicates are merged)."""
MAX_VALUE_CHARS = 4096
"""Longest option value, in characters (also checked on the canonical form)."""
MAX_NAME_CHARS = 255
"""Longest single name, in characters (as ``billing.accounts.MAX_NAME``)."""

_MESSAGE_MAX = 199
_QUOTE_MAX = 40
_COPIES_RE = re.compile(r"[0-9]+", re.ASCII)
_FORBIDDEN_IN_NAME = frozenset(",:=\"'")
_SHARED_SEPARATORS = ("/", "\\")


class DelegationKind(StrEnum):
    """The four delegation options; each value is the CUPS option / JSON key."""

    USERS = "delegators"
    GROUPS = "delegator-groups"
    GROUP_MEMBERS = "delegator-group-members"
    SHARED = "shared-accounts"


KEYS: tuple[str, ...] = tuple(kind.value for kind in DelegationKind)
"""The option names that make a job delegated, in canonical order."""


class DelegationError(BadRequest):
    """Malformed delegation options; the job is held as ``delegation-invalid``.

    ``option`` names the offending option (or ``""`` for the whole request),
    ``part`` the offending list element when there is one.
    """

    code = StatusReason.DELEGATION_INVALID.value  # the error code spells the held job's reason

    def __init__(self, message: str, *, option: str = "", part: str | None = None) -> None:
        super().__init__(_safe_message(message))
        self.option = option
        self.part = part

    @property
    def message(self) -> str:
        return str(self.args[0])


class DelegationForbidden(Forbidden):
    """The delegate may not charge whom she named (SPEC §3 "Rights to charge").

    The job is held with ``reason``; the message names what is missing. The
    API answers 403 with it (``POST /delegations``).
    """

    code = StatusReason.DELEGATION_FORBIDDEN.value
    reason = StatusReason.DELEGATION_FORBIDDEN

    def __init__(self, message: str) -> None:
        super().__init__(_safe_message(message))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UnknownDelegate(DelegationForbidden):
    """The delegate (the CUPS user name) is no known, active user."""

    code = StatusReason.USER_UNKNOWN.value
    reason = StatusReason.USER_UNKNOWN


def _safe_message(message: str) -> str:
    """ASCII only, single line, at most 199 characters."""
    text = message.replace("\u2026", "...").encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    if len(text) > _MESSAGE_MAX:
        text = text[: _MESSAGE_MAX - 3] + "..."
    return text


def _quote(text: str) -> str:
    """A short, ASCII-safe rendering of user input for an error message."""
    shown = ascii(text[:_QUOTE_MAX])
    return shown + ("..." if len(text) > _QUOTE_MAX else "")


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Entry:
    """One delegator: a user, group or shared-account name and its copies (weight)."""

    name: str
    copies: int = 1


@dataclass(frozen=True, slots=True)
class DelegationRequest:
    """Who pays for a job, as requested (names not yet resolved)."""

    users: tuple[Entry, ...] = ()
    groups: tuple[Entry, ...] = ()
    group_members: tuple[Entry, ...] = ()
    shared: tuple[Entry, ...] = ()

    def lists(self) -> Iterator[tuple[DelegationKind, tuple[Entry, ...]]]:
        """Each option with its entries, in canonical order (empty lists included)."""
        yield DelegationKind.USERS, self.users
        yield DelegationKind.GROUPS, self.groups
        yield DelegationKind.GROUP_MEMBERS, self.group_members
        yield DelegationKind.SHARED, self.shared

    def to_options(self) -> dict[str, str]:
        """The canonical option form, for storing; :func:`parse_delegation` reads it back.

        Only non-empty lists appear; ``:1`` is left out.
        """
        return {
            kind.value: ",".join(_format_entry(e) for e in entries)
            for kind, entries in self.lists()
            if entries
        }

    def total_copies(self, group_sizes: Mapping[str, int]) -> int:
        """Printed copies: the sum of all weights; group members count copies x members.

        ``group_sizes`` maps each ``delegator-group-members`` group to its number
        of members; a group missing from it raises :class:`DelegationError`.
        """
        total = sum(e.copies for e in (*self.users, *self.groups, *self.shared))
        for entry in self.group_members:
            size = group_sizes.get(entry.name)
            if size is None:
                raise DelegationError(
                    f"{DelegationKind.GROUP_MEMBERS}: unknown group {_quote(entry.name)}",
                    option=DelegationKind.GROUP_MEMBERS,
                    part=entry.name,
                )
            total += entry.copies * max(size, 0)
        return total


def _format_entry(entry: Entry) -> str:
    return entry.name if entry.copies == 1 else f"{entry.name}:{entry.copies}"


# ---------------------------------------------------------------- CUPS options

_SPACE = " \f\n\r\t\v"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def parse_cups_options(options: str) -> dict[str, str]:
    """Split a CUPS options string (a backend's argv[5]) like ``cupsParseOptions``.

    The rules of CUPS 2.4's ``cupsParseOptions``:

    * options are separated by whitespace; ``name=value`` or a boolean
      ``name`` (``"true"``) / ``noname`` (``name`` = ``"false"``);
    * a value runs to the next unescaped whitespace; a backslash escapes the
      next character; a value (or a comma-separated element of it) that
      *starts* with ``'`` or ``"`` is quoted up to the matching quote (quotes
      removed, backslash escapes inside); one that starts with ``{`` is a
      collection kept with its braces up to the matching ``}``;
    * a whole string wrapped in ``{…}`` is unwrapped first; parsing stops at a
      NUL character or at an empty name (a stray ``=``).

    Lenient, like CUPS: it never raises. An unbalanced quote or brace runs to
    the end of the string. Names are compared case-insensitively in CUPS, so
    the keys are returned ASCII-lowercased; a later duplicate replaces the
    earlier value. cupsd itself builds argv[5] with backslash escapes
    (``title=My\\ report``), which this reads back exactly.
    """
    text = options.split("\0", 1)[0]
    if text.startswith("{") and len(text) > 1 and text.endswith("}"):
        text = text[1:-1]
    end = len(text)
    result: dict[str, str] = {}
    i = 0
    while i < end and text[i] in _SPACE:
        i += 1
    while i < end:
        start = i
        while i < end and text[i] not in _SPACE and text[i] != "=":
            i += 1
        if i == start:
            break  # a stray "=": cupsParseOptions stops here
        name = text[start:i]
        while i < end and text[i] in _SPACE:
            i += 1
        if i >= end or text[i] != "=":
            if name[:2].lower() == "no":
                _add_option(result, name[2:], "false")
            else:
                _add_option(result, name, "true")
            continue
        value, i = _parse_value(text, i + 1)
        while i < end and text[i] in _SPACE:
            i += 1
        _add_option(result, name, value)
    return result


def _add_option(result: dict[str, str], name: str, value: str) -> None:
    if name:  # cupsAddOption ignores an empty name
        result[name.translate(_ASCII_LOWER)] = value


def _parse_value(text: str, i: int) -> tuple[str, int]:
    """One option value from ``text[i]``; returns it and the index after it."""
    end = len(text)
    out: list[str] = []
    while i < end and text[i] not in _SPACE:
        ch = text[i]
        if ch == ",":
            out.append(ch)
            i += 1
        elif ch in "'\"":
            i += 1
            while i < end and text[i] != ch:
                if text[i] == "\\" and i + 1 < end:
                    i += 1
                out.append(text[i])
                i += 1
            i += 1  # the closing quote (or past the end)
        elif ch == "{":
            depth = 0
            while i < end:
                c = text[i]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        out.append(c)
                        i += 1
                        break
                elif c == "\\" and i + 1 < end:
                    i += 1
                    c = text[i]
                out.append(c)
                i += 1
        else:
            while i < end and text[i] not in _SPACE:
                if text[i] == "\\" and i + 1 < end:
                    i += 1
                out.append(text[i])
                i += 1
    return "".join(out), min(i, end)


_ESCAPE = set(_SPACE) | set("\\'\"{}")


def format_cups_options(options: Mapping[str, str]) -> str:
    """The inverse of :func:`parse_cups_options`, escaping like cupsd does.

    Names must be non-empty, without whitespace, ``=`` or NUL; values may be
    anything but NUL. Characters that :func:`parse_cups_options` would treat
    specially are backslash-escaped.
    """
    parts = []
    for name, value in options.items():
        if not name or any(c in _SPACE or c in "=\0" for c in name) or "\0" in value:
            raise ValueError(f"cannot encode option {name!r}")
        escaped = "".join("\\" + c if c in _ESCAPE else c for c in value)
        parts.append(f"{name}={escaped}")
    return " ".join(parts)


# ---------------------------------------------------------------- delegation


def parse_delegation(options: Mapping[str, str]) -> DelegationRequest | None:
    """The delegation in a job's options; ``None`` when none of the four keys is there.

    Keys are matched case-insensitively (ASCII). A key that is present with an
    empty or malformed value raises :class:`DelegationError`: the sender meant
    a delegation, so the job must not silently become a personal print.
    """
    found: dict[DelegationKind, str] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            continue
        try:
            kind = DelegationKind(key.translate(_ASCII_LOWER))
        except ValueError:
            continue
        if kind in found:
            raise DelegationError(f"{kind}: option given twice", option=kind)
        if not isinstance(value, str):
            raise DelegationError(f"{kind}: value must be text", option=kind)
        found[kind] = value
    if not found:
        return None
    return _build({kind: _parse_list(kind, value) for kind, value in found.items()})


def _parse_list(kind: DelegationKind, value: str) -> list[Entry]:
    if len(value) > MAX_VALUE_CHARS:
        raise DelegationError(
            f"{kind}: value too long ({len(value)} characters, at most {MAX_VALUE_CHARS})",
            option=kind,
        )
    if not value.strip():
        raise DelegationError(f"{kind}: empty list", option=kind)
    parts = value.split(",")
    if len(parts) > MAX_ENTRIES:
        raise DelegationError(
            f"{kind}: too many entries ({len(parts)}, at most {MAX_ENTRIES})", option=kind
        )
    return [_parse_part(kind, part, n) for n, part in enumerate(parts, 1)]


def _parse_part(kind: DelegationKind, part: str, position: int = 1) -> Entry:
    if not part.strip():
        raise DelegationError(f"{kind}: entry {position} is empty", option=kind, part=part)
    pieces = part.split(":")
    if len(pieces) > 2:
        raise DelegationError(f"{kind}: more than one ':': {_quote(part)}", option=kind, part=part)
    name = _check_name(kind, pieces[0].strip(), part)
    copies = 1
    if len(pieces) == 2:
        text = pieces[1].strip()
        digits = text.lstrip("0")
        if not _COPIES_RE.fullmatch(text) or len(digits) > 4 or not int(digits or "0") >= 1:
            raise DelegationError(
                f"{kind}: copies must be a whole number 1..{MAX_COPIES}: {_quote(part)}",
                option=kind,
                part=part,
            )
        copies = int(digits)
    return Entry(name, copies)


def _check_name(kind: DelegationKind, name: str, part: str) -> str:
    """``name`` if it is valid, else :class:`DelegationError` naming the part.

    The rules of ``billing.accounts.validate_name`` (so a name accepted here
    can exist in the ledger): no whitespace, no control characters (Unicode
    category C), none of ``, : = / \\ " '``; shared accounts may have one
    ``/`` (or PaperCut's ``\\``) between a parent and a sub-account.
    """

    def fail(problem: str) -> DelegationError:
        return DelegationError(f"{kind}: {problem}: {_quote(part)}", option=kind, part=part)

    if not name:
        raise fail("empty name")
    if len(name) > MAX_NAME_CHARS:
        raise fail(f"name longer than {MAX_NAME_CHARS} characters")
    for ch in name:
        if ch.isspace():
            raise fail("whitespace in name")
        if unicodedata.category(ch)[0] == "C":
            raise fail("control character in name")
        if ch in _FORBIDDEN_IN_NAME:
            raise fail(f"{ch!r} in name")
    separators = sum(name.count(sep) for sep in _SHARED_SEPARATORS)
    if separators:
        if kind is not DelegationKind.SHARED:
            raise fail("'/' or '\\' in name (only shared accounts have Parent/Sub)")
        parent, sub = re.split(r"[/\\]", name, maxsplit=1)
        if separators > 1 or not parent or not sub:
            raise fail("shared account must be Name or Parent/Sub")
    return name


def _build(lists: Mapping[DelegationKind, list[Entry]]) -> DelegationRequest:
    """Merge duplicate names, check the limits, and make the request."""
    merged: dict[DelegationKind, tuple[Entry, ...]] = {}
    for kind, entries in lists.items():
        if not entries:
            raise DelegationError(f"{kind}: empty list", option=kind)
        if len(entries) > MAX_ENTRIES:
            raise DelegationError(
                f"{kind}: too many entries ({len(entries)}, at most {MAX_ENTRIES})", option=kind
            )
        copies: dict[str, int] = {}
        for entry in entries:
            total = copies.get(entry.name, 0) + entry.copies
            if total > MAX_COPIES:
                raise DelegationError(
                    f"{kind}: copies for {_quote(entry.name)} add up to more than {MAX_COPIES}",
                    option=kind,
                    part=entry.name,
                )
            copies[entry.name] = total
        result = tuple(Entry(name, n) for name, n in copies.items())
        canonical = ",".join(_format_entry(e) for e in result)
        if len(canonical) > MAX_VALUE_CHARS:
            raise DelegationError(
                f"{kind}: value too long ({len(canonical)} characters, at most {MAX_VALUE_CHARS})",
                option=kind,
            )
        merged[kind] = result
    return DelegationRequest(
        users=merged.get(DelegationKind.USERS, ()),
        groups=merged.get(DelegationKind.GROUPS, ()),
        group_members=merged.get(DelegationKind.GROUP_MEMBERS, ()),
        shared=merged.get(DelegationKind.SHARED, ()),
    )


# ---------------------------------------------------------------- JSON


def delegation_from_json(obj: object) -> DelegationRequest:
    """A delegation from the JSON body of ``POST /api/v1/delegations``.

    ``obj`` is an object whose keys are among the four option names, each
    either the option's string form (``"alice,bob:2"``) or a list whose items
    are ``{"name": "alice", "copies": 2}`` (``copies`` optional, default 1) or
    ``"name[:N]"`` strings. Unknown keys, wrong types, empty lists and an
    object without any of the keys raise :class:`DelegationError`.
    """
    if not isinstance(obj, Mapping):
        raise DelegationError("delegation must be a JSON object")
    lists: dict[DelegationKind, list[Entry]] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise DelegationError("delegation keys must be strings")
        try:
            kind = DelegationKind(key)
        except ValueError:
            raise DelegationError(
                f"unknown delegation key {_quote(key)} (expected one of {', '.join(KEYS)})"
            ) from None
        if isinstance(value, str):
            lists[kind] = _parse_list(kind, value)
        elif isinstance(value, list):
            if len(value) > MAX_ENTRIES:
                raise DelegationError(
                    f"{kind}: too many entries ({len(value)}, at most {MAX_ENTRIES})",
                    option=kind,
                )
            lists[kind] = [_json_item(kind, item, n) for n, item in enumerate(value, 1)]
        else:
            raise DelegationError(f"{kind}: must be a string or a list", option=kind)
    if not lists:
        raise DelegationError(f"no delegators given (expected one of {', '.join(KEYS)})")
    return _build(lists)


def _json_item(kind: DelegationKind, item: object, position: int) -> Entry:
    if isinstance(item, str):
        if len(item) > MAX_VALUE_CHARS:
            raise DelegationError(f"{kind}: entry {position} too long", option=kind)
        return _parse_part(kind, item, position)
    if not isinstance(item, Mapping):
        raise DelegationError(
            f"{kind}: each entry must be a string or an object with name and copies",
            option=kind,
        )
    extra = [k for k in item if k not in ("name", "copies")]
    if extra:
        raise DelegationError(f"{kind}: unknown entry key {_quote(str(extra[0]))}", option=kind)
    name = item.get("name")
    if not isinstance(name, str):
        raise DelegationError(f"{kind}: entry name must be a string", option=kind)
    if len(name) > MAX_VALUE_CHARS:
        raise DelegationError(f"{kind}: entry {position} too long", option=kind)
    copies = item.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or not (1 <= copies <= MAX_COPIES):
        raise DelegationError(
            f"{kind}: copies must be a whole number 1..{MAX_COPIES} for {_quote(name)}",
            option=kind,
            part=name,
        )
    return Entry(_check_name(kind, name.strip(), name), copies)


__all__ = [
    "KEYS",
    "MAX_COPIES",
    "MAX_ENTRIES",
    "MAX_NAME_CHARS",
    "MAX_VALUE_CHARS",
    "DelegationError",
    "DelegationForbidden",
    "DelegationKind",
    "DelegationRequest",
    "Entry",
    "UnknownDelegate",
    "delegation_from_json",
    "format_cups_options",
    "parse_cups_options",
    "parse_delegation",
]
