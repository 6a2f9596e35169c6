"""The OfficeRnD simulator's records: members, companies, plans, memberships and fees.

``OfficeRnDRecords`` holds them in memory as OfficeRnD's JSON records
(``_id``, ``team``, ``calculatedStatus``...), generates a seeded population
(``seed_members``: the same arguments, the same data), lets tests change it
as a person would in OfficeRnD (``add_member``, ``move_member``...), and does
the API's data operations: the filtered, ``_id``-ordered pages of a list and
the creation of plans and fees with OfficeRnD's rules (a refused input raises
``BadRequest``). No HTTP here: ``proxy.devkit.officernd.simapi`` serves it.

What the records hold follows OfficeRnD's v1 reference (developer.officernd.com):

* A member (``/reference/members``) has ``status`` (active, contact or
  former) and the read-only ``calculatedStatus`` (the help article
  "Member/Company Statuses and Labels": active, drop-in, pending, lead,
  former, contact, not_approved). It has no plans. The generator draws the
  calculated status and sets ``status`` to it when ``status`` can hold it,
  else to ``contact`` (an assumption: the documents do not say which
  ``status`` a drop-in or a lead has).
* Plans are sold through memberships (``/reference/memberships``): ``plan``,
  ``member`` or ``team``, ``office``, ``startDate``, ``endDate``, ``status``
  (approved / not_approved) and ``calculatedStatus`` (active, pending or
  expired).
* A fee (``/reference/fees``) takes only the documented fields
  (``FEE_FIELDS``): anything else is refused with 400, read-only fields
  too. ``office`` is required. Dates come back as ISO date-times
  (``2024-06-03T00:00:00.000Z``, the form OfficeRnD documents for dates).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from billing.officernd.client import company_from_json, member_from_json, plan_from_json
from billing.officernd.models import Company, Member, MemberStatus, Plan

__all__ = [
    "DEFAULT_PLANS",
    "DEFAULT_STATUSES",
    "FEE_FIELDS",
    "LISTED",
    "BadRequest",
    "OfficeRnDRecords",
]

# The generator's shares of each documented calculatedStatus.
DEFAULT_STATUSES: Final[Mapping[str, float]] = {
    MemberStatus.ACTIVE: 0.8,
    MemberStatus.FORMER: 0.1,
    MemberStatus.CONTACT: 0.02,
    MemberStatus.DROP_IN: 0.02,
    MemberStatus.PENDING: 0.02,
    MemberStatus.LEAD: 0.02,
    MemberStatus.NOT_APPROVED: 0.02,
}
# ``status`` can only be active, contact or former (the member reference).
_STATUS_VALUES: Final = frozenset({MemberStatus.ACTIVE, MemberStatus.CONTACT, MemberStatus.FORMER})
# The fee fields a POST may set (developer.officernd.com/reference/fees), and the
# read-only ones the API fills in.
FEE_FIELDS: Final = frozenset(
    {
        "name", "price", "quantity", "date", "team", "member", "office", "plan",
        "refundable", "billInAdvance", "shouldUseValueCredits", "isPersonal", "source",
        "properties",  # custom properties (developer.officernd.com, "Storing custom data")
    }
)  # fmt: skip
_FEE_READONLY: Final = frozenset(
    {"_id", "invoice", "createdAt", "createdBy", "modifiedAt", "modifiedBy"}
)
_FEE_FLAGS: Final = ("refundable", "billInAdvance", "shouldUseValueCredits", "isPersonal")
API_USER_ID: Final = "a91c00000000000000000001"  # createdBy/modifiedBy of what the API creates
# A membership's dates by its calculatedStatus (start, end).
_MEMBERSHIP_DATES: Final[Mapping[str, tuple[str, str | None]]] = {
    "active": ("2024-01-01", None),
    "pending": ("2099-01-01", None),
    "expired": ("2023-01-01", "2023-12-31"),
}
# The plans seed_members creates when there are none yet: (name, monthly price).
DEFAULT_PLANS: Final = (
    ("Hot Desk", Decimal("150.00")),
    ("Dedicated Desk", Decimal("300.00")),
    ("Private Office", Decimal("850.00")),
)
# The resources the API lists.
LISTED: Final = ("members", "companies", "plans", "memberships", "fees")
MAIN_OFFICE_ID: Final = "0ff1ce000000000000000001"  # the location every seeded member is in

_FIRST = (
    "Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "Hedy",
    "Ivan", "John", "Katherine", "Linus", "Margaret", "Niklaus", "Ole", "Radia", "Sophie",
    "Tim", "Vint",
)  # fmt: skip
_LAST = (
    "Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper",
    "Lamarr", "Sutherland", "Backus", "Johnson", "Torvalds", "Hamilton", "Wirth", "Dahl",
    "Perlman", "Wilson", "Berners-Lee", "Cerf",
)  # fmt: skip
_COMPANY_WORDS = (
    "Acme", "Blue", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Iris",
    "Juniper", "Kestrel", "Lumen", "Maple", "Nimbus", "Orbit", "Pioneer",
)  # fmt: skip
_COMPANY_KINDS = ("Labs", "Studio", "Partners", "Works", "Consulting", "Design", "Systems")


class BadRequest(Exception):
    """An input the API refuses with 400 (or ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _shares(total: int, weights: Mapping[str, float]) -> list[str]:
    """``total`` labels in the proportions of ``weights`` (largest remainder: exact counts)."""
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError("statuses: weights must be finite and not negative")
    whole = sum(weights.values())
    if whole <= 0:
        raise ValueError("statuses: at least one weight must be positive")
    quotas = {k: total * w / whole for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    left = total - sum(counts.values())
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[:left]:
        counts[k] += 1
    return [k for k, n in counts.items() for _ in range(n)]


def _valid_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, Decimal | int) and not isinstance(value, bool)


def _api_date(value: str) -> str:
    """A date as OfficeRnD gives it back: ``YYYY-MM-DDTHH:mm:ss.sssZ``."""
    if len(value) == 10:
        return f"{value}T00:00:00.000Z"
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    when = when.astimezone(UTC) if when.tzinfo else when
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _now() -> str:
    return _api_date(datetime.now(UTC).isoformat())


class OfficeRnDRecords:
    """The records; every helper works whether or not the server runs."""

    def __init__(self, *, seed: int) -> None:
        self._id_rng = random.Random(f"officernd-ids-{seed}")
        self._members: dict[str, dict[str, Any]] = {}
        self._companies: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._memberships: dict[str, dict[str, Any]] = {}
        self._fees: dict[str, dict[str, Any]] = {}
        self._fees_received: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        # Locations ("offices"): every member belongs to one, every fee names one.
        self._offices: dict[str, dict[str, Any]] = {
            MAIN_OFFICE_ID: {"_id": MAIN_OFFICE_ID, "name": "Main office"}
        }
        self._ids.add(MAIN_OFFICE_ID)

    # --- seeding and editing (what a person does in OfficeRnD) ----------------------------

    def _new_id(self, rng: random.Random) -> str:
        while True:
            new = f"{rng.getrandbits(96):024x}"
            if new not in self._ids:
                self._ids.add(new)
                return new

    def seed_members(
        self,
        n_members: int,
        n_companies: int,
        n_individuals: int,
        *,
        statuses: Mapping[str, float] = DEFAULT_STATUSES,
        seed: int = 0,
    ) -> list[Member]:
        """Replace members and companies with generated ones; the same arguments, the same data.

        ``n_members`` members spread over ``n_companies`` companies (each
        company gets at least one while there are enough) plus
        ``n_individuals`` members with no company: ``n_members +
        n_individuals`` in all. Calculated statuses come in the exact
        proportions of ``statuses`` (largest remainder), shuffled; ``status``
        follows (see the module doc). The plans in ``DEFAULT_PLANS`` are
        created when there are no plans; about half of the active members get
        an active membership of one, a pending member a pending one, a former
        member an expired one. Returns the members in creation order.
        """
        if min(n_members, n_companies, n_individuals) < 0:
            raise ValueError("counts must not be negative")
        if n_members and not n_companies:
            raise ValueError("company members need at least one company")
        rng = random.Random(f"officernd-seed-{seed}")
        tables = (self._members, self._companies, self._memberships)
        for table in tables:
            for record in table.values():
                self._ids.discard(record["_id"])
            table.clear()
        if not self._plans:
            for plan_name, price in DEFAULT_PLANS:
                self.add_plan(plan_name, price, plan_id=self._new_id(rng))
        plan_ids = sorted(self._plans)
        words, kinds = len(_COMPANY_WORDS), len(_COMPANY_KINDS)
        companies = []
        for i in range(n_companies):
            name = f"{_COMPANY_WORDS[i % words]} {_COMPANY_KINDS[(i // words) % kinds]}"
            if i >= words * kinds:
                name += f" {i // (words * kinds) + 1}"
            companies.append(self.add_company(name, company_id=self._new_id(rng)))
        total = n_members + n_individuals
        labels = _shares(total, statuses)
        rng.shuffle(labels)
        members: list[str] = []
        for i in range(total):
            if i < n_members:
                company: str | None = (
                    companies[i].id if i < n_companies else rng.choice(companies).id
                )
            else:
                company = None
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            calculated = labels[i]
            kind = {"active": "active", "pending": "pending", "former": "expired"}.get(calculated)
            with_plan = kind is not None and plan_ids and rng.random() < 0.5
            member = self.add_member(
                f"{first} {last}",
                email=f"{first}.{last}.{i + 1}@example.com".lower(),
                status=calculated if calculated in _STATUS_VALUES else MemberStatus.CONTACT,
                calculated_status=calculated,
                company_id=company,
                member_id=self._new_id(rng),
            )
            if with_plan and kind is not None:
                self.add_membership(
                    rng.choice(plan_ids),
                    member_id=member.id,
                    calculated_status=kind,
                    membership_id=self._new_id(rng),
                )
            members.append(member.id)
        held = self._active_plans()
        return [self._member_view(self._members[mid], held) for mid in members]

    def add_office(self, name: str, *, office_id: str | None = None) -> str:
        """A location; its id."""
        new = office_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._offices[new] = {"_id": new, "name": name}
        return new

    def add_company(self, name: str, *, company_id: str | None = None) -> Company:
        new = company_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._companies[new] = {"_id": new, "name": name}
        return company_from_json(self._companies[new])

    def add_plan(
        self, name: str, price: Decimal | None = None, *, plan_id: str | None = None
    ) -> Plan:
        new = plan_id or self._new_id(self._id_rng)
        self._ids.add(new)
        record: dict[str, Any] = {"_id": new, "name": name}
        if price is not None:
            record["price"] = price
        self._plans[new] = record
        return plan_from_json(record)

    def add_member(
        self,
        name: str,
        *,
        email: str | None = None,
        status: str = MemberStatus.ACTIVE,
        calculated_status: str | None = None,
        company_id: str | None = None,
        plan_ids: Sequence[str] = (),
        member_id: str | None = None,
        office_id: str = MAIN_OFFICE_ID,
    ) -> Member:
        """A member (an individual one without ``company_id``); the email defaults to unique.

        ``calculated_status`` defaults to ``status``; each of ``plan_ids``
        becomes an active membership of the member. Adding a member whose id
        exists replaces it (its memberships stay; the answer lists only ``plan_ids``).
        """
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        if office_id not in self._offices:
            raise KeyError(f"office {office_id!r} not found")
        status, calculated = self._statuses(status, calculated_status)
        new = member_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._members[new] = {
            "_id": new,
            "name": name,
            "email": email if email is not None else f"member-{new}@example.com",
            "status": status,
            "calculatedStatus": calculated,
            "team": company_id,
            "office": office_id,
        }
        for plan_id in plan_ids:
            self.add_membership(plan_id, member_id=new)
        return self._member_view(self._members[new], {new: list(plan_ids)})

    @staticmethod
    def _statuses(status: str, calculated: str | None) -> tuple[str, str]:
        if status not in _STATUS_VALUES:
            raise ValueError(
                f"status: a member's status is active, contact or former, not {status!r}"
            )
        calculated = str(status) if calculated is None else calculated
        if calculated not in set(MemberStatus):
            raise ValueError(f"calculated_status: {calculated!r} is not a documented status")
        return str(status), str(calculated)

    def add_membership(
        self,
        plan_id: str,
        *,
        member_id: str | None = None,
        company_id: str | None = None,
        calculated_status: str = "active",
        membership_id: str | None = None,
    ) -> str:
        """A membership of ``plan_id`` for a member or a whole company; its id.

        ``calculated_status`` is active, pending or expired; the dates match it.
        """
        if plan_id not in self._plans:
            raise KeyError(f"plan {plan_id!r} not found")
        if member_id is None and company_id is None:
            raise ValueError("a membership needs a member or a company")
        if member_id is not None:
            self._member(member_id)
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        start, end = _MEMBERSHIP_DATES[calculated_status]
        team = company_id
        if team is None and member_id is not None:
            team = self._members[member_id].get("team")
        new = membership_id or self._new_id(self._id_rng)
        self._ids.add(new)
        plan = self._plans[plan_id]
        self._memberships[new] = {
            "_id": new,
            "name": plan["name"],
            "price": plan.get("price", Decimal(0)),
            "member": member_id,
            "team": team,
            "office": MAIN_OFFICE_ID,
            "plan": plan_id,
            "isPersonal": member_id is not None,
            "startDate": _api_date(start),
            "endDate": None if end is None else _api_date(end),
            "status": "approved",
            "calculatedStatus": calculated_status,
            "createdAt": _now(),
        }
        return new

    def end_membership(self, membership_id: str) -> None:
        """The membership has expired (ended yesterday)."""
        record = self._memberships[membership_id]
        record["endDate"] = _api_date("2024-01-02")
        record["calculatedStatus"] = "expired"

    def _active_plans(self) -> dict[str, list[str]]:
        """Member id -> the plans of its own active memberships."""
        held: dict[str, list[str]] = {}
        for ms in self._memberships.values():
            if ms["member"] is not None and ms["calculatedStatus"] == "active":
                held.setdefault(str(ms["member"]), []).append(str(ms["plan"]))
        return held

    def _member_view(
        self, record: Mapping[str, Any], held: Mapping[str, list[str]] | None = None
    ) -> Member:
        """The member as the sync sees it: ``plan_ids`` from its own active memberships."""
        plans = (self._active_plans() if held is None else held).get(record["_id"], [])
        return replace(member_from_json(record), plan_ids=tuple(sorted(plans)))

    def _member(self, member_id: str) -> dict[str, Any]:
        try:
            return self._members[member_id]
        except KeyError:
            raise KeyError(f"member {member_id!r} not found") from None

    def set_member_status(
        self, member_id: str, status: str, calculated_status: str | None = None
    ) -> Member:
        """A status set by hand (``calculatedStatus`` follows unless given)."""
        record = self._member(member_id)
        record["status"], record["calculatedStatus"] = self._statuses(status, calculated_status)
        return self._member_view(record)

    def move_member(self, member_id: str, company_id: str | None) -> Member:
        """Into another company, or out of any (``None``: an individual member)."""
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        record = self._member(member_id)
        record["team"] = company_id
        return self._member_view(record)

    def rename_member(
        self, member_id: str, name: str | None = None, *, email: str | None = None
    ) -> Member:
        record = self._member(member_id)
        if name is not None:
            record["name"] = name
        if email is not None:
            record["email"] = email
        return self._member_view(record)

    def remove_member(self, member_id: str) -> None:
        self._member(member_id)
        del self._members[member_id]

    def rename_company(self, company_id: str, name: str) -> Company:
        self._companies[company_id]["name"] = name
        return company_from_json(self._companies[company_id])

    # --- reading -------------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        """The members (``plan_ids``: the plans of their own active memberships)."""
        held = self._active_plans()
        return [self._member_view(r, held) for r in self._members.values()]

    @property
    def memberships(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._memberships.values()]

    @property
    def companies(self) -> list[Company]:
        return [company_from_json(r) for r in self._companies.values()]

    @property
    def plans(self) -> list[Plan]:
        return [plan_from_json(r) for r in self._plans.values()]

    @property
    def fees(self) -> list[dict[str, Any]]:
        """Every fee the simulator holds, in creation order (prices as Decimal)."""
        return [dict(r) for r in self._fees.values()]

    def fees_received(self) -> list[dict[str, Any]]:
        """The fees created by ``POST /fees``, in order, with their ``_id`` (prices Decimal).

        A POST refused (400) or faulted before applying is not here; one
        answered with ``apply-then-500`` is.
        """
        return [dict(r) for r in self._fees_received]

    # --- the API's data operations --------------------------------------------------------

    def _table(self, resource: str) -> dict[str, dict[str, Any]]:
        tables = {
            "members": self._members,
            "companies": self._companies,
            "plans": self._plans,
            "memberships": self._memberships,
            "fees": self._fees,
        }
        return tables[resource]

    @staticmethod
    def _matches(record: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
        for name, wanted in filters.items():
            value = record.get(name)
            if name == "date":
                if not isinstance(value, str) or value[:10] != wanted[:10]:
                    return False
                continue
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            if text != wanted:
                return False
        return True

    def _page(
        self, resource: str, filters: Mapping[str, str], after: str, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` matching records with an ``_id`` after ``after``; and if more follow."""
        rows = sorted(
            (r for r in self._table(resource).values() if self._matches(r, filters)),
            key=lambda r: str(r["_id"]),
        )
        rows = [r for r in rows if str(r["_id"]) > after]
        return rows[:limit], len(rows) > limit

    def _create_plan(self, data: Mapping[str, Any]) -> dict[str, Any]:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name is required")
        price = data.get("price")
        if price is not None and not _is_number(price):
            raise BadRequest("price must be a number")
        record = {**data, "_id": self._new_id(self._id_rng), "name": name}
        if price is not None:
            record["price"] = Decimal(price)
        self._plans[record["_id"]] = record
        return record

    def _check_fee(self, data: Mapping[str, Any]) -> None:
        for key in data:
            if key in _FEE_READONLY:
                raise BadRequest(f"{key} is read-only")
            if key not in FEE_FIELDS:
                raise BadRequest(f"{key} is not a field of a fee")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name is required")
        if not _is_number(data.get("price")):
            raise BadRequest("price must be a number")
        quantity = data.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise BadRequest("quantity must be a positive integer")
        if not _valid_date(data.get("date")):
            raise BadRequest("date must be an ISO date")
        member, team, plan = data.get("member"), data.get("team"), data.get("plan")
        if member is None and team is None:
            raise BadRequest("a fee needs a member or a team")
        if member is not None and member not in self._members:
            raise BadRequest(f"member {member!r} not found")
        if team is not None and team not in self._companies:
            raise BadRequest(f"team {team!r} not found")
        if plan is not None and plan not in self._plans:
            raise BadRequest(f"plan {plan!r} not found")
        office = data.get("office")
        if office is None or office == "":
            raise BadRequest("office is required")  # as the fee API documents it
        if office not in self._offices:
            raise BadRequest(f"office {office!r} not found")
        for flag in _FEE_FLAGS:
            if not isinstance(data.get(flag, False), bool):
                raise BadRequest(f"{flag} must be a boolean")
        if not isinstance(data.get("source", ""), str):
            raise BadRequest("source must be a string")
        if not isinstance(data.get("properties", {}), dict):
            raise BadRequest("properties must be an object")

    def _create_fee(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self._check_fee(data)
        now = _now()
        record: dict[str, Any] = {
            "_id": self._new_id(self._id_rng),
            "name": data["name"],
            "price": Decimal(data["price"]),
            "quantity": data.get("quantity", 1),
            "date": _api_date(data["date"]),
            "member": data.get("member"),
            "team": data.get("team"),
            "office": data["office"],
            "plan": data.get("plan"),
            "refundable": data.get("refundable", False),
            "billInAdvance": data.get("billInAdvance", False),
            "shouldUseValueCredits": data.get("shouldUseValueCredits", False),
            "isPersonal": data.get("isPersonal", True),
            "createdAt": now,
            "createdBy": API_USER_ID,
            "modifiedAt": now,
            "modifiedBy": API_USER_ID,
        }
        for optional in ("source", "properties"):  # present only when set
            if optional in data:
                record[optional] = data[optional]
        self._fees[record["_id"]] = record
        self._fees_received.append(dict(record))
        return record
