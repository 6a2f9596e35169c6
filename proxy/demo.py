"""``proxyprint demo``: the whole pipeline on embedded defaults, shown step by step.

Starts a private cupsd (its own directories and port, our backend installed),
an IPP Everywhere printer (ippeveprinter), the PaperCut simulator, and the
service on SQLite; sets up a
proxy printer, users and a shared account; prints a delegated PDF with ``lp``;
follows it to ``completed``; shows the history, transactions and balances
through the HTTP API; then stops everything it started.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from billing.enums import PrintStatus
from proxy.devkit.papercut.simulator import PaperCutSimulator, install_papercut_backend

from .devkit.cupsd import PrivateCupsd
from .devkit.documents import make_pdf
from .devkit.ippeve import IppEvePrinter
from .devkit.stack import ServiceStack


def say(text: str) -> None:
    print(text, flush=True)


async def _api(stack: ServiceStack, token: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession(stack.base_url, headers={"Authorization": f"Bearer {token}"}) as s,
        s.get(path) as resp,
    ):
        resp.raise_for_status()
        return await resp.json()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )


async def _direct_print(stack: ServiceStack, printer: IppEvePrinter, root: Path) -> None:
    await stack.add_printer("pp-direct", target=printer.uri, mode="direct", cost_mono="0.10")
    say("• proxy printer pp-direct (direct mode, 0.10 EUR per page) -> " + printer.uri)
    # They charge others and ProjectX: each needs the delegate right (SPEC §3).
    await stack.add_users("alice", "bob", "carol", delegate=True)
    await stack.add_users("dave")
    await stack.add_shared_account("ProjectX")
    say(
        "• users alice, bob, carol (with the delegate right: `proxyprint user add NAME"
        " --delegate`), dave (without it); shared account ProjectX"
    )
    pdf = make_pdf(root / "report.pdf", 3, title="proxyprint demo report")
    options = {"delegators": "alice,bob:2", "shared-accounts": "ProjectX"}
    say(
        "\n$ lp -U carol -d pp-direct -o delegators=alice,bob:2"
        " -o shared-accounts=ProjectX report.pdf"
    )
    job = await stack.lp("pp-direct", pdf, user="carol", options=options, title="report.pdf")
    say(f"  CUPS job pp-direct-{job}: our backend streams it to the proxyprint intake")
    po = await stack.wait_print_out("pp-direct", job, timeout=60)
    say(
        f"  print-out {po.id}: {PrintStatus(po.status).label}:"
        f" {po.pages} pages x {po.copies} copies"
    )
    docs = await asyncio.to_thread(
        printer.wait_for_documents, 1, 30.0, where=lambda d: d.title == "report.pdf"
    )
    same = docs[0].read_bytes() == pdf.read_bytes()
    say(
        f"  the printer received {docs[0].path.name}: copies={docs[0].copies}, "
        f"byte-identical={same}"
    )


async def _forbidden(stack: ServiceStack, root: Path) -> None:
    """One delegation the delegate may not make: held, nothing printed or charged."""
    say("\n$ lp -U dave -d pp-direct -o delegators=alice notes.pdf   (dave lacks the right)")
    pdf = make_pdf(root / "notes.pdf", 1, title="notes")
    job = await stack.lp(
        "pp-direct", pdf, user="dave", options={"delegators": "alice"}, title="notes.pdf"
    )
    po = await stack.wait_print_out("pp-direct", job, {PrintStatus.HELD})
    say(f"  print-out {po.id}: held {po.status_reason}: {po.status_message}")
    say("  nothing printed or charged; an admin grants the right, then")
    say(
        f"  POST /api/v1/jobs/{po.id}/recheck, or fixes it with PUT /api/v1/jobs/{po.id}/delegation"
    )


async def _post(stack: ServiceStack, token: str, path: str, body: dict[str, Any]) -> Any:
    async with (
        aiohttp.ClientSession(stack.base_url, headers={"Authorization": f"Bearer {token}"}) as s,
        s.post(path, json=body) as resp,
    ):
        resp.raise_for_status()
        return await resp.json()


async def _hold_and_tap(stack: ServiceStack, printer: IppEvePrinter, root: Path) -> None:
    await stack.add_printer("pp-hold", target=printer.uri, mode="hold", cost_mono="0.10")
    await stack.add_card("alice", "04:A1:B2:C3")
    reader_token = await stack.add_reader("lobby", ["pp-hold"])
    say("\n• hold printer pp-hold; alice's NFC card 04:A1:B2:C3; reader 'lobby' releases pp-hold")
    say("$ lp -U alice -d pp-hold -o shared-accounts=ProjectX memo.pdf")
    pdf = make_pdf(root / "memo.pdf", 1, title="memo")
    job = await stack.lp(
        "pp-hold", pdf, user="alice", title="memo.pdf", options={"shared-accounts": "ProjectX"}
    )
    po = await stack.wait_print_out("pp-hold", job, {PrintStatus.HELD})
    say(f"  print-out {po.id}: held in the spool; nothing has reached the printer")
    tap = await _post(stack, reader_token, "/api/v1/readers/lobby/tap", {"card": "04a1b2c3"})
    say(f"  alice taps her card at 'lobby': released {[r['id'] for r in tap['released']]}")
    po = await stack.wait_print_out("pp-hold", job, timeout=60)
    say(f"  print-out {po.id}: {PrintStatus(po.status).label}")


async def _ticket(stack: ServiceStack, printer: IppEvePrinter, root: Path) -> None:
    await stack.add_printer("pp-ticket", target=printer.uri, mode="ticket", cost_mono="0.50")
    say("\n• job-ticket printer pp-ticket (0.50 EUR per page)")
    say("$ lp -U bob -d pp-ticket -o delegators=bob,carol poster.pdf")
    pdf = make_pdf(root / "poster.pdf", 2, title="poster")
    job = await stack.lp(
        "pp-ticket", pdf, user="bob", title="poster.pdf", options={"delegators": "bob,carol"}
    )
    po = await stack.wait_print_out("pp-ticket", job, {PrintStatus.HELD})
    operator = await stack.token("ticket-operator")
    tickets = await _api(stack, operator, "/api/v1/tickets")
    for t in tickets["items"]:
        say(f"  ticket {t['number']}: {t['title']} by {t['delegate']}, cost {t['cost']} EUR")
    await _post(stack, operator, f"/api/v1/tickets/{po.id}/release", {})
    say("  the ticket operator releases it")
    po = await stack.wait_print_out("pp-ticket", job, timeout=60)
    say(f"  print-out {po.id}: {PrintStatus(po.status).label}, charged the ticket cost pro rata")


async def _papercut(stack: ServiceStack, sim: PaperCutSimulator, root: Path) -> None:
    # The queue charges proxyprint's clearing account (what `papercut fix` sets up).
    sim.add_shared_account("proxyprint-clearing")
    sim.add_printer(
        "papercut",
        "pc-release",
        cost_mono=Decimal("0.15"),
        hold_release=True,
        charge_account="proxyprint-clearing",
    )
    for user in ("alice", "bob", "carol"):
        sim.add_user(user, balance=Decimal("10.00"))
    await asyncio.to_thread(
        stack.cupsd.add_queue, "pc-release", sim.device_uri("pc-release", server="papercut")
    )
    await stack.add_printer("pp-papercut", target="cups://pc-release", papercut=True)
    say("\n• PaperCut (simulated): hold/release queue pc-release at 0.15 EUR per page;")
    say("  proxy printer pp-papercut sends to it (PaperCut-managed)")
    say("$ lp -U carol -d pp-papercut -o delegators=alice,bob budget.pdf")
    pdf = make_pdf(root / "budget.pdf", 2, title="budget")
    job = await stack.lp(
        "pp-papercut", pdf, user="carol", title="budget.pdf", options={"delegators": "alice,bob"}
    )
    po = await stack.wait_print_out("pp-papercut", job, {PrintStatus.PENDING_EXTERNAL})
    say(f"  print-out {po.id}: pending_external, shadow transactions at 0.00 ({po.document_name})")
    for _ in range(200):
        if any(r.document_name == po.document_name for r in sim.held_jobs()):
            break
        await asyncio.sleep(0.05)
    sim.release(po.document_name or "")
    say("  the job is released at the printer in PaperCut")
    po = await stack.wait_print_out("pp-papercut", job, timeout=60)
    for _ in range(200):
        if len(sim.adjustments(comment_contains=f"print-out {po.id}:")) >= 3:
            break
        await asyncio.sleep(0.05)
    say(f"  print-out {po.id}: {PrintStatus(po.status).label}, PaperCut's cost {po.cost:.2f} EUR")
    for adj in sim.adjustments(comment_contains=f"print-out {po.id}:"):
        say(f"  PaperCut adjustment {adj.account_name}: {adj.amount:.2f} ({adj.comment})")
    say(
        f"  PaperCut balances: carol {sim.balance('carol'):.2f} (not charged),"
        f" clearing {sim.shared_balance('proxyprint-clearing'):.2f}"
    )


async def _show(stack: ServiceStack) -> None:
    token = await stack.token("admin")
    history = await _api(stack, token, "/api/v1/printouts")
    say("\nHistory (GET /api/v1/printouts):")
    rows = [["id", "status", "printer", "delegate", "title", "pages", "copies", "cost"]]
    for item in history["items"]:
        rows.append(
            [
                str(item["id"]),
                item["status"],
                item["printer"],
                item["delegate"],
                item["title"],
                str(item["pages"]),
                str(item["copies"]),
                f"{item['cost'] or '-'} {item['currency']}",
            ]
        )
    say(_table(rows))
    for item in history["items"]:
        detail = await _api(stack, token, f"/api/v1/printouts/{item['id']}")
        say(f"\nPrint-out {item['id']} transactions (pro rata by copies):")
        rows = [["account", "type", "weight", "amount", "status"]]
        for t in detail["transactions"]:
            rows.append(
                [
                    t["account"]["name"],
                    t["account"]["type"],
                    str(t["weight"]),
                    t["amount"],
                    t["status"],
                ]
            )
        say(_table(rows))
        say("  events: " + " -> ".join(e["to"] or e["reason"] or "?" for e in detail["events"]))
    accounts = await _api(stack, token, "/api/v1/accounts")
    say("\nBalances (derived from the ledger):")
    say(
        _table(
            [["account", "type", "balance"]]
            + [[a["name"], a["type"], a["balance"]] for a in accounts["items"]]
        )
    )


async def run_demo() -> int:
    root = Path(tempfile.mkdtemp(prefix="ppdemo-"))
    say("proxyprint demo — everything runs privately under " + str(root))
    cupsd = PrivateCupsd(log_level="info")
    printer = IppEvePrinter(name="proxyprint-demo-printer")
    try:
        await asyncio.to_thread(cupsd.start)
        say(f"• private cupsd on 127.0.0.1:{cupsd.port} with the proxyprint backend installed")
        await asyncio.to_thread(printer.start)
        say(f"• IPP Everywhere printer (ippeveprinter) at {printer.uri}")
        install_papercut_backend(cupsd.serverbin, root / "papercut.db")
        async with PaperCutSimulator(root / "papercut.db", token="demo-token") as sim:
            say(f"• PaperCut simulator (XML-RPC) at {sim.url}")
            papercut = {"url": sim.url, "token": "demo-token", "db_url": sim.db_url}
            async with ServiceStack(cupsd, root / "service", extra={"papercut": papercut}) as stack:
                say(f"• proxyprint service: API {stack.base_url}, intake {stack.intake_socket}")
                await _direct_print(stack, printer, root)
                await _forbidden(stack, root)
                await _hold_and_tap(stack, printer, root)
                await _ticket(stack, printer, root)
                await _papercut(stack, sim, root)
                await _show(stack)
    finally:
        await asyncio.to_thread(printer.stop)
        await asyncio.to_thread(cupsd.stop)
        shutil.rmtree(root, ignore_errors=True)
    say("\nDemo finished; everything it started has been stopped.")
    return 0
