"""OfficeRnD records as the sync and fees see them (parsed from the API's JSON).

The v1 API calls a company a ``team``; a member's ``team`` is its company id
(None for an individual member).

Member statuses, from OfficeRnD's documentation:

* ``status`` (developer.officernd.com/reference/members): "The member status.
  It could be active, contact or former." Writable (set by hand or by the
  platform).
* ``calculatedStatus`` (same page, read-only): "The actual member status
  calculated by the platform"; its values are those of the help article
  "Member/Company Statuses and Labels" (help.officernd.com): Contact, Active,
  Drop-in, Pending, Lead, Former, Not Approved ("Inactive" is a company's
  only), spelled in the API as below.

Plan membership is not on the member: memberships are their own resource
(developer.officernd.com/reference/memberships), each with a ``plan``, a
``member`` or a ``team``, and a read-only ``calculatedStatus`` that "can be
either active, pending or expired".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final


class MemberStatus(StrEnum):
    ACTIVE = "active"
    FORMER = "former"
    CONTACT = "contact"
    DROP_IN = "drop-in"
    PENDING = "pending"
    LEAD = "lead"
    NOT_APPROVED = "not_approved"


# The member fields a status filter can read, and the values each can have.
STATUS_FIELDS: Final = ("status", "calculatedStatus")
STATUS_VALUES: Final[Mapping[str, frozenset[str]]] = {
    "status": frozenset({MemberStatus.ACTIVE, MemberStatus.CONTACT, MemberStatus.FORMER}),
    "calculatedStatus": frozenset(MemberStatus),
}
MEMBERSHIP_ACTIVE: Final = "active"  # a membership's calculatedStatus: active|pending|expired


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    email: str | None
    status: str  # ``status``: active|contact|former (kept as text: OfficeRnD may add some)
    company_id: str | None  # None: an individual member
    # The plans of the member's current memberships (filled in from the
    # memberships resource by the sync; the member record has none).
    plan_ids: tuple[str, ...] = ()
    office_id: str | None = None  # the member's location (``office``)
    calculated_status: str = ""  # ``calculatedStatus`` (a MemberStatus value)

    def status_of(self, status_field: str) -> str:
        """The value of ``status`` or ``calculatedStatus``."""
        return self.calculated_status if status_field == "calculatedStatus" else self.status


@dataclass(frozen=True, slots=True)
class Membership:
    """A membership: a plan sold to a member or to a whole company (``team``)."""

    id: str
    plan_id: str | None
    member_id: str | None
    company_id: str | None
    start_date: str | None  # ISO date(-time) as the API gives it
    end_date: str | None  # None: open-ended
    calculated_status: str  # active | pending | expired ("" when the API leaves it out)
    status: str = ""  # approval: approved | not_approved


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Fee:
    """A fee to create (``POST /fees``): only fields OfficeRnD documents for a fee."""

    name: str  # appears on the invoice line; carries proxyprint's marker (it round-trips)
    price: Decimal
    date: str  # ISO date, the site's day
    member_id: str | None = None
    company_id: str | None = None
    plan_id: str | None = None
    quantity: int = 1
    is_personal: bool = True
    office_id: str | None = None  # ``office``: the API requires it
    extra: dict[str, object] = field(default_factory=dict)  # other documented fee fields
