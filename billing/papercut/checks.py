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

No double charge (SPEC §8): PaperCut charges every job it tracks to the job's
charged account, the printing user's personal account unless the printer
charges a shared account. proxyprint then charges the delegators itself, so a
printer proxyprint sends PaperCut jobs to must charge the clearing shared
account (``[papercut] clearing_account``), which proxyprint credits back per
job. ``check`` (given ``clearing_account``) reports a missing clearing account
and every such printer (``managed``: their names; None: every printer) that
charges anything else (``DOUBLE_CHARGE``: an error); ``fix`` creates the
account (``addNewSharedAccount``) and points the printer at it through the
printer property ``charge-to-shared-account`` (``CHARGE_ACCOUNT_PROPERTY``,
what the simulator models the printer's charging setting as). A server that
refuses that property gets a "check by hand" problem with the UI steps.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from billing.exceptions import InvalidAmount
from billing.papercut.client import PaperCutClient, split_printer
from billing.papercut.exceptions import PaperCutFault, PaperCutUnavailable

__all__ = [
    "CHARGE_ACCOUNT_PROPERTY",
    "CHARGE_STEPS",
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
CHARGE_ACCOUNT_PROPERTY = "charge-to-shared-account"
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
CHARGE_STEPS = (
    "Log in to the PaperCut admin web interface.",
    "Go to the Printers tab and select the printer proxyprint sends its jobs to.",
    "Set it to charge every job to the clearing shared account ([papercut] clearing_account)"
    " instead of the printing user's personal account, and apply.",
)
CLEARING_STEPS = (
    "Log in to the PaperCut admin web interface.",
    "Go to the Accounts tab, create the shared account named in [papercut] clearing_account,"
    " or run 'proxyprint papercut fix'.",
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
    NO_CLEARING_ACCOUNT = "no-clearing-account"  # the clearing shared account is missing
    DOUBLE_CHARGE = "double-charge"  # charges a personal account: the job is charged twice
    CHARGE_UNKNOWN = "charge-unknown"  # the server does not say which account it charges


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
        """``server\\printer``; a server-wide problem (``server`` "") names its object."""
        return f"{self.server}\\{self.printer}" if self.server else self.printer

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


async def _check_clearing_account(client: PaperCutClient, clearing: str) -> Problem | None:
    if await client.is_shared_account_exists(clearing):
        return None
    return Problem(
        "",
        clearing,
        ProblemKind.NO_CLEARING_ACCOUNT,
        "the clearing shared account does not exist (fix creates it)",
        True,
        CLEARING_STEPS,
    )


async def _check_charge(
    client: PaperCutClient, server: str, printer: str, clearing: str
) -> Problem | None:
    try:
        charged = (
            await client.get_printer_property(server, printer, CHARGE_ACCOUNT_PROPERTY)
        ).strip()
    except PaperCutFault as exc:
        return Problem(
            server,
            printer,
            ProblemKind.CHARGE_UNKNOWN,
            f"the server does not report which account the printer charges"
            f" ({exc.fault_string}): check by hand that it charges {clearing!r}",
            False,
            CHARGE_STEPS,
        )
    if charged.lower() == clearing.lower():
        return None
    what = (
        "the printing user's personal account" if not charged else f"the shared account {charged!r}"
    )
    return Problem(
        server,
        printer,
        ProblemKind.DOUBLE_CHARGE,
        f"charges {what}: PaperCut would charge each job there and proxyprint the"
        f" delegators again (double charge); it must charge the clearing account {clearing!r}",
        True,
        CHARGE_STEPS,
    )


async def check(
    client: PaperCutClient,
    *,
    default_cost: Decimal | None = None,
    unauthenticated_property: str | None = UNAUTHENTICATED_PROPERTY,
    clearing_account: str | None = None,
    managed: Collection[str] | None = None,
) -> list[Problem]:
    """Every problem of every printer (MFD devices skipped), in listing order.

    ``default_cost`` only marks costless printers as fixable;
    ``unauthenticated_property`` None skips asking the server (every printer
    then gets an "unknown" problem). With ``clearing_account``, the clearing
    account must exist and every printer proxyprint sends to (``managed``:
    printer names, case-insensitive; None: every printer) must charge it
    (``managed`` empty: proxyprint sends PaperCut nothing, neither is checked).
    Raises ``PaperCutUnavailable`` when the server cannot be reached.
    """
    cost = _positive(default_cost)
    problems: list[Problem] = []
    if clearing_account and (managed is None or managed):  # no PaperCut targets: not needed
        missing = await _check_clearing_account(client, clearing_account)
        if missing is not None:
            problems.append(missing)
    targets = None if managed is None else {m.lower() for m in managed}
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
        if clearing_account and (targets is None or printer.lower() in targets):
            charge = await _check_charge(client, server, printer, clearing_account)
            if charge is not None:
                problems.append(charge)
    return problems


async def fix(
    client: PaperCutClient,
    *,
    default_cost: Decimal | None = None,
    unauthenticated_property: str | None = UNAUTHENTICATED_PROPERTY,
    problems: Sequence[Problem] | None = None,
    clearing_account: str | None = None,
    managed: Collection[str] | None = None,
) -> FixReport:
    """Repair the fixable problems (found by ``check``, or those given).

    A missing page cost is repaired with ``default_cost``
    (``setPrinterCostSimple``); a missing clearing account is created
    (``addNewSharedAccount``) and a double-charging printer set to charge it
    (``setPrinterProperty``): all idempotent, so running fix again is safe.
    Everything else goes to ``needs_person`` with its UI steps; a repair the
    server refused or could not be reached for goes to ``failed``.
    """
    cost = _positive(default_cost)
    if problems is None:
        problems = await check(
            client,
            default_cost=cost,
            unauthenticated_property=unauthenticated_property,
            clearing_account=clearing_account,
            managed=managed,
        )
    report = FixReport()
    for problem in problems:
        try:
            if problem.kind is ProblemKind.NO_CLEARING_ACCOUNT:
                await client.add_new_shared_account(problem.printer)
            elif problem.kind is ProblemKind.DOUBLE_CHARGE and clearing_account:
                await client.set_printer_property(
                    problem.server, problem.printer, CHARGE_ACCOUNT_PROPERTY, clearing_account
                )
            elif problem.kind is ProblemKind.NO_COST and cost is not None:
                await client.set_printer_cost_simple(problem.server, problem.printer, cost)
            else:
                report.needs_person.append(problem)
                continue
        except (PaperCutFault, PaperCutUnavailable) as exc:
            report.failed.append((problem, str(exc)))
        else:
            report.fixed.append(problem)
    return report
