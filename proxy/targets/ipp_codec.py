"""IPP/1.1-2.x message encoding and decoding (RFC 8010), typed and small.

Hand-written, not pyipp (so pyipp is no dependency): pyipp drops attributes
missing from its tag map, has no collections, and builds the document in memory.

Why not pyipp's ``serializer``/``parser`` (pyipp 0.17, checked):

- its serializer only encodes attributes listed in ``tags.ATTRIBUTE_TAG_MAP``
  and silently drops the rest: ``job-ids``, ``media-col``, ``page-ranges``,
  ``print-color-mode``, ``output-bin``... would vanish from our requests;
- it always appends ``data`` to the message in memory, and its client reads the
  whole request into memory: Print-Job must stream the document;
- its parser reads tags and lengths as *signed* numbers, keeps no value tags
  (``no-value``/``unknown`` come back as ``""``), merges every group it does not
  know into the previous one, and cannot parse subscription/event groups.

So we keep our own codec: the header (version, operation or status, request
id), delimiter-separated attribute groups in order (several job groups in a
Get-Jobs response stay separate), 1setOf values, collections (nested), the
out-of-band values, and the end tag.  The document, if any, is not part of a
``Message``: the transport streams it after ``encode()``'s bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import NamedTuple, TypeAlias

DEFAULT_VERSION = (2, 0)


class DecodeError(ValueError):
    """The bytes are not a well-formed IPP message."""


class GroupTag(IntEnum):
    """Delimiter tags (RFC 8010 §3.5.1)."""

    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    RESOURCE = 0x08
    DOCUMENT = 0x09
    SYSTEM = 0x0A


class ValueTag(IntEnum):
    """Value tags (RFC 8010 §3.5.2); 0x10-0x1F are out-of-band."""

    UNSUPPORTED = 0x10
    DEFAULT = 0x11
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    OCTET_STRING = 0x30
    DATE_TIME = 0x31
    RESOLUTION = 0x32
    RANGE = 0x33
    BEGIN_COLLECTION = 0x34
    TEXT_WITH_LANGUAGE = 0x35
    NAME_WITH_LANGUAGE = 0x36
    END_COLLECTION = 0x37
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    LANGUAGE = 0x48
    MIME_TYPE = 0x49
    MEMBER_NAME = 0x4A
    EXTENSION = 0x7F


class Operation(IntEnum):
    PRINT_JOB = 0x0002
    VALIDATE_JOB = 0x0004
    CREATE_JOB = 0x0005
    SEND_DOCUMENT = 0x0006
    CANCEL_JOB = 0x0008
    GET_JOB_ATTRIBUTES = 0x0009
    GET_JOBS = 0x000A
    GET_PRINTER_ATTRIBUTES = 0x000B
    HOLD_JOB = 0x000C
    RELEASE_JOB = 0x000D


class StatusCode(IntEnum):
    """The status codes we act on; any other value is kept as a plain ``int``."""

    SUCCESSFUL_OK = 0x0000
    SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED = 0x0001
    SUCCESSFUL_OK_CONFLICTING = 0x0002
    CLIENT_ERROR_BAD_REQUEST = 0x0400
    CLIENT_ERROR_FORBIDDEN = 0x0401
    CLIENT_ERROR_NOT_AUTHENTICATED = 0x0402
    CLIENT_ERROR_NOT_AUTHORIZED = 0x0403
    CLIENT_ERROR_NOT_POSSIBLE = 0x0404
    CLIENT_ERROR_TIMEOUT = 0x0405
    CLIENT_ERROR_NOT_FOUND = 0x0406
    CLIENT_ERROR_GONE = 0x0407
    CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE = 0x0408
    CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED = 0x040A
    CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED = 0x040B
    CLIENT_ERROR_CONFLICTING_ATTRIBUTES = 0x040D
    CLIENT_ERROR_DOCUMENT_FORMAT_ERROR = 0x0410
    SERVER_ERROR_INTERNAL_ERROR = 0x0500
    SERVER_ERROR_OPERATION_NOT_SUPPORTED = 0x0501
    SERVER_ERROR_SERVICE_UNAVAILABLE = 0x0502
    SERVER_ERROR_VERSION_NOT_SUPPORTED = 0x0503
    SERVER_ERROR_DEVICE_ERROR = 0x0504
    SERVER_ERROR_TEMPORARY_ERROR = 0x0505
    SERVER_ERROR_NOT_ACCEPTING_JOBS = 0x0506
    SERVER_ERROR_BUSY = 0x0507
    SERVER_ERROR_JOB_CANCELED = 0x0508


def status_name(code: int) -> str:
    """``client-error-not-found`` style name, or ``0x....`` for unknown codes."""
    try:
        return StatusCode(code).name.lower().replace("_", "-")
    except ValueError:
        return f"0x{code:04x}"


class Resolution(NamedTuple):
    x: int
    y: int
    units: int  # 3 = dots per inch, 4 = dots per centimetre


class IntRange(NamedTuple):
    lower: int
    upper: int


class LangString(NamedTuple):
    """textWithLanguage / nameWithLanguage."""

    text: str
    language: str


class OutOfBand(NamedTuple):
    """``unsupported``, ``unknown``, ``no-value``... (the tag is the value)."""

    tag: int


Value: TypeAlias = (
    "int | bool | str | bytes | datetime | Resolution | IntRange | LangString"
    " | OutOfBand | Collection"
)
Collection: TypeAlias = "dict[str, Attribute]"
# What callers may pass for an attribute: a value, several, a plain mapping
# for a collection, or a ready ``Attribute``.
AttributeInput: TypeAlias = "Value | Sequence[Value] | Mapping[str, AttributeInput] | Attribute"


@dataclass(frozen=True)
class Attribute:
    """One attribute: name, the value tag of its values, and 1..n values.

    ``tag`` is the first value's tag.  A 1setOf mixing tags (rare) keeps each
    value's Python type; re-encoded, values of another Python type than the
    first get their tag inferred, so ``keyword | name`` sets come back as keywords.
    """

    name: str
    tag: int
    values: tuple[Value, ...]

    @property
    def value(self) -> Value:
        return self.values[0]

    # Constructors for the request side: the tag says how to encode.
    @classmethod
    def integer(cls, name: str, *values: int) -> Attribute:
        return cls(name, ValueTag.INTEGER, values)

    @classmethod
    def enum(cls, name: str, *values: int) -> Attribute:
        return cls(name, ValueTag.ENUM, values)

    @classmethod
    def boolean(cls, name: str, *values: bool) -> Attribute:
        return cls(name, ValueTag.BOOLEAN, values)

    @classmethod
    def keyword(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.KEYWORD, values)

    @classmethod
    def name_(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.NAME, values)

    @classmethod
    def text(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.TEXT, values)

    @classmethod
    def uri(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.URI, values)

    @classmethod
    def charset(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.CHARSET, values)

    @classmethod
    def language(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.LANGUAGE, values)

    @classmethod
    def mime_type(cls, name: str, *values: str) -> Attribute:
        return cls(name, ValueTag.MIME_TYPE, values)


@dataclass
class Group:
    """An attribute group; attribute order is kept (it matters on the wire)."""

    tag: int
    attributes: dict[str, Attribute] = field(default_factory=dict)

    def add(self, attribute: Attribute) -> Group:
        self.attributes[attribute.name] = attribute
        return self

    def get(self, name: str) -> Attribute | None:
        return self.attributes.get(name)

    def first(self, name: str) -> Value | None:
        attr = self.attributes.get(name)
        return attr.values[0] if attr is not None and attr.values else None

    def __contains__(self, name: object) -> bool:
        return name in self.attributes


@dataclass
class Message:
    """A request (``code`` = operation-id) or a response (``code`` = status-code)."""

    code: int
    request_id: int
    groups: list[Group] = field(default_factory=list)
    version: tuple[int, int] = DEFAULT_VERSION

    def groups_of(self, tag: int) -> Iterator[Group]:
        return (g for g in self.groups if g.tag == tag)

    def group(self, tag: int) -> Group | None:
        return next(self.groups_of(tag), None)

    @property
    def operation_attributes(self) -> Group:
        return self.group(GroupTag.OPERATION) or Group(GroupTag.OPERATION)

    @property
    def status_message(self) -> str | None:
        value = self.operation_attributes.first("status-message")
        if isinstance(value, LangString):
            return value.text
        return value if isinstance(value, str) else None

    @property
    def is_successful(self) -> bool:
        return self.code < 0x0100

    def encode(self) -> bytes:
        return encode(self)


# --- building requests -------------------------------------------------------

# Attributes whose str/int values are not keywords/integers.  The rest follows
# the Python type (str -> keyword, int -> integer, bool -> boolean, ...).
_NAME_ATTRIBUTES = frozenset(
    {
        "job-name",
        "document-name",
        "requesting-user-name",
        "job-originating-user-name",
        "job-sheets",
        "output-bin",
        "media-source",
        "job-account-id",
    }
)
_TEXT_ATTRIBUTES = frozenset({"job-message-from-operator", "document-message", "status-message"})
_URI_ATTRIBUTES = frozenset({"printer-uri", "job-uri", "document-uri", "job-uuid"})
_ENUM_ATTRIBUTES = frozenset(
    {
        "orientation-requested",
        "print-quality",
        "finishings",
        "job-state",
        "printer-state",
        "operations-supported",
        "document-state",
    }
)
_MIME_ATTRIBUTES = frozenset({"document-format"})


def make_attribute(name: str, value: AttributeInput) -> Attribute:
    """An ``Attribute`` from a plain Python value, inferring the tag.

    ``str`` -> keyword (name/text/uri/mimeMediaType for the well-known
    attributes above), ``bool`` -> boolean, ``int`` -> integer (enum for the
    well-known enums), ``IntRange`` -> rangeOfInteger, a mapping -> collection
    (members inferred the same way), a list/tuple -> 1setOf.  Pass an
    ``Attribute`` to choose the tag yourself.
    """
    if isinstance(value, Attribute):
        return value
    items: Sequence[object]
    if isinstance(value, list | tuple) and not isinstance(value, _NAMED_TUPLES):
        items = value
    else:
        items = [value]
    values = tuple(_plain_value(name, item) for item in items)
    if not values:
        raise ValueError(f"attribute {name!r} needs at least one value")
    return Attribute(name, _infer_tag(name, values[0]), values)


def _plain_value(name: str, item: object) -> Value:
    if isinstance(item, Mapping):
        return collection(item)
    _infer_tag(name, item)  # type: ignore[arg-type]  # raises TypeError for foreign types
    return item  # type: ignore[return-value]


_NAMED_TUPLES = (Resolution, IntRange, LangString, OutOfBand)


def _infer_tag(name: str, value: Value) -> int:
    if isinstance(value, bool):
        return ValueTag.BOOLEAN
    if isinstance(value, int):
        return ValueTag.ENUM if name in _ENUM_ATTRIBUTES else ValueTag.INTEGER
    if isinstance(value, str):
        if name in _NAME_ATTRIBUTES:
            return ValueTag.NAME
        if name in _TEXT_ATTRIBUTES:
            return ValueTag.TEXT
        if name in _URI_ATTRIBUTES:
            return ValueTag.URI
        if name in _MIME_ATTRIBUTES:
            return ValueTag.MIME_TYPE
        return ValueTag.KEYWORD
    if isinstance(value, IntRange):
        return ValueTag.RANGE
    if isinstance(value, Resolution):
        return ValueTag.RESOLUTION
    if isinstance(value, LangString):
        if name in _NAME_ATTRIBUTES:
            return ValueTag.NAME_WITH_LANGUAGE
        return ValueTag.TEXT_WITH_LANGUAGE
    if isinstance(value, OutOfBand):
        return value.tag
    if isinstance(value, datetime):
        return ValueTag.DATE_TIME
    if isinstance(value, bytes):
        return ValueTag.OCTET_STRING
    if isinstance(value, dict):
        return ValueTag.BEGIN_COLLECTION
    raise TypeError(f"cannot encode {type(value).__name__} for attribute {name!r}")


def collection(members: Mapping[str, AttributeInput]) -> Collection:
    """A collection value from plain member values (tags inferred like ``make_attribute``;
    ``Attribute`` members pass through)."""
    return {name: make_attribute(name, value) for name, value in members.items()}


def request(
    operation: int,
    request_id: int,
    printer_uri: str,
    operation_attributes: Iterable[Attribute] = (),
    job_attributes: Iterable[Attribute] = (),
    *,
    language: str = "en",
) -> Message:
    """A request with the required first three operation attributes, in order."""
    op = Group(GroupTag.OPERATION)
    op.add(Attribute.charset("attributes-charset", "utf-8"))
    op.add(Attribute.language("attributes-natural-language", language))
    op.add(Attribute.uri("printer-uri", printer_uri))
    for attr in operation_attributes:
        op.add(attr)
    groups = [op]
    job = Group(GroupTag.JOB)
    for attr in job_attributes:
        job.add(attr)
    if job.attributes:
        groups.append(job)
    return Message(code=operation, request_id=request_id, groups=groups)


# --- encoding ------------------------------------------------------------------

_SHORT = struct.Struct(">H")
_INT = struct.Struct(">i")


def encode(message: Message) -> bytes:
    """The message header and groups, ending with the end-of-attributes tag."""
    try:
        out = bytearray(struct.pack(">BBHi", *message.version, message.code, message.request_id))
        for group in message.groups:
            out.append(group.tag)
            for attr in group.attributes.values():
                _encode_attribute(out, attr.name, attr)
    except struct.error as exc:  # e.g. an integer outside 32 bits
        raise ValueError(f"cannot encode IPP message: {exc}") from exc
    out.append(GroupTag.END)
    return bytes(out)


def _encode_attribute(out: bytearray, name: str, attr: Attribute) -> None:
    if not attr.values:
        raise ValueError(f"attribute {attr.name!r} has no value")
    mixed = _is_mixed(attr)
    for index, value in enumerate(attr.values):
        tag = attr.tag if index == 0 or not mixed else _infer_tag(attr.name, value)
        if isinstance(value, OutOfBand):
            tag = value.tag
        _put_name(out, tag, name if index == 0 else "")
        _encode_value(out, tag, value, attr.name)


def _is_mixed(attr: Attribute) -> bool:
    first = type(attr.values[0])
    return any(type(v) is not first for v in attr.values[1:])


def _put_name(out: bytearray, tag: int, name: str) -> None:
    raw = name.encode("utf-8")
    out.append(tag)
    out += _SHORT.pack(len(raw))
    out += raw


def _put_value(out: bytearray, raw: bytes) -> None:
    if len(raw) > 0xFFFF:
        raise ValueError("IPP value longer than 65535 bytes")
    out += _SHORT.pack(len(raw))
    out += raw


def _encode_value(out: bytearray, tag: int, value: Value, name: str) -> None:
    if isinstance(value, OutOfBand):
        _put_value(out, b"")
    elif tag in (ValueTag.INTEGER, ValueTag.ENUM) and isinstance(value, int):
        _put_value(out, _INT.pack(value))
    elif tag == ValueTag.BOOLEAN and isinstance(value, bool):
        _put_value(out, b"\x01" if value else b"\x00")
    elif tag == ValueTag.RANGE and isinstance(value, IntRange):
        _put_value(out, struct.pack(">ii", value.lower, value.upper))
    elif tag == ValueTag.RESOLUTION and isinstance(value, Resolution):
        _put_value(out, struct.pack(">iib", value.x, value.y, value.units))
    elif tag == ValueTag.DATE_TIME and isinstance(value, datetime):
        _put_value(out, _encode_date(value))
    elif tag in (ValueTag.TEXT_WITH_LANGUAGE, ValueTag.NAME_WITH_LANGUAGE) and isinstance(
        value, LangString
    ):
        lang, text = value.language.encode(), value.text.encode()
        _put_value(out, _SHORT.pack(len(lang)) + lang + _SHORT.pack(len(text)) + text)
    elif tag == ValueTag.BEGIN_COLLECTION and isinstance(value, dict):
        _put_value(out, b"")
        for member in value.values():
            _put_name(out, ValueTag.MEMBER_NAME, "")
            _put_value(out, member.name.encode())
            _encode_attribute(out, "", member)
        _put_name(out, ValueTag.END_COLLECTION, "")
        _put_value(out, b"")
    elif isinstance(value, str) and not isinstance(value, bool):
        _put_value(out, value.encode("utf-8"))
    elif isinstance(value, bytes):
        _put_value(out, value)
    else:
        raise TypeError(f"attribute {name!r}: {value!r} does not fit value tag 0x{tag:02x}")


def _encode_date(value: datetime) -> bytes:
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return struct.pack(
        ">HBBBBBBcBB",
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 100_000,
        sign,
        minutes // 60,
        minutes % 60,
    )


# --- decoding ------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one IPP message; bytes after the end tag (document data) are ignored."""
    message, _ = decode_with_offset(data)
    return message


def decode_with_offset(data: bytes | bytearray | memoryview) -> tuple[Message, int]:
    """Parse one IPP message and return it with the offset just after its end tag."""
    reader = _Reader(bytes(data))
    try:
        return reader.message(), reader.pos
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(f"malformed IPP message near byte {reader.pos}: {exc}") from exc


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"truncated IPP message: need {n} bytes at {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def short(self) -> int:
        value: int = _SHORT.unpack(self.take(2))[0]
        return value

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("IPP message ends without end-of-attributes tag")
        return self.data[self.pos]

    def message(self) -> Message:
        major, minor, code, request_id = struct.unpack(">BBHi", self.take(8))
        message = Message(code=code, request_id=request_id, version=(major, minor))
        group: Group | None = None
        while True:
            tag = self.take(1)[0]
            if tag == GroupTag.END:
                return message
            if tag < 0x10:  # a delimiter: a new group starts (several job groups allowed)
                group = Group(tag)
                message.groups.append(group)
                continue
            if group is None:
                raise DecodeError(f"value tag 0x{tag:02x} before any group tag")
            self.attribute(group, tag)

    def attribute(self, group: Group, tag: int) -> None:
        name = self.take(self.short()).decode("utf-8")
        value = self.value(tag)
        if name:
            group.add(Attribute(name, tag, (value,)))
            return
        # An additional value of the previous attribute (1setOf).
        if not group.attributes:
            raise DecodeError("additional value without an attribute")
        last = next(reversed(group.attributes.values()))
        group.attributes[last.name] = Attribute(last.name, last.tag, (*last.values, value))

    def value(self, tag: int) -> Value:
        raw = self.take(self.short())
        if tag == ValueTag.BEGIN_COLLECTION:
            return self.collection()
        return _decode_value(tag, raw)

    def collection(self) -> Collection:
        members: dict[str, Attribute] = {}
        current: str | None = None
        while True:
            tag = self.take(1)[0]
            name_len = self.short()
            if name_len:  # members carry their name in memberAttrName values
                raise DecodeError("named attribute inside a collection")
            if tag == ValueTag.END_COLLECTION:
                self.take(self.short())
                return members
            if tag == ValueTag.MEMBER_NAME:
                current = self.take(self.short()).decode("utf-8")
                continue
            if current is None:
                raise DecodeError("collection value without a member name")
            value = self.value(tag)
            prior = members.get(current)
            members[current] = (
                Attribute(current, tag, (value,))
                if prior is None
                else Attribute(current, prior.tag, (*prior.values, value))
            )


def _decode_value(tag: int, raw: bytes) -> Value:
    if 0x10 <= tag <= 0x1F:
        return OutOfBand(tag)
    if tag in (ValueTag.INTEGER, ValueTag.ENUM):
        return int(_INT.unpack(raw)[0])
    if tag == ValueTag.BOOLEAN:
        return raw != b"\x00"
    if tag == ValueTag.RANGE:
        lower, upper = struct.unpack(">ii", raw)
        return IntRange(lower, upper)
    if tag == ValueTag.RESOLUTION:
        return Resolution(*struct.unpack(">iib", raw))
    if tag == ValueTag.DATE_TIME:
        return _decode_date(raw)
    if tag in (ValueTag.TEXT_WITH_LANGUAGE, ValueTag.NAME_WITH_LANGUAGE):
        lang_len = _SHORT.unpack_from(raw, 0)[0]
        language = raw[2 : 2 + lang_len].decode("utf-8")
        text_len = _SHORT.unpack_from(raw, 2 + lang_len)[0]
        text = raw[4 + lang_len : 4 + lang_len + text_len].decode("utf-8")
        return LangString(text, language)
    if 0x40 <= tag <= 0x5F:  # character-string tags (text, name, keyword, uri, ...)
        return raw.decode("utf-8")
    return raw  # octetString and anything unknown: keep the bytes


def _decode_date(raw: bytes) -> datetime:
    if len(raw) != 11:
        raise DecodeError(f"dateTime must be 11 bytes, got {len(raw)}")
    year, month, day, hour, minute, second, decis, sign, tz_h, tz_m = struct.unpack(
        ">HBBBBBBcBB", raw
    )
    offset = timedelta(hours=tz_h, minutes=tz_m) * (-1 if sign == b"-" else 1)
    return datetime(year, month, day, hour, minute, second, decis * 100_000, timezone(offset))
