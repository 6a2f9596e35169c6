"""Query plans of the history queries, as the service runs them.

``PlanCapture(engine)`` hooks the engine: every statement the code under test
sends that reads ``print_outs`` or ``ledger_entries`` is first sent as
``EXPLAIN QUERY PLAN`` (SQLite) or ``EXPLAIN`` (PostgreSQL; ``analyze=True``
adds ``ANALYZE, BUFFERS``) on the same cursor with the same, already
processed, parameters; then the statement runs as usual. So a plan is the
plan of exactly what the API sends, not of a hand-copied query.

``FILTERS`` lists the filter combinations the API allows (each equality
filter alone and together, with and without a time range); the plan test
and ``python -m proxy.devkit.history_plans URL`` walk them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.db import make_engine, make_sessionmaker
from billing.enums import PrintStatus
from proxy.api import queries

_WATCHED = ("FROM print_outs", "FROM ledger_entries")


@dataclass
class Plan:
    statement: str
    lines: list[str]
    nodes: list[dict[str, Any]] = field(default_factory=list)  # PostgreSQL: every plan node

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _pg_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _pg_nodes(child)


def _pg_lines(plan: dict[str, Any], depth: int = 0) -> Iterator[str]:
    what = plan["Node Type"]
    if "Index Name" in plan:
        what += f" using {plan['Index Name']}"
    if "Relation Name" in plan:
        what += f" on {plan['Relation Name']}"
    detail = [
        f"{key}: {plan[key]}"
        for key in ("Scan Direction", "Index Cond", "Filter", "Sort Key", "Join Filter")
        if key in plan and not (key == "Scan Direction" and plan[key] == "Forward")
    ]
    actual = ""
    if "Actual Rows" in plan:
        actual = f" (rows={plan['Actual Rows']} loops={plan['Actual Loops']}"
        actual += f" time={plan['Actual Total Time']:.3f} ms)"
    yield "  " * depth + "-> " + what + actual + ("  [" + "; ".join(detail) + "]" if detail else "")
    for child in plan.get("Plans", ()):
        yield from _pg_lines(child, depth + 1)


class PlanCapture:
    """Collects the plan of every watched statement run on ``engine`` while active."""

    def __init__(self, engine: AsyncEngine, *, analyze: bool = False) -> None:
        self.engine = engine
        self.analyze = analyze
        self.plans: list[Plan] = []

    def _before(
        self,
        _conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        if executemany or not any(w in statement for w in _WATCHED):
            return
        if self.engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            rows = cursor.fetchall()
            depth: dict[int, int] = {0: -1}
            lines = []
            for node, parent, _unused, detail in rows:
                depth[node] = depth.get(parent, -1) + 1
                lines.append("  " * depth[node] + str(detail))
            self.plans.append(Plan(statement, lines))
        else:
            options = "ANALYZE, BUFFERS, FORMAT JSON" if self.analyze else "FORMAT JSON"
            cursor.execute(f"EXPLAIN ({options}) " + statement, parameters)
            raw = cursor.fetchall()[0][0]
            doc = json.loads(raw) if isinstance(raw, str) else raw
            root = doc[0]["Plan"]
            lines = list(_pg_lines(root))
            if self.analyze:
                lines.append(f"Execution Time: {doc[0]['Execution Time']:.3f} ms")
            self.plans.append(Plan(statement, lines, list(_pg_nodes(root))))

    @contextmanager
    def active(self) -> Iterator[PlanCapture]:
        sync = self.engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before)
        try:
            yield self
        finally:
            event.remove(sync, "before_cursor_execute", self._before)


def sqlite_problems(plan: Plan) -> list[str]:
    """What makes a SQLite history plan unfit: a sort, or print_outs read without an index."""
    problems = []
    if "USE TEMP B-TREE FOR ORDER BY" in plan.text:
        problems.append("sorts (USE TEMP B-TREE FOR ORDER BY)")
    for line in plan.lines:
        text = line.strip()
        table = " print_outs" in text or " ledger_entries" in text
        if text.startswith("SCAN") and table and "USING" not in text:
            problems.append(f"full table scan: {text}")
    if not any(" INDEX " in line or "PRIMARY KEY" in line for line in plan.lines):
        problems.append("no index used")
    return problems


def pg_problems(plan: Plan) -> list[str]:
    """What makes a PostgreSQL history plan unfit: a Sort node, or no index scan on the table."""
    problems = []
    types = [node["Node Type"] for node in plan.nodes]
    if any("Sort" in t for t in types):
        problems.append(f"sorts ({', '.join(t for t in types if 'Sort' in t)})")
    table = "ledger_entries" if "FROM ledger_entries" in plan.statement else "print_outs"
    scans = [n for n in plan.nodes if n.get("Relation Name") == table]
    if not scans or any(n["Node Type"] not in INDEX_SCANS for n in scans):
        problems.append(f"{table} read by {[n['Node Type'] for n in scans]}")
    return problems


INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan"})


# --- the filter combinations ---------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """Concrete filter values: a user, a printer, a status, an account, a time range."""

    user: str
    printer: str
    status: str
    account: int
    since: str
    until: str


def filters(v: Values) -> list[tuple[str, dict[str, str]]]:
    """Every combination of the equality filters, each also with a time range."""
    names = ("user", "printer", "status", "account")
    values = {"user": v.user, "printer": v.printer, "status": v.status, "account": str(v.account)}
    out: list[tuple[str, dict[str, str]]] = []
    for mask in range(1 << len(names)):
        chosen = {n: values[n] for i, n in enumerate(names) if mask >> i & 1}
        label = "+".join(chosen) or "none"
        out.append((label, chosen))
        out.append((label + "+range", {**chosen, "since": v.since, "until": v.until}))
    return out


async def _main(url: str, values: Values, deep: str | None) -> None:
    """Print the plan of every filter combination's page (after ``deep``, if given)."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    capture = PlanCapture(engine, analyze=engine.dialect.name != "sqlite")
    deep_at = queries.parse_time("deep", deep)
    after = None if deep_at is None else (deep_at, 2**62)
    try:
        for label, params in filters(values):
            status = params.get("status")
            flt = queries.PrintOutFilter(
                delegate=params.get("user"),
                printer=params.get("printer"),
                status=PrintStatus.from_label(status) if status else None,
                since=queries.parse_time("since", params.get("since")),
                until=queries.parse_time("until", params.get("until")),
                account_id=int(params["account"]) if "account" in params else None,
            )
            async with sessions() as session:
                with capture.active():
                    await queries.print_out_page(session, flt, limit=50, after=after)
            for plan in capture.plans:
                if "FROM print_outs" in plan.statement:
                    check = sqlite_problems if engine.dialect.name == "sqlite" else pg_problems
                    print(f"== {label}: {'; '.join(check(plan)) or 'index walk, no sort'}")
                    print(plan.text)
            capture.plans.clear()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) < 5:
        raise SystemExit(
            "usage: python -m proxy.devkit.history_plans URL USER PRINTER ACCOUNT_ID "
            "[STATUS [SINCE UNTIL [DEEP_CURSOR_TIME]]]"
        )
    args = sys.argv[1:] + [None] * 4
    asyncio.run(
        _main(
            sys.argv[1],
            Values(
                user=sys.argv[2],
                printer=sys.argv[3],
                account=int(sys.argv[4]),
                status=args[4] or "held",
                since=args[5] or "2024-06-01",
                until=args[6] or "2025-01-01",
            ),
            args[7],
        )
    )
