"""Card numbers: normalisation rules, and registering cards and readers (both databases)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, status
from billing.enums import AccountType, ByteOrder, CardFormat, PrinterMode, PrintStatus
from billing.models import Card, Event, Printer, Reader, reader_printers
from proxy import nfc_admin
from proxy.exceptions import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from proxy.nfc import CardError, normalize_card, parse_byte_order, parse_card_format
from proxy.tokens import hash_token
from tests import factories as f

HEX, DEC = CardFormat.HEX, CardFormat.DEC
MSB, LSB = ByteOrder.MSB, ByteOrder.LSB

# (raw, format, byte order, stored form)
GOOD = [
    ("04:A1:B2:C3", HEX, MSB, "04a1b2c3"),
    ("04a1b2c3", HEX, MSB, "04a1b2c3"),
    ("04-a1-b2-c3", HEX, MSB, "04a1b2c3"),
    ("04 A1 b2 C3", HEX, MSB, "04a1b2c3"),
    ("0x04A1B2C3", HEX, MSB, "04a1b2c3"),
    ("0X04:a1:b2:c3", HEX, MSB, "04a1b2c3"),
    ("  04a1b2c3\r\n", HEX, MSB, "04a1b2c3"),
    (";04A1B2C3?", HEX, MSB, "04a1b2c3"),
    ("*04A1B2C3\n", HEX, MSB, "04a1b2c3"),
    ("%04a1b2c3?\r\n", HEX, MSB, "04a1b2c3"),
    ("\x0204A1B2C3\x03", HEX, MSB, "04a1b2c3"),
    # THE example: one card, two readers.
    ("4234685818", DEC, MSB, "fc682d7a"),
    ("7a2d68fc", HEX, LSB, "fc682d7a"),
    ("7A:2D:68:FC", HEX, LSB, "fc682d7a"),
    ("2049796348", DEC, LSB, "fc682d7a"),  # 0x7A2D68FC read little-endian
    ("0xfc682d7a", DEC, MSB, "fc682d7a"),  # an explicit 0x is hex on a decimal reader
    # A hex reader's all-digit input is hex, not decimal.
    ("12345678", HEX, MSB, "12345678"),
    # Decimal: leading zero bytes kept (4 bytes at least), framing and leading zeros.
    ("1193046", DEC, MSB, "00123456"),
    (";0004234685818?", DEC, MSB, "fc682d7a"),
    # 7-byte UIDs (NXP manufacturer byte 04).
    ("04:11:22:33:44:55:66", HEX, MSB, "04112233445566"),
    ("66:55:44:33:22:11:04", HEX, LSB, "04112233445566"),
    (str(0x04112233445566), DEC, MSB, "04112233445566"),
    (str(0x66554433221104), DEC, LSB, "04112233445566"),
    # LSB decimal, UID ending in 00: the integer fits in 6 bytes; widened to 7.
    (str(0x00554433221104), DEC, LSB, "04112233445500"),
    # 10-byte UID, the longest.
    ("0102030405060708090a", HEX, MSB, "0102030405060708090a"),
]

# (raw, format, byte order, words the message must contain)
BAD = [
    ("", HEX, MSB, "empty"),
    ("  \r\n", HEX, MSB, "empty"),
    (";?", HEX, MSB, "empty"),
    ("04a1b2", HEX, MSB, "too short"),
    ("04:a1:b2", HEX, LSB, "too short"),
    ("0102030405060708090a0b", HEX, MSB, "too long"),
    ("1" * 26, DEC, MSB, "too long"),
    ("04a1b2c", HEX, MSB, "odd number"),
    ("423468581", HEX, MSB, "format 'dec'"),  # odd + all digits: the hint
    ("04a1b2cg", HEX, MSB, "not a hex digit"),
    ("hello world!", HEX, MSB, "not a hex digit"),
    ("04a1b2c3", DEC, MSB, "not a decimal digit"),
    ("-4234685818", DEC, MSB, "not a decimal digit"),
    ("٤٢٣٤٦٨٥٨١٨", DEC, MSB, "not a decimal digit"),  # Arabic-Indic digits
    ("00000000", HEX, MSB, "all zeros"),
    ("0", DEC, MSB, "all zeros"),
    ("0x", HEX, MSB, "no digits"),
    ("04a1b2c3" * 10, HEX, MSB, "too long"),
    ("04a1\nb2c3", HEX, MSB, "not a hex digit"),
]


@pytest.mark.parametrize(("raw", "fmt", "order", "stored"), GOOD)
def test_normalize(raw: str, fmt: CardFormat, order: ByteOrder, stored: str) -> None:
    assert normalize_card(raw, card_format=fmt, byte_order=order) == stored
    # The stored form is a fixed point of the admin default (hex, msb).
    assert normalize_card(stored) == stored


@pytest.mark.parametrize(("raw", "fmt", "order", "words"), BAD)
def test_normalize_rejects(raw: str, fmt: CardFormat, order: ByteOrder, words: str) -> None:
    with pytest.raises(CardError, match=words) as info:
        normalize_card(raw, card_format=fmt, byte_order=order)
    assert info.value.status == 400 and "\n" not in str(info.value)


def test_the_example_is_one_card() -> None:
    assert normalize_card("4234685818", card_format="dec", byte_order="msb") == normalize_card(
        "7a2d68fc", card_format="hex", byte_order="lsb"
    )


def test_format_and_byte_order_parsing() -> None:
    assert parse_card_format("DEC") is DEC and parse_card_format(None) is HEX
    assert parse_byte_order("LSB") is LSB and parse_byte_order(None) is MSB
    with pytest.raises(BadRequest, match="hex or dec"):
        parse_card_format("bin")
    with pytest.raises(BadRequest, match="msb or lsb"):
        parse_byte_order("middle")
    with pytest.raises(CardError, match="string"):
        normalize_card(4234685818)  # type: ignore[arg-type]


# --- cards and readers in the database ----------------------------------------


async def _seed(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        await f.user(s, "bob")
        await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-hold2", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-direct", mode=PrinterMode.DIRECT)


async def test_add_card(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _seed(sessionmaker)
    async with sessionmaker() as s, s.begin():
        card = await nfc_admin.add_card(s, "alice", "04:A1:B2:C3")
        dec = await nfc_admin.add_card(s, "alice", "4234685818", card_format="dec")
    assert (card.number, dec.number) == ("04a1b2c3", "fc682d7a")
    async with sessionmaker() as s:
        assert await nfc_admin.cards_of(s, "alice") == ["04a1b2c3", "fc682d7a"]
        created = await s.scalar(
            select(func.count()).select_from(Event).where(Event.subject_type == "card")
        )
        assert created == 2


async def test_add_card_errors(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _seed(sessionmaker)
    async with sessionmaker() as s, s.begin():
        await nfc_admin.add_card(s, "alice", "04a1b2c3")
    async with sessionmaker() as s, s.begin():
        with pytest.raises(NotFound, match="unknown user"):
            await nfc_admin.add_card(s, "nobody", "04a1b2c4")
        with pytest.raises(CardError):
            await nfc_admin.add_card(s, "alice", "04a1")
        # The same card in another spelling: the owner is named to the same user...
        with pytest.raises(Conflict, match="registered to 'alice'"):
            await nfc_admin.add_card(s, "alice", "c3:b2:a1:04", byte_order="lsb")
        # ...but not when someone else tries to take it.
        with pytest.raises(Conflict) as info:
            await nfc_admin.add_card(s, "bob", "04-A1-B2-C3")
        assert "alice" not in str(info.value)
    async with sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Card)) == 1


async def test_add_reader(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _seed(sessionmaker)
    async with sessionmaker() as s, s.begin():
        token = await nfc_admin.add_reader(
            s, "lobby-1", ["pp-hold", "pp-hold2", "pp-hold"], card_format="dec", byte_order="LSB"
        )
    assert token.startswith("pp_")
    async with sessionmaker() as s:
        reader = await s.scalar(select(Reader).where(Reader.reader_id == "lobby-1"))
        assert reader is not None
        assert reader.token_hash == hash_token(token) and token not in reader.token_hash
        assert (reader.card_format, reader.byte_order) == ("dec", "lsb")
        mapped = await s.scalar(
            select(func.count())
            .select_from(reader_printers)
            .where(reader_printers.c.reader_id == reader.id)
        )
        assert mapped == 2
        found = await nfc_admin.reader_by_token(s, token)
        assert found is not None and found.id == reader.id
        assert await nfc_admin.reader_by_token(s, token + "x") is None
        assert await nfc_admin.reader_by_token(s, "not-a-token") is None
        assert (await nfc_admin.authenticate_reader(s, "lobby-1", token)).id == reader.id
        with pytest.raises(Unauthorized):
            await nfc_admin.authenticate_reader(s, "lobby-1", "pp_wrong")
        with pytest.raises(Forbidden):
            await nfc_admin.authenticate_reader(s, "lobby-2", token)


async def test_add_reader_errors(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _seed(sessionmaker)
    async with sessionmaker() as s, s.begin():
        first = await nfc_admin.add_reader(s, "r1", ["pp-hold"])
    async with sessionmaker() as s, s.begin():
        with pytest.raises(Conflict, match="already exists"):
            await nfc_admin.add_reader(s, "r1", ["pp-hold2"])
        with pytest.raises(NotFound, match="'nope'"):
            await nfc_admin.add_reader(s, "r2", ["pp-hold", "nope"])
        with pytest.raises(BadRequest, match="not in hold mode"):
            await nfc_admin.add_reader(s, "r2", ["pp-direct"])
        with pytest.raises(BadRequest, match="at least one printer"):
            await nfc_admin.add_reader(s, "r2", [])
        for bad_id in ("", "a b", "x" * 65, "lobby/1", "é"):
            with pytest.raises(BadRequest, match="reader id"):
                await nfc_admin.add_reader(s, bad_id, ["pp-hold"])
        with pytest.raises(BadRequest, match="hex or dec"):
            await nfc_admin.add_reader(s, "r2", ["pp-hold"], card_format="oct")
    async with sessionmaker() as s, s.begin():
        assert await s.scalar(select(func.count()).select_from(Reader)) == 1
        # Rotation is explicit: the old token stops working.
        second = await nfc_admin.rotate_reader_token(s, "r1")
        assert await nfc_admin.reader_by_token(s, first) is None
        assert await nfc_admin.reader_by_token(s, second) is not None


# --- concurrent taps ------------------------------------------------------------


async def test_concurrent_taps_release_each_job_once(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """SQLite serialises the writers (BEGIN IMMEDIATE), PostgreSQL waits on row locks."""
    await _seed(sessionmaker)
    async with sessionmaker() as s, s.begin():
        account = await accounts.find_account(s, AccountType.USER, "alice")
        printer = await s.scalar(select(Printer).where(Printer.name == "pp-hold"))
        assert account is not None and printer is not None
        held = []
        for i in range(3):
            po = await f.print_out(s, printer, "alice", charged_to=[(account, 1)], title=f"{i}")
            assert await status.transition(s, po, PrintStatus.HELD, actor="intake")
            held.append(po.id)
        await nfc_admin.add_card(s, "alice", "04a1b2c3")
        await nfc_admin.add_reader(s, "r1", ["pp-hold"])
        reader_pk = (await s.scalar(select(Reader.id).where(Reader.reader_id == "r1"))) or 0

    async def work(session: AsyncSession) -> list[int]:
        reader = await session.get(Reader, reader_pk)
        assert reader is not None
        outcome = await nfc_admin.tap_card(session, reader, "04:A1:B2:C3")
        return [r.print_out.id for r in outcome.released]

    async def in_transaction() -> list[int]:
        async with sessionmaker() as session, session.begin():
            return await work(session)

    results = await asyncio.gather(*(in_transaction() for _ in range(4)))
    assert sorted(i for ids in results for i in ids) == held
    async with sessionmaker() as s:
        pending = await s.scalars(
            select(Event.subject_id).where(
                Event.subject_type == "print_out", Event.to_status == "pending"
            )
        )
        assert sorted(int(i) for i in pending) == held
        taps = await s.scalars(select(Event.id).where(Event.reason == "tap"))
        assert len(taps.all()) == 4
