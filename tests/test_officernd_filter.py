"""Member Management's status field and plan membership (SPEC §9), no I/O.

``status`` (active, contact, former) or ``calculatedStatus`` (the platform's:
also drop-in, pending, lead, not_approved) is compared with the statuses; a
member's plans are those of its current memberships (the memberships
resource), a company's own membership counting for its members. The same
rules against the simulators: ``tests/test_officernd_sync.py``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from billing.exceptions import InvalidInput
from billing.officernd.filter import MemberFilter, held_plans, with_plans
from billing.officernd.models import Company, Member, Membership


def _member(mid: str, name: str, email: str | None, **kw: Any) -> Member:
    return Member(
        id=mid,
        name=name,
        email=email,
        status=kw.get("status", "active"),
        company_id=kw.get("company_id"),
        calculated_status=kw.get("calculated", kw.get("status", "active")),
    )


def test_filter_on_status_or_calculated_status() -> None:
    """``status`` holds active/contact/former; ``calculatedStatus`` the platform's finer view."""
    members = [
        _member("m1", "A", "a@x.io"),
        _member("m2", "B", "b@x.io", status="contact", calculated="drop-in"),
        _member("m3", "C", "c@x.io", status="contact", calculated="lead"),
        _member("m4", "D", "d@x.io", status="contact", calculated="pending"),
        _member("m5", "E", "e@x.io", status="former", calculated="former"),
        _member("m6", "F", "f@x.io", status="active", calculated="not_approved"),
    ]

    def ids(flt: MemberFilter) -> set[str]:
        return {w.member_id for w in flt.wanted(members, []).values()}

    assert ids(MemberFilter()) == {"m1", "m6"}  # status = active
    assert ids(MemberFilter.of(statuses=["contact"])) == {"m2", "m3", "m4"}
    calculated = MemberFilter.of(status_field="calculatedStatus", statuses=["active", "Drop-In"])
    assert ids(calculated) == {"m1", "m2"}
    assert ids(MemberFilter.of(status_field="calculatedStatus", statuses=["pending"])) == {"m4"}
    with pytest.raises(InvalidInput, match="status_field"):
        MemberFilter.of(status_field="state")


def test_plans_come_from_current_memberships() -> None:
    members = [
        _member("m1", "A", "a@x.io", company_id="c1"),
        _member("m2", "B", "b@x.io", company_id="c1"),
        _member("m3", "C", "c@x.io"),
        _member("m4", "D", "d@x.io"),
    ]

    def ms(mid: str, plan: str, calc: str = "active", **kw: Any) -> Membership:
        return Membership(mid, plan, kw.get("member"), kw.get("team"), kw.get("start"),
                          kw.get("end"), calc, kw.get("status", "approved"))  # fmt: skip

    today = date(2024, 6, 3)
    memberships = [
        ms("x1", "desk", member="m1", team="c1"),
        ms("x2", "office", team="c1"),  # the company's own: each of its members holds it
        ms("x3", "desk", "expired", member="m3"),
        ms("x4", "office", "pending", member="m3"),
        # without calculatedStatus: the dates (and the approval) decide
        ms("x5", "desk", "", member="m4", start="2024-01-01T00:00:00.000Z"),
        ms("x6", "office", "", member="m4", start="2024-01-01", end="2024-06-02"),
        ms("x7", "lounge", "", member="m4", start="2024-06-04T00:00:00.000Z"),
        ms("x8", "phone", "", member="m4", start="2024-01-01", status="not_approved"),
    ]
    assert held_plans(memberships, members, today) == {
        "m1": ("desk", "office"),
        "m2": ("office",),
        "m3": (),
        "m4": ("desk",),
    }
    filled = {m.id: m for m in with_plans(members, memberships, today)}
    flt = MemberFilter.of(plans=["office"])
    assert {w.member_id for w in flt.wanted(filled.values(), [Company("c1", "Acme")]).values()} \
        == {"m1", "m2"}  # fmt: skip
