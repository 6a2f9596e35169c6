"""NFC card numbers: every way a reader or an admin writes one → one stored form.

The stored form (``Card.number``) is the card's UID as lower-case hex, most
significant byte first, two digits per byte, no separators: ``fc682d7a``.

``normalize_card`` turns what a reader sends, or what an admin types, into
that form. The rules, in order:

1. Framing is dropped: surrounding whitespace (CR/LF included), STX/ETX
   (``\\x02``/``\\x03``, serial readers), a leading ``;`` ``*`` or ``%``
   (magnetic-stripe style start sentinels) and a trailing ``?`` (end sentinel).
2. The notation comes from the *configuration*, never from guessing:
   ``card_format=hex`` reads hex even when every character is a digit
   (``12345678`` is the UID ``12 34 56 78``); ``card_format=dec`` reads an
   unsigned decimal integer. The one explicit override is a ``0x`` prefix,
   which always means hex. (Guessing is refused on purpose: ``4234685818`` is
   valid hex *and* valid decimal, and the two are different cards.)
3. Hex: ``:``, ``-``, spaces and tabs between digits are ignored, either case;
   an odd number of digits is an error (a byte is two digits).
   Decimal: ASCII digits only (leading zeros allowed). The integer becomes
   big-endian bytes of the smallest ISO/IEC 14443 / FeliCa UID size that
   holds it: 4, 7, 8 or 10 bytes. So a 4-byte UID is always 4 bytes even with
   leading zero bytes, and a 7-byte UID sent as decimal keeps its 7 bytes:
   by an MSB reader because its first byte is the manufacturer code
   (ISO/IEC 7816-6, e.g. ``04`` for NXP, never ``00``); by an LSB reader even
   when the UID *ends* in ``00`` (the integer then needs only 5 or 6 bytes, and
   no UID has 5 or 6 bytes, so it is widened to 7). 8 bytes is a FeliCa IDm.
4. Byte order: a reader configured ``lsb`` sends the UID's bytes reversed
   (least significant first), in hex or in decimal; they are reversed back.
5. The result must be 4..10 bytes and not all zero (readers send zeros for
   "no card"); anything else is a ``CardError`` (HTTP 400) naming the problem.

The example that must hold: an MSB decimal reader's ``4234685818`` is
``0xFC682D7A``, and an LSB hex reader's ``7a2d68fc`` reversed is
``fc 68 2d 7a``: both are the card ``fc682d7a``.
"""

from __future__ import annotations

import re

from billing.enums import ByteOrder, CardFormat

from .exceptions import BadRequest

MIN_BYTES = 4
MAX_BYTES = 10
# UID sizes: ISO/IEC 14443-3 single, double, triple size; FeliCa IDm is 8.
DECIMAL_SIZES = (4, 7, 8, 10)
# Longer input is refused before any parsing (a 10-byte UID with separators,
# a prefix and framing is well under this).
MAX_RAW_CHARS = 64

_LEADING_FRAME = ";*%\x02"
_TRAILING_FRAME = "?\x03"
_SEPARATORS = re.compile(r"[:\- \t]")
_HEX = re.compile(r"[0-9a-f]+")
_DEC = re.compile(r"[0-9]+")


class CardError(BadRequest):
    """A card number that cannot be any card: empty, too short or long, bad characters."""

    code = "bad-card"


def _show(text: str) -> str:
    """A short, single-line rendering of (part of) the input for messages."""
    return repr(text if len(text) <= 32 else text[:32] + "...")


def parse_card_format(value: str | CardFormat | None) -> CardFormat:
    """``hex``/``dec`` (any case; None = hex) or a BadRequest listing both."""
    if value is None:
        return CardFormat.HEX
    try:
        return CardFormat(value.lower() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        raise BadRequest(f"card format {_show(str(value))}: use hex or dec") from None


def parse_byte_order(value: str | ByteOrder | None) -> ByteOrder:
    """``msb``/``lsb`` (any case; None = msb) or a BadRequest listing both."""
    if value is None:
        return ByteOrder.MSB
    try:
        return ByteOrder(value.lower() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        raise BadRequest(f"byte order {_show(str(value))}: use msb or lsb") from None


def _unframe(raw: str) -> str:
    text = raw.strip()
    while text and text[0] in _LEADING_FRAME:
        text = text[1:].lstrip()
    while text and text[-1] in _TRAILING_FRAME:
        text = text[:-1].rstrip()
    return text


def _first_bad(text: str, allowed: re.Pattern[str]) -> str:
    return next(ch for ch in text if not allowed.fullmatch(ch))


def _hex_bytes(text: str) -> bytes:
    digits = _SEPARATORS.sub("", text).lower()
    if not digits:
        raise CardError("card number has no digits")
    if not _HEX.fullmatch(digits):
        raise CardError(
            f"card number: {_show(_first_bad(digits, _HEX))} is not a hex digit"
            " (hex digits 0-9 a-f, separators ':' '-' ' ')"
        )
    if len(digits) % 2:
        hint = ""
        if _DEC.fullmatch(digits):
            hint = "; if this is a decimal card number, use format 'dec'"
        raise CardError(f"card number: odd number of hex digits ({len(digits)}){hint}")
    if len(digits) > 2 * MAX_BYTES:
        raise CardError(f"card number too long: {len(digits) // 2} bytes (at most {MAX_BYTES})")
    return bytes.fromhex(digits)


def _dec_bytes(text: str) -> bytes:
    if not _DEC.fullmatch(text):
        raise CardError(
            f"card number: {_show(_first_bad(text, _DEC))} is not a decimal digit"
            " (format 'dec' takes digits only; write hex as 0x...)"
        )
    value = int(text.lstrip("0") or "0")
    needed = max(1, (value.bit_length() + 7) // 8)
    size = next((s for s in DECIMAL_SIZES if s >= needed), None)
    if size is None:
        raise CardError(f"card number too long: {needed} bytes (at most {MAX_BYTES})")
    return value.to_bytes(size, "big")


def normalize_card(
    raw: str,
    *,
    card_format: CardFormat | str = CardFormat.HEX,
    byte_order: ByteOrder | str = ByteOrder.MSB,
) -> str:
    """The stored form of a card number (see the module docstring for the rules)."""
    if not isinstance(raw, str):
        raise CardError(f"card number must be a string, not {type(raw).__name__}")
    fmt = parse_card_format(card_format)
    order = parse_byte_order(byte_order)
    if len(raw) > MAX_RAW_CHARS:
        raise CardError(f"card number too long: {len(raw)} characters")
    text = _unframe(raw)
    if not text:
        raise CardError("card number is empty")
    if text[:2].lower() == "0x":
        data = _hex_bytes(text[2:])
    elif fmt is CardFormat.DEC:
        data = _dec_bytes(text)
    else:
        data = _hex_bytes(text)
    if order is ByteOrder.LSB:
        data = data[::-1]
    if len(data) < MIN_BYTES:
        raise CardError(
            f"card number too short: {len(data)} byte(s); a UID has at least {MIN_BYTES}"
            f" ({2 * MIN_BYTES} hex digits)"
        )
    if not any(data):
        raise CardError("card number is all zeros (a reader's 'no card')")
    return data.hex()
