"""Delegation options (SPEC §3): CUPS option strings, the four delegation
options, their JSON form, and the errors a held job shows."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from proxy.exceptions import BadRequest
from proxy.pipeline.delegation import (
    KEYS,
    MAX_COPIES,
    DelegationError,
    DelegationRequest,
    Entry,
    delegation_from_json,
    format_cups_options,
    parse_cups_options,
    parse_delegation,
)

E = Entry

# ---------------------------------------------------------------- CUPS option strings

CUPS_ARGV5 = (
    "job-uuid=urn:uuid:0b6b2c1e-6a4f-3f5e-6d2a-8f1c2b3a4d5e job-originating-host-name=localhost "
    "date-time-at-creation= date-time-at-processing= time-at-creation=1700000000 "
    "time-at-processing=1700000000 delegators=alice,bob:2"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CUPS_ARGV5,
            {
                "job-uuid": "urn:uuid:0b6b2c1e-6a4f-3f5e-6d2a-8f1c2b3a4d5e",
                "job-originating-host-name": "localhost",
                "date-time-at-creation": "",
                "date-time-at-processing": "",
                "time-at-creation": "1700000000",
                "time-at-processing": "1700000000",
                "delegators": "alice,bob:2",
            },
        ),
        ("", {}),
        ("   \t\n ", {}),
        ("a=1 b=2", {"a": "1", "b": "2"}),
        ("  a=1   b=2  ", {"a": "1", "b": "2"}),
        # Booleans: "name" is true, "noname" is name=false.
        ("noduplex collate", {"duplex": "false", "collate": "true"}),
        ("no", {}),  # "no" + empty name: ignored like cupsAddOption does
        # Quotes: a value, or a comma-separated element, that starts with a quote.
        ("shared-accounts='ProjectX,Events/Gala:2'", {"shared-accounts": "ProjectX,Events/Gala:2"}),
        ('title="My report.pdf" copies=2', {"title": "My report.pdf", "copies": "2"}),
        ("x='a b',\"c d\",e", {"x": "a b,c d,e"}),
        ("x='it\\'s'", {"x": "it's"}),
        ('x="say \\"hi\\""', {"x": 'say "hi"'}),
        ("x=a'b c'", {"x": "a'b", "c'": "true"}),  # a quote inside a word is literal
        # Backslash escapes (how cupsd writes argv[5]).
        ("title=My\\ report\\ 1 n=1", {"title": "My report 1", "n": "1"}),
        ("x=back\\\\slash", {"x": "back\\slash"}),
        ("x=trailing\\", {"x": "trailing\\"}),
        # Collections keep their braces; spaces inside do not split.
        ("media-col={media-size={x-dimension=21000 y-dimension=29700}} n=1",
         {"media-col": "{media-size={x-dimension=21000 y-dimension=29700}}", "n": "1"}),
        ("{a=1 b=2}", {"a": "1", "b": "2"}),
        # Unbalanced quote or brace: runs to the end, never raises.
        ("x='unterminated y=2", {"x": "unterminated y=2"}),
        ("x={open y=2", {"x": "{open y=2"}),
        # Spaces around "=" and an empty value.
        ("a = 1", {"a": "", "1": "true"}),  # like CUPS: "=" then a space: empty value
        ("a =1", {"a": "1"}),
        ("a= b=2", {"a": "", "b": "2"}),
        # A stray "=" stops parsing, like cupsParseOptions.
        ("a=1 =oops b=2", {"a": "1"}),
        # Names are case-insensitive: lowercased; a later duplicate wins.
        ("Delegators=alice DELEGATORS=bob", {"delegators": "bob"}),
        # Parsing stops at a NUL, as C does.
        ("a=1\0b=2", {"a": "1"}),
        ("a=zoë b=東京", {"a": "zoë", "b": "東京"}),
    ],
)  # fmt: skip
def test_parse_cups_options(text: str, expected: dict[str, str]) -> None:
    assert parse_cups_options(text) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"title": "My report (final).pdf", "delegators": "alice,bob:2"},
        {"x": "quote ' and \" and \\ and {brace} and tab\there"},
        {"x": "", "y": "{not a collection", "z": "'starts with quote"},
        {"x": "line\nbreak", "y": "ünïcödé"},
    ],
)
def test_format_cups_options_round_trips(options: dict[str, str]) -> None:
    assert parse_cups_options(format_cups_options(options)) == options


def test_format_cups_options_rejects_bad_names() -> None:
    for bad in ({"": "x"}, {"a b": "x"}, {"a=b": "x"}, {"a": "nul\0"}):
        with pytest.raises(ValueError):
            format_cups_options(bad)


# ---------------------------------------------------------------- valid delegations


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, None),
        ({"copies": "2", "media": "a4"}, None),
        ({"delegators": "alice"}, DelegationRequest(users=(E("alice"),))),
        ({"delegators": "alice,bob:2"}, DelegationRequest(users=(E("alice"), E("bob", 2)))),
        ({"delegators": " alice , bob : 2 ,carol:3 "},
         DelegationRequest(users=(E("alice"), E("bob", 2), E("carol", 3)))),
        ({"delegator-groups": "sales:3"}, DelegationRequest(groups=(E("sales", 3),))),
        ({"delegator-group-members": "staff:1"}, DelegationRequest(group_members=(E("staff"),))),
        ({"shared-accounts": "ProjectX,Events/Gala:2"},
         DelegationRequest(shared=(E("ProjectX"), E("Events/Gala", 2)))),
        ({"shared-accounts": "Events\\Gala"}, DelegationRequest(shared=(E("Events\\Gala"),))),
        # Duplicates add up, in the order of first appearance.
        ({"delegators": "alice,bob,alice:2"}, DelegationRequest(users=(E("alice", 3), E("bob")))),
        ({"delegators": "alice:9998,alice"}, DelegationRequest(users=(E("alice", MAX_COPIES),))),
        # Names are case-sensitive (Unix user names are).
        ({"delegators": "Alice,alice"}, DelegationRequest(users=(E("Alice"), E("alice")))),
        ({"delegators": "alice:0002"}, DelegationRequest(users=(E("alice", 2),))),
        ({"delegators": f"alice:{MAX_COPIES}"}, DelegationRequest(users=(E("alice", 9999),))),
        # Non-ASCII but valid names.
        ({"delegators": "zoë:2,josé,田中"},
         DelegationRequest(users=(E("zoë", 2), E("josé"), E("田中")))),
        ({"delegators": "a.b-c_d@example.org"},
         DelegationRequest(users=(E("a.b-c_d@example.org"),))),
        # All four at once; the keys are matched case-insensitively.
        ({"Delegators": "alice", "delegator-groups": "sales", "delegator-group-members": "staff:2",
          "shared-accounts": "P/S", "job-uuid": "urn:uuid:x"},
         DelegationRequest(users=(E("alice"),), groups=(E("sales"),),
                           group_members=(E("staff", 2),), shared=(E("P/S"),))),
        # 200 entries are fine.
        ({"delegators": ",".join(f"u{i}" for i in range(200))},
         DelegationRequest(users=tuple(E(f"u{i}") for i in range(200)))),
    ],
)  # fmt: skip
def test_parse_delegation_valid(
    options: dict[str, str], expected: DelegationRequest | None
) -> None:
    assert parse_delegation(options) == expected


def test_real_argv5_end_to_end() -> None:
    request = parse_delegation(parse_cups_options(CUPS_ARGV5))
    assert request == DelegationRequest(users=(E("alice"), E("bob", 2)))
    quoted = parse_cups_options("shared-accounts='ProjectX,Events/Gala:2' noduplex")
    assert parse_delegation(quoted) == DelegationRequest(
        shared=(E("ProjectX"), E("Events/Gala", 2))
    )


def test_to_options_is_canonical() -> None:
    request = parse_delegation(
        {"shared-accounts": " P/S:1 ", "delegators": "bob:2, alice ,bob", "delegator-groups": "g:1"}
    )
    assert request is not None
    assert request.to_options() == {
        "delegators": "bob:3,alice",
        "delegator-groups": "g",
        "shared-accounts": "P/S",
    }
    assert DelegationRequest().to_options() == {}


def test_total_copies() -> None:
    request = DelegationRequest(
        users=(E("alice"), E("bob", 2)),
        groups=(E("sales", 3),),
        group_members=(E("staff", 2), E("empty", 5)),
        shared=(E("P/S", 4),),
    )
    # 1 + 2 + 3 + 4, plus staff: 2 copies x 5 members, plus an empty group: 0.
    assert request.total_copies({"staff": 5, "empty": 0}) == 20
    with pytest.raises(DelegationError, match="unknown group 'staff'"):
        request.total_copies({"empty": 0})


# ---------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"delegators": ""}, "delegators: empty list"),
        ({"delegators": "   "}, "delegators: empty list"),
        ({"delegators": ":"}, "empty name"),
        ({"delegators": ":2"}, "empty name"),
        ({"delegators": "alice,,bob"}, "entry 2 is empty"),
        ({"delegators": "alice,"}, "entry 2 is empty"),
        ({"delegators": "alice:"}, "copies must be a whole number 1..9999"),
        ({"delegators": "alice:-1"}, "copies must be a whole number 1..9999: 'alice:-1'"),
        ({"delegators": "alice:0"}, "copies must be a whole number"),
        ({"delegators": "alice:00"}, "copies must be a whole number"),
        ({"delegators": "alice:x"}, "copies must be a whole number"),
        ({"delegators": "alice:1.5"}, "copies must be a whole number"),
        ({"delegators": "alice:+2"}, "copies must be a whole number"),
        ({"delegators": "alice:1e3"}, "copies must be a whole number"),
        ({"delegators": "alice:10000"}, "copies must be a whole number"),
        ({"delegators": "alice:99999999999999999999"}, "copies must be a whole number"),
        ({"delegators": "alice:２"}, "copies must be a whole number"),  # fullwidth digit
        ({"delegators": "alice:1:2"}, "more than one ':'"),
        ({"delegators": "alice:9999,alice"}, "copies for 'alice' add up to more than 9999"),
        ({"delegators": "al ice"}, "whitespace in name: 'al ice'"),
        ({"delegators": "al\u00a0ice"}, "whitespace in name"),
        ({"delegators": "al\tice"}, "whitespace in name"),
        ({"delegators": "ali\x07ce"}, "control character in name: 'ali\\x07ce'"),
        ({"delegators": "ali\x7fce"}, "control character in name"),
        ({"delegators": "ali\u200bce"}, "control character in name"),  # zero-width space (Cf)
        ({"delegators": "a=b"}, "'=' in name"),
        ({"delegators": "o'brien"}, "in name"),
        ({"delegators": 'say"hi'}, "in name"),
        ({"delegators": "a/b"}, "only shared accounts have Parent/Sub"),
        ({"delegator-groups": "a\\b"}, "only shared accounts have Parent/Sub"),
        ({"shared-accounts": "A/B/C"}, "shared account must be Name or Parent/Sub"),
        ({"shared-accounts": "/Sub"}, "shared account must be Name or Parent/Sub"),
        ({"shared-accounts": "Parent/"}, "shared account must be Name or Parent/Sub"),
        ({"delegators": "x" * 256}, "name longer than 255 characters"),
        ({"delegators": ",".join(["u"] * 201)}, "too many entries (201, at most 200)"),
        ({"delegators": "a" * 4097}, "value too long (4097 characters, at most 4096)"),
        ({"delegators": "alice," + "b" * 9994}, "value too long (10000 characters"),
        ({"delegators": "alice", "DELEGATORS": "bob"}, "option given twice"),
    ],
)
def test_parse_delegation_malformed(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(DelegationError) as caught:
        parse_delegation(options)
    message = str(caught.value)
    assert fragment in message
    assert_short_ascii(message)
    assert caught.value.code == "delegation-invalid"
    assert caught.value.status == 400
    assert caught.value.option in KEYS


def test_error_names_the_option_and_the_part() -> None:
    with pytest.raises(DelegationError) as caught:
        parse_delegation({"delegators": "alice", "shared-accounts": "ok,bad:0"})
    assert str(caught.value).startswith("shared-accounts: ")
    assert caught.value.option == "shared-accounts"
    assert caught.value.part == "bad:0"


def test_delegation_error_is_a_bad_request() -> None:
    assert issubclass(DelegationError, BadRequest)


def test_ten_thousand_character_option_from_cups() -> None:
    text = "job-uuid=urn:uuid:1 delegators=" + "a" * 10_000
    with pytest.raises(DelegationError, match="value too long"):
        parse_delegation(parse_cups_options(text))


def test_messages_are_ascii_and_short_even_for_hostile_names() -> None:
    hostile = "é\u202e\x1b[31m" + "界" * 5000
    with pytest.raises(DelegationError) as caught:
        parse_delegation({"delegators": hostile[:4000]})
    assert_short_ascii(str(caught.value))
    # Messages from elsewhere (e.g. the resolver's "…") are made safe too.
    assert_short_ascii(str(DelegationError("delegators: unknown user(s) zoë, " + "x…" * 200)))
    assert "..." in str(DelegationError("a … b"))


def assert_short_ascii(message: str) -> None:
    assert len(message) < 200
    assert message.isascii()
    assert message.isprintable()


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"delegators": "alice,bob:2"}, DelegationRequest(users=(E("alice"), E("bob", 2)))),
        ({"delegators": [{"name": "alice", "copies": 2}, {"name": "bob"}]},
         DelegationRequest(users=(E("alice", 2), E("bob")))),
        ({"delegators": ["alice", "bob:3"]}, DelegationRequest(users=(E("alice"), E("bob", 3)))),
        ({"delegators": [{"name": " alice "}, "alice:2"]},
         DelegationRequest(users=(E("alice", 3),))),
        ({"shared-accounts": [{"name": "Events/Gala", "copies": 2}], "delegator-groups": "g"},
         DelegationRequest(groups=(E("g"),), shared=(E("Events/Gala", 2),))),
        ({"delegator-group-members": [{"name": "staff", "copies": 9999}]},
         DelegationRequest(group_members=(E("staff", 9999),))),
    ],
)  # fmt: skip
def test_delegation_from_json_valid(body: Any, expected: DelegationRequest) -> None:
    assert delegation_from_json(json.loads(json.dumps(body))) == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (None, "must be a JSON object"),
        ([], "must be a JSON object"),
        ("delegators=alice", "must be a JSON object"),
        ({}, "no delegators given"),
        ({"delegators": "alice", "printer": "pp"}, "unknown delegation key 'printer'"),
        ({"Delegators": "alice"}, "unknown delegation key"),
        ({"delegators": None}, "must be a string or a list"),
        ({"delegators": 5}, "must be a string or a list"),
        ({"delegators": {"name": "alice"}}, "must be a string or a list"),
        ({"delegators": []}, "empty list"),
        ({"delegators": [5]}, "each entry must be a string or an object"),
        ({"delegators": [["alice"]]}, "each entry must be a string or an object"),
        ({"delegators": [{"copies": 2}]}, "entry name must be a string"),
        ({"delegators": [{"name": 7}]}, "entry name must be a string"),
        ({"delegators": [{"name": "alice", "copies": 0}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "copies": -1}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "copies": 2.0}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "copies": "2"}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "copies": True}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "copies": 10000}]}, "copies must be a whole number"),
        ({"delegators": [{"name": "alice", "weight": 2}]}, "unknown entry key 'weight'"),
        ({"delegators": [{"name": "a,b"}]}, "',' in name"),
        ({"delegators": [{"name": ""}]}, "empty name"),
        ({"delegators": ["alice:0"]}, "copies must be a whole number"),
        ({"delegators": [{"name": f"u{i}"} for i in range(201)]}, "too many entries"),
        ({"delegators": [{"name": "x" * 200 + str(i)} for i in range(30)]}, "value too long"),
    ],
)
def test_delegation_from_json_malformed(body: Any, fragment: str) -> None:
    with pytest.raises(DelegationError) as caught:
        delegation_from_json(body)
    assert fragment in str(caught.value)
    assert_short_ascii(str(caught.value))


def test_json_accepts_the_stored_canonical_form() -> None:
    request = DelegationRequest(users=(E("alice", 2),), shared=(E("P/S"),))
    assert delegation_from_json(request.to_options()) == request


# ---------------------------------------------------------------- properties

# Names from a small alphabet with some non-ASCII letters: cheap to generate,
# so the CI profile's 10,000 examples stay fast.
_NAME_CHARS = st.sampled_from([*"abcdeXYZ019._-@+#~!", "ë", "é", "ß", "Ω", "漢", "字", "🖨"])
names = st.text(_NAME_CHARS, min_size=1, max_size=12)
copies = st.integers(1, MAX_COPIES)
entries = st.lists(st.builds(Entry, names, copies), max_size=4, unique_by=lambda e: e.name).map(
    tuple
)
shared_names = st.one_of(names, st.builds(lambda a, b: f"{a}/{b}", names, names))
shared_entries = st.lists(
    st.builds(Entry, shared_names, copies), max_size=4, unique_by=lambda e: e.name
).map(tuple)
requests = st.builds(
    DelegationRequest, users=entries, groups=entries, group_members=entries, shared=shared_entries
).filter(lambda r: any(entries for _, entries in r.lists()))


@given(st.text())
def test_parse_cups_options_never_raises(text: str) -> None:
    options = parse_cups_options(text)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in options.items())
    assert not any(c in string.ascii_uppercase for k in options for c in k)
    # ... and reading the delegation out of it raises nothing but DelegationError.
    try:
        parse_delegation(options)
    except DelegationError as exc:
        assert_short_ascii(str(exc))


@given(st.dictionaries(st.sampled_from(KEYS), st.text(max_size=60), min_size=1))
def test_parse_delegation_raises_only_delegation_error(options: dict[str, str]) -> None:
    try:
        parse_delegation(options)
    except DelegationError as exc:
        assert_short_ascii(str(exc))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from([*KEYS, "name", "copies", "x"]), inner,
                                      max_size=4),
                    max_leaves=8))  # fmt: skip
def test_delegation_from_json_raises_only_delegation_error(body: object) -> None:
    try:
        delegation_from_json(body)
    except DelegationError as exc:
        assert_short_ascii(str(exc))


@given(requests)
def test_round_trip_through_options(request: DelegationRequest) -> None:
    options = request.to_options()
    assert parse_delegation(options) == request
    # ... through a CUPS argv[5] string, as cupsd would write it ...
    assert parse_delegation(parse_cups_options(format_cups_options(options))) == request
    # ... and through the JSON API.
    assert delegation_from_json(json.loads(json.dumps(options))) == request


_OPTION_NAMES = (
    st.text(st.characters(codec="ascii", exclude_characters=" \t\n\r\x0b\x0c=\0"), min_size=1)
    .map(str.lower)
    .filter(lambda k: not k.startswith(("no", "{")))  # "noX" is a boolean; "{...}" is unwrapped
)


@given(st.dictionaries(_OPTION_NAMES, st.text(st.characters(exclude_characters="\0"))))
def test_cups_option_strings_round_trip(options: dict[str, str]) -> None:
    assert parse_cups_options(format_cups_options(options)) == options
