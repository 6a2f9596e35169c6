"""PaperCut server checks (SPEC §9, "Server configuration" of the OfficeRnD guide).

Every printer PaperCut manages must be *unauthenticated* and must have a *cost*
(a printer without one charges nobody). ``check`` lists the problems;
``fix`` repairs what the Web Services API can repair and says, with the admin
UI steps, what needs a person.

What the API can and cannot do (PaperCut's ``ServerCommandProxy``):

* ``getPrinterProperty``/``setPrinterProperty`` document the properties
  cost-model, custom-field-1..6, disabled, print-stats.job-count,
  print-stats.page-count and printer-id (the last three read-only). There is
  no documented property for the "Unauthenticated printer" switch, so
  ``fix`` never changes it: it is reported with the UI steps. ``check``
  reads it as the property ``unauthenticated`` (what the simulator answers);
  a server that refuses that property gets an "unknown, check by hand"
  problem instead of a guess.
* ``getPrinterCostSimple`` answers only for printers on the Simple cost
  model; ``setPrinterCostSimple`` sets a page cost (and that model). ``fix``
  cannot invent a price: a printer without a cost is fixed only when a
  default cost is given, otherwise it needs a person. A printer on another
  cost model (size tables...) cannot be read through the API: reported for a
  person to verify.
* ``listPrinters`` also lists MFDs as ``device\\name``: they are not print
  queues and are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from billing.exceptions import InvalidAmount
from billing.papercut.client import PaperCutClient, split_printer
from billing.papercut.exceptions import PaperCutFault, PaperCutUnavailable

__all__ = [
    "COST_STEPS",
    "UNAUTHENTICATED_PROPERTY",
    "UNAUTHENTICATED_STEPS",
    "FixReport",
    "Problem",
    "ProblemKind",
    "check",
    "fix",
]

UNAUTHENTICATED_PROPERTY = "unauthenticated"
DEVICE_SERVER = "device"

UNAUTHENTICATED_STEPS = (
    "Log in to the PaperCut admin web interface.",
    "Go to the Printers tab and select the printer"
    " (select [Template Printer] too, so that printers added later inherit it).",
    "Scroll to Advanced Configuration.",
    "Enable 'Unauthenticated printer' and apply.",
)
COST_STEPS = (
    "Log in to the PaperCut admin web interface.",
    "Go to the Printers tab and select the printer.",
    "Under charging, set the cost per page (each printer has its own) and apply;"
    " or run the fix with a default page cost for every printer without one.",
)
COST_MODEL_STEPS = (
    "Log in to the PaperCut admin web interface.",
    "Go to the Printers tab, select the printer and check that its cost model has prices set.",
)


class ProblemKind(StrEnum):
    AUTHENTICATED = "authenticated"  # the printer is not unauthenticated
    UNAUTHENTICATED_UNKNOWN = "unauthenticated-unknown"  # the API cannot tell
    NO_COST = "no-cost"  # Simple model, page cost 0
    COST_UNKNOWN = "cost-unknown"  # another cost model, or the cost cannot be read


@dataclass(frozen=True, slots=True)
class Problem:
    server: str
    printer: str
    kind: ProblemKind
    message: str
    fixable: bool  # ``fix`` repairs it with what it was given
    steps: tuple[str, ...]  # what a person does otherwise

    @property
    def name(self) -> str:
        return f"{self.server}\\{self.printer}"

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


@dataclass
class FixReport:
    fixed: list[Problem] = field(default_factory=list)
    needs_person: list[Problem] = field(default_factory=list)
    failed: list[tuple[Problem, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing left to do."""
        return not self.needs_person and not self.failed


def _positive(default_cost: Decimal | None) -> Decimal | None:
    if default_cost is not None and (not isinstance(default_cost, Decimal) or default_cost <= 0):
        raise InvalidAmount(f"default_cost must be a positive Decimal, got {default_cost!r}")
    return default_cost


async def _check_unauthenticated(
    client: PaperCutClient, server: str, printer: str, prop: str | None
) -> Problem | None:
    def problem(kind: ProblemKind, message: str) -> Problem:
        return Problem(server, printer, kind, message, False, UNAUTHENTICATED_STEPS)

    if prop is None:
        return problem(
            ProblemKind.UNAUTHENTICATED_UNKNOWN,
            "the API cannot tell whether the printer is unauthenticated: check by hand",
        )
    try:
        value = await client.get_printer_property(server, printer, prop)
    except PaperCutFault as exc:
        return problem(
            ProblemKind.UNAUTHENTICATED_UNKNOWN,
            f"the server does not report whether the printer is unauthenticated"
            f" ({exc.fault_string}): check by hand",
        )
    if value.strip().lower() != "true":
        return problem(ProblemKind.AUTHENTICATED, "the printer is not set as unauthenticated")
    return None


async def _check_cost(
    client: PaperCutClient, server: str, printer: str, default_cost: Decimal | None
) -> Problem | None:
    try:
        model = await client.get_printer_property(server, printer, "cost-model")
        if model.strip().upper() != "SIMPLE":
            return Problem(
                server,
                printer,
                ProblemKind.COST_UNKNOWN,
                f"cost model {model}: its prices cannot be read through the API, check by hand",
                False,
                COST_MODEL_STEPS,
            )
        cost = await client.get_printer_cost_simple(server, printer)
    except PaperCutFault as exc:
        return Problem(
            server,
            printer,
            ProblemKind.COST_UNKNOWN,
            f"cannot read its cost ({exc.fault_string}): check by hand",
            False,
            COST_MODEL_STEPS,
        )
    if cost > 0:
        return None
    fixable = default_cost is not None
    message = "no page cost is set: nobody is charged for it"
    if fixable:
        message += f" (fix sets {default_cost})"
    return Problem(server, printer, ProblemKind.NO_COST, message, fixable, COST_STEPS)


async def check(
    client: PaperCutClient,
    *,
    default_cost: Decimal | None = None,
    unauthenticated_property: str | None = UNAUTHENTICATED_PROPERTY,
) -> list[Problem]:
    """Every problem of every printer (MFD devices skipped), in listing order.

    ``default_cost`` only marks costless printers as fixable;
    ``unauthenticated_property`` None skips asking the server (every printer
    then gets an "unknown" problem). Raises ``PaperCutUnavailable`` when the
    server cannot be reached.
    """
    cost = _positive(default_cost)
    problems: list[Problem] = []
    for entry in await client.all_printers():
        server, printer = split_printer(entry)
        if server == DEVICE_SERVER:
            continue
        for found in (
            await _check_unauthenticated(client, server, printer, unauthenticated_property),
            await _check_cost(client, server, printer, cost),
        ):
            if found is not None:
                problems.append(found)
    return problems


async def fix(
    client: PaperCutClient,
    *,
    default_cost: Decimal | None = None,
    unauthenticated_property: str | None = UNAUTHENTICATED_PROPERTY,
    problems: Sequence[Problem] | None = None,
) -> FixReport:
    """Repair the fixable problems (found by ``check``, or those given).

    Only a missing page cost is repaired, with ``default_cost``
    (``setPrinterCostSimple``: idempotent, so running fix again is safe).
    Everything else goes to ``needs_person`` with its UI steps; a repair the
    server refused or could not be reached for goes to ``failed``.
    """
    cost = _positive(default_cost)
    if problems is None:
        problems = await check(
            client, default_cost=cost, unauthenticated_property=unauthenticated_property
        )
    report = FixReport()
    for problem in problems:
        if problem.kind is not ProblemKind.NO_COST or cost is None:
            report.needs_person.append(problem)
            continue
        try:
            await client.set_printer_cost_simple(problem.server, problem.printer, cost)
        except (PaperCutFault, PaperCutUnavailable) as exc:
            report.failed.append((problem, str(exc)))
        else:
            report.fixed.append(problem)
    return report
