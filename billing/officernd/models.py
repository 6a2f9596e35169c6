"""OfficeRnD records as the sync and fees see them (parsed from the API's JSON).

The v1 API calls a company a ``team``; a member's ``team`` is its company id
(None for an individual member).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class MemberStatus(StrEnum):
    ACTIVE = "active"
    FORMER = "former"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    email: str | None
    status: str  # a MemberStatus value (kept as text: OfficeRnD may add statuses)
    company_id: str | None  # None: an individual member
    plan_ids: tuple[str, ...] = ()
    office_id: str | None = None  # the member's location (``office``)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Fee:
    """A fee to create (``POST /fees``)."""

    name: str
    price: Decimal
    date: str  # ISO date, the site's day
    member_id: str | None = None
    company_id: str | None = None
    plan_id: str | None = None
    quantity: int = 1
    is_personal: bool = True
    description: str = ""
    office_id: str | None = None  # ``office``: the API requires it
    extra: dict[str, str] = field(default_factory=dict)
