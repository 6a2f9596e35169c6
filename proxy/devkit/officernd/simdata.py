"""The OfficeRnD simulator's records: members, companies, plans and fees.

``OfficeRnDRecords`` holds them in memory as OfficeRnD's JSON records
(``_id``, ``team``, ``plans``...), generates a seeded population
(``seed_members``: the same arguments, the same data), lets tests change it
as a person would in OfficeRnD (``add_member``, ``move_member``...), and does
the API's data operations: the filtered, ``_id``-ordered pages of a list and
the creation of plans and fees with OfficeRnD's rules (a refused input raises
``BadRequest``). No HTTP here: ``proxy.devkit.officernd.simapi`` serves it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from billing.officernd.client import company_from_json, member_from_json, plan_from_json
from billing.officernd.models import Company, Member, MemberStatus, Plan

__all__ = ["DEFAULT_PLANS", "DEFAULT_STATUSES", "LISTED", "BadRequest", "OfficeRnDRecords"]

DEFAULT_STATUSES: Final[Mapping[str, float]] = {
    MemberStatus.ACTIVE: 0.8,
    MemberStatus.FORMER: 0.1,
    MemberStatus.CONTACT: 0.1,
}
# The plans seed_members creates when there are none yet: (name, monthly price).
DEFAULT_PLANS: Final = (
    ("Hot Desk", Decimal("150.00")),
    ("Dedicated Desk", Decimal("300.00")),
    ("Private Office", Decimal("850.00")),
)
# The resources the API lists.
LISTED: Final = ("members", "companies", "plans", "fees")
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


class OfficeRnDRecords:
    """The records; every helper works whether or not the server runs."""

    def __init__(self, *, seed: int) -> None:
        self._id_rng = random.Random(f"officernd-ids-{seed}")
        self._members: dict[str, dict[str, Any]] = {}
        self._companies: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
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
        n_individuals`` in all. Statuses come in the exact proportions of
        ``statuses`` (largest remainder), shuffled. The plans in
        ``DEFAULT_PLANS`` are created when there are no plans; about half of
        the active members get one. Returns the members in creation order.
        """
        if min(n_members, n_companies, n_individuals) < 0:
            raise ValueError("counts must not be negative")
        if n_members and not n_companies:
            raise ValueError("company members need at least one company")
        rng = random.Random(f"officernd-seed-{seed}")
        for record in (*self._members.values(), *self._companies.values()):
            self._ids.discard(record["_id"])
        self._members.clear()
        self._companies.clear()
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
        members = []
        for i in range(total):
            if i < n_members:
                company: str | None = (
                    companies[i].id if i < n_companies else rng.choice(companies).id
                )
            else:
                company = None
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            status = labels[i]
            plans = (
                (rng.choice(plan_ids),)
                if status == MemberStatus.ACTIVE and plan_ids and rng.random() < 0.5
                else ()
            )
            members.append(
                self.add_member(
                    f"{first} {last}",
                    email=f"{first}.{last}.{i + 1}@example.com".lower(),
                    status=status,
                    company_id=company,
                    plan_ids=plans,
                    member_id=self._new_id(rng),
                )
            )
        return members

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
        company_id: str | None = None,
        plan_ids: Sequence[str] = (),
        member_id: str | None = None,
        office_id: str = MAIN_OFFICE_ID,
    ) -> Member:
        """A member (an individual one without ``company_id``); the email defaults to unique."""
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        if office_id not in self._offices:
            raise KeyError(f"office {office_id!r} not found")
        new = member_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._members[new] = {
            "_id": new,
            "name": name,
            "email": email if email is not None else f"member-{new}@example.com",
            "status": str(status),
            "team": company_id,
            "plans": list(plan_ids),
            "office": office_id,
        }
        return member_from_json(self._members[new])

    def _member(self, member_id: str) -> dict[str, Any]:
        try:
            return self._members[member_id]
        except KeyError:
            raise KeyError(f"member {member_id!r} not found") from None

    def set_member_status(self, member_id: str, status: str) -> Member:
        record = self._member(member_id)
        record["status"] = str(status)
        return member_from_json(record)

    def move_member(self, member_id: str, company_id: str | None) -> Member:
        """Into another company, or out of any (``None``: an individual member)."""
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        record = self._member(member_id)
        record["team"] = company_id
        return member_from_json(record)

    def rename_member(
        self, member_id: str, name: str | None = None, *, email: str | None = None
    ) -> Member:
        record = self._member(member_id)
        if name is not None:
            record["name"] = name
        if email is not None:
            record["email"] = email
        return member_from_json(record)

    def remove_member(self, member_id: str) -> None:
        self._member(member_id)
        del self._members[member_id]

    def rename_company(self, company_id: str, name: str) -> Company:
        self._companies[company_id]["name"] = name
        return company_from_json(self._companies[company_id])

    # --- reading -------------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return [member_from_json(r) for r in self._members.values()]

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
        if not isinstance(data.get("isPersonal", True), bool):
            raise BadRequest("isPersonal must be a boolean")
        if not isinstance(data.get("description", ""), str):
            raise BadRequest("description must be a string")

    def _create_fee(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self._check_fee(data)
        record: dict[str, Any] = {
            "_id": self._new_id(self._id_rng),
            "name": data["name"],
            "price": Decimal(data["price"]),
            "quantity": data.get("quantity", 1),
            "date": data["date"],
            "member": data.get("member"),
            "team": data.get("team"),
            "plan": data.get("plan"),
            "isPersonal": data.get("isPersonal", True),
            "description": data.get("description", ""),
            "office": data["office"],
        }
        for extra, value in data.items():
            record.setdefault(extra, value)
        self._fees[record["_id"]] = record
        self._fees_received.append(dict(record))
        return record
