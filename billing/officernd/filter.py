"""Member Management: which OfficeRnD members are synced into PaperCut, and as whom.

The filter (``[officernd]`` status_field, statuses, include_companies,
exclude_companies, plans) decides who is wanted; ``MemberFilter.wanted``
turns the wanted members into ``DesiredUser`` records keyed by their PaperCut
user name.

Filter rules:

* ``statuses``: the member's ``status_field`` (``status``: active, contact,
  former; or ``calculatedStatus``: active, drop-in, pending, lead, former,
  contact, not_approved; ``billing.officernd.models``) is one of them
  (case-insensitive).
* ``include_companies``: when not empty, only members of the companies listed
  (by id or by name, names case-insensitive); individual members only when
  ``[Individual Member]`` is listed too.
* ``exclude_companies``: members of the companies listed are not synced;
  ``[Individual Member]`` there excludes every individual member.
* ``plans``: when not empty, the member has at least one of these plans (by id
  or by name) through a current membership (``held_plans``: the memberships
  resource, not the member record).

User names (PaperCut's ``userName``, also the local user's name):

1. A member that already has a user keeps its name, whatever its e-mail
   became since (``existing``: the local mirror, or the PaperCut user matched
   in the initial sync). Names never change once given.
2. Otherwise the member's e-mail, trimmed and lower-cased, when it is a valid
   user name (``billing.accounts.validate_name``) and no other user has it.
   OfficeRnD members sign in with their e-mail, so this is the name they know.
3. Otherwise (no e-mail, an e-mail that cannot be a name, or one already
   taken) ``<slug of the name>-<last 8 characters of the member id>``, e.g.
   ``ada.lovelace-5f1c09ab``; should even that be taken, the whole id is used.

Members are named in the order of their ids, so the same input always gives
the same names; PaperCut compares user names without case, and so do we.

Groups: a company member's group is the company's name (cleaned of
characters XML cannot carry; companies with the same name, or a name equal to
a special group, get `` (<last 6 of the id>)`` appended, in id order); an
individual member's group is ``[Individual Member]``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Protocol

from billing.accounts import validate_name
from billing.exceptions import InvalidInput
from billing.officernd.models import (
    MEMBERSHIP_ACTIVE,
    STATUS_FIELDS,
    Company,
    Member,
    Membership,
    Plan,
)

__all__ = [
    "INDIVIDUAL_GROUP",
    "SPECIAL_GROUPS",
    "UNLINKED_GROUP",
    "DesiredUser",
    "FilterSettings",
    "MemberFilter",
    "email_user_name",
    "fallback_user_name",
    "group_names",
    "held_plans",
    "wanted",
    "with_plans",
]

INDIVIDUAL_GROUP = "[Individual Member]"
UNLINKED_GROUP = "UNLINKED_MEMBERS_TO_OFFICERND"
SPECIAL_GROUPS = frozenset({INDIVIDUAL_GROUP, UNLINKED_GROUP})
MAX_GROUP_CHARS = 200
_NOT_TEXT = re.compile("[\x00-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class FilterSettings(Protocol):
    """The ``[officernd]`` keys the filter reads (``proxy.config.OfficeRnDConfig``)."""

    @property
    def status_field(self) -> str: ...

    @property
    def statuses(self) -> tuple[str, ...]: ...

    @property
    def include_companies(self) -> tuple[str, ...]: ...

    @property
    def exclude_companies(self) -> tuple[str, ...]: ...

    @property
    def plans(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class DesiredUser:
    """A PaperCut user as the sync wants it."""

    username: str
    full_name: str
    email: str
    member_id: str
    group: str  # the PaperCut group: the company's name, or INDIVIDUAL_GROUP
    company_id: str | None  # None: an individual member


def _clean(text: str) -> str:
    return " ".join(_NOT_TEXT.sub(" ", unicodedata.normalize("NFC", text)).split())


def group_names(companies: Iterable[Company]) -> dict[str, str]:
    """Company id -> PaperCut group name; unique without case, never a special group."""
    taken = {g.casefold() for g in SPECIAL_GROUPS}
    names: dict[str, str] = {}
    for company in sorted(companies, key=lambda c: c.id):
        name = _clean(company.name)[:MAX_GROUP_CHARS] or f"Company {company.id}"
        if name.casefold() in taken:
            name = f"{name[: MAX_GROUP_CHARS - 10]} ({company.id[-6:]})"
        if name.casefold() in taken:
            name = f"{name} ({company.id})"
        taken.add(name.casefold())
        names[company.id] = name
    return names


def email_user_name(email: str | None) -> str | None:
    """The member's e-mail as a user name, or None when it cannot be one."""
    name = (email or "").strip().lower()
    if "@" not in name:
        return None
    try:
        return validate_name("user", name)
    except InvalidInput:
        return None


def fallback_user_name(member: Member, *, whole_id: bool = False) -> str:
    """``<slug of the name>-<id suffix>``: ASCII, lower case, always a valid name."""
    ascii_name = unicodedata.normalize("NFKD", member.name).encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub(".", ascii_name.lower()).strip(".")[:60] or "member"
    suffix = _SLUG_DROP.sub("", member.id.lower()) or "x"
    return f"{slug}-{suffix if whole_id else suffix[-8:]}"


def _current(membership: Membership, today: date) -> bool:
    """A membership in force: its ``calculatedStatus`` is ``active`` (the platform's word);
    without one, approved and ``startDate <= today <= endDate``."""
    if membership.calculated_status:
        return membership.calculated_status.strip().casefold() == MEMBERSHIP_ACTIVE
    if membership.status.strip().casefold() == "not_approved":
        return False
    start, end = membership.start_date, membership.end_date
    day = today.isoformat()
    return (start is None or start[:10] <= day) and (end is None or day <= end[:10])


def held_plans(
    memberships: Iterable[Membership], members: Iterable[Member], today: date
) -> dict[str, tuple[str, ...]]:
    """Member id -> the plan ids of its current memberships, sorted.

    A membership names a ``member``, or only a ``team`` (a company's own
    membership, e.g. its private office): that one counts for every member
    of the company.
    """
    company_of = {m.id: m.company_id for m in members}
    by_member: dict[str, set[str]] = {mid: set() for mid in company_of}
    by_company: dict[str, set[str]] = {}
    for ms in memberships:
        if ms.plan_id is None or not _current(ms, today):
            continue
        if ms.member_id is not None:
            by_member.setdefault(ms.member_id, set()).add(ms.plan_id)
        elif ms.company_id is not None:
            by_company.setdefault(ms.company_id, set()).add(ms.plan_id)
    for mid, company in company_of.items():
        if company is not None:
            by_member[mid] |= by_company.get(company, set())
    return {mid: tuple(sorted(plans)) for mid, plans in by_member.items()}


def with_plans(
    members: Iterable[Member], memberships: Iterable[Membership], today: date
) -> list[Member]:
    """The members with ``plan_ids`` filled in from their current memberships."""
    members = list(members)
    held = held_plans(memberships, members, today)
    return [replace(m, plan_ids=held.get(m.id, ())) for m in members]


def _keys(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().casefold() for v in values if v.strip())


@dataclass(frozen=True)
class MemberFilter:
    """The Member Management configuration (see the module doc for the rules)."""

    statuses: frozenset[str] = frozenset({"active"})
    include_companies: frozenset[str] = frozenset()
    exclude_companies: frozenset[str] = frozenset()
    plans: frozenset[str] = frozenset()
    status_field: str = "status"  # or "calculatedStatus"

    def __post_init__(self) -> None:
        if self.status_field not in STATUS_FIELDS:
            raise InvalidInput(
                f"status_field: use {' or '.join(STATUS_FIELDS)}, not {self.status_field!r}"
            )

    @classmethod
    def from_settings(cls, settings: FilterSettings) -> MemberFilter:
        return cls.of(
            status_field=settings.status_field,
            statuses=settings.statuses,
            include_companies=settings.include_companies,
            exclude_companies=settings.exclude_companies,
            plans=settings.plans,
        )

    @classmethod
    def of(
        cls,
        *,
        statuses: Iterable[str] = ("active",),
        include_companies: Iterable[str] = (),
        exclude_companies: Iterable[str] = (),
        plans: Iterable[str] = (),
        status_field: str = "status",
    ) -> MemberFilter:
        """A filter from plain lists (names and ids are compared without case)."""
        return cls(
            _keys(statuses),
            _keys(include_companies),
            _keys(exclude_companies),
            _keys(plans),
            status_field,
        )

    def _company_keys(self, member: Member, companies: Mapping[str, Company]) -> set[str]:
        if member.company_id is None:
            return {INDIVIDUAL_GROUP.casefold()}
        keys = {member.company_id.casefold()}
        company = companies.get(member.company_id)
        if company is not None:
            keys.add(company.name.strip().casefold())
        return keys

    def matches(
        self,
        member: Member,
        companies: Mapping[str, Company],
        plan_names: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether Member Management wants ``member`` in PaperCut."""
        if member.status_of(self.status_field).strip().casefold() not in self.statuses:
            return False
        keys = self._company_keys(member, companies)
        if self.include_companies and not keys & self.include_companies:
            return False
        if keys & self.exclude_companies:
            return False
        if self.plans:
            names = plan_names or {}
            held = {p.casefold() for p in member.plan_ids}
            held |= {names[p].strip().casefold() for p in member.plan_ids if p in names}
            if not held & self.plans:
                return False
        return True

    def wanted(
        self,
        members: Iterable[Member],
        companies: Iterable[Company],
        *,
        plans: Iterable[Plan] = (),
        existing: Mapping[str, str] | None = None,
        reserved: Collection[str] = (),
    ) -> dict[str, DesiredUser]:
        """The wanted members as PaperCut users, keyed by user name.

        ``existing`` maps member id -> the user name it already has (kept);
        ``reserved`` are names of other users (never given to a member, case
        ignored). The group of a member of a company OfficeRnD did not list
        is named after the company id.
        """
        by_id = {c.id: c for c in companies}
        groups = group_names(by_id.values())
        plan_names = {p.id: p.name for p in plans}
        links = dict(existing or {})
        chosen = [
            m for m in sorted(members, key=lambda m: m.id) if self.matches(m, by_id, plan_names)
        ]
        taken = {r.casefold() for r in reserved} | {n.casefold() for n in links.values()}
        names: dict[str, str] = {}
        for member in chosen:  # kept names first: they are never given to anyone else
            if member.id in links:
                names[member.id] = links[member.id]
        for member in chosen:
            if member.id in names:
                continue
            for candidate in (
                email_user_name(member.email),
                fallback_user_name(member),
                fallback_user_name(member, whole_id=True),
            ):
                if candidate is not None and candidate.casefold() not in taken:
                    names[member.id] = candidate
                    taken.add(candidate.casefold())
                    break
            else:  # pragma: no cover - the whole id is unique among members
                raise InvalidInput(f"no free user name for member {member.id}")
        result: dict[str, DesiredUser] = {}
        for member in chosen:
            company = member.company_id
            if company is None:
                group = INDIVIDUAL_GROUP
            else:
                group = groups.get(company) or f"Company {company}"
            username = names[member.id]
            result[username] = DesiredUser(
                username=username,
                full_name=_clean(member.name),
                email=(member.email or "").strip(),
                member_id=member.id,
                group=group,
                company_id=company,
            )
        return result


def wanted(
    members: Sequence[Member],
    companies: Sequence[Company],
    *,
    member_filter: MemberFilter | None = None,
    plans: Iterable[Plan] = (),
    existing: Mapping[str, str] | None = None,
    reserved: Collection[str] = (),
) -> dict[str, DesiredUser]:
    """``MemberFilter.wanted`` with the default filter (active members) unless one is given."""
    return (member_filter or MemberFilter()).wanted(
        members, companies, plans=plans, existing=existing, reserved=reserved
    )
