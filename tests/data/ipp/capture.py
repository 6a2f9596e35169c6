"""Re-make the IPP byte fixtures in this directory from real servers (run as root).

    .venv/bin/python tests/data/ipp/capture.py

It starts a private cupsd and an ippeveprinter (``proxy.devkit``), puts a
small recording HTTP proxy in front of each, runs ``ipptool`` (libcups's
encoder) and our ``IppTarget`` through it, and writes every exchanged IPP
body as ``<name>.request.bin`` / ``<name>.response.bin``.  Nothing here is
downloaded: the bytes are what CUPS 2.4.2 and ippeveprinter said.
"""

from __future__ import annotations

import asyncio
import tempfile
from asyncio.subprocess import PIPE
from pathlib import Path

from aiohttp import ClientSession, web

from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.targets.base import IppJobState, PrintRequest
from proxy.targets.errors import TargetRequestError
from proxy.targets.ipp import IppTarget

HERE = Path(__file__).resolve().parent
PRINTER_ATTRIBUTES = ",".join(
    [
        "media-col-default",
        "media-col-ready",
        "printer-resolution-supported",
        "copies-supported",
        "document-format-supported",
        "printer-state",
        "printer-name",
        "printer-up-time",
        "printer-current-time",
    ]
)

HEAD = """{
  OPERATION %s
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR name requesting-user-name carol
"""
TESTS = {
    "ippeve-print-job": HEAD % "Print-Job"
    + """  ATTR name job-name fixture-print
  ATTR mimeMediaType document-format application/pdf
  GROUP job-attributes-tag
  ATTR integer copies 4
  ATTR keyword sides two-sided-long-edge
  FILE $filename
}
""",
    "ippeve-get-printer-attributes": HEAD % "Get-Printer-Attributes"
    + f"  ATTR keyword requested-attributes {PRINTER_ATTRIBUTES}\n}}\n",
    "cupsd-get-jobs-all": HEAD % "Get-Jobs"
    + """  ATTR keyword which-jobs all
  ATTR boolean my-jobs false
  ATTR keyword requested-attributes all
}
""",
    "cupsd-get-jobs-job-ids": HEAD % "Get-Jobs"
    + """  ATTR integer job-ids 2,3,5,7
  ATTR keyword requested-attributes job-id,job-state,job-state-reasons,job-impressions-completed
}
""",
}


class Recorder:
    """An HTTP proxy that keeps each IPP request and response body."""

    def __init__(self, upstream: str, name: str) -> None:
        self.upstream = upstream
        self.name = name
        self.exchanges: list[tuple[bytes, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with (
            ClientSession() as session,
            session.post(
                self.upstream + request.path, data=body, headers={"Content-Type": "application/ipp"}
            ) as resp,
        ):
            answer = await resp.read()
        self.exchanges.append((body, answer))
        return web.Response(body=answer, content_type="application/ipp")


async def serve(recorder: Recorder) -> tuple[web.AppRunner, int]:
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def save(name: str, exchange: tuple[bytes, bytes]) -> None:
    (HERE / f"{name}.request.bin").write_bytes(exchange[0])
    (HERE / f"{name}.response.bin").write_bytes(exchange[1])
    print(f"{name}: {len(exchange[0])} + {len(exchange[1])} bytes")


async def ipptool(uri: str, test: str, tmp: Path, **defines: str) -> None:
    # Asynchronously: the recording proxy runs in this event loop.
    path = tmp / "t.test"
    path.write_text(test)
    args = ["-T", "10"]
    for key, value in defines.items():
        args += ["-d", f"{key}={value}"]
    proc = await asyncio.create_subprocess_exec(
        "ipptool", *args, uri, str(path), stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ipptool failed: {out.decode()}{err.decode()}")


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    pdf = make_pdf(tmp / "fixture.pdf", 1)
    with PrivateCupsd() as cupsd, IppEvePrinter() as printer:
        cupsd.add_queue("fixture", "file:///dev/null")
        # A varied history: completed, held, canceled jobs of several users.
        ids = [cupsd.lp("fixture", pdf, user=u) for u in ("alice", "bob", "carol", "dave")]
        held = cupsd.lp("fixture", pdf, user="erin", options={"job-hold-until": "indefinite"})
        ids += [cupsd.lp("fixture", pdf, user=u, copies=2) for u in ("frank", "grace")]
        doomed = cupsd.lp("fixture", pdf, user="heidi", options={"job-hold-until": "indefinite"})
        cupsd.cancel(doomed)
        for job_id in ids:
            cupsd.wait_job(job_id, {IppJobState.COMPLETED})
        assert cupsd.job_state(held) == IppJobState.PENDING_HELD

        eve = Recorder(f"http://127.0.0.1:{printer.port}", "ippeve")
        cups = Recorder(f"http://127.0.0.1:{cupsd.port}", "cupsd")
        eve_runner, eve_port = await serve(eve)
        cups_runner, cups_port = await serve(cups)
        try:
            eve_uri = f"ipp://127.0.0.1:{eve_port}/ipp/print"
            cups_uri = f"ipp://127.0.0.1:{cups_port}/printers/fixture"
            await ipptool(eve_uri, TESTS["ippeve-print-job"], tmp, filename=str(pdf))
            save("ippeve-print-job", eve.exchanges[-1])
            printer.wait_for_documents(1)
            await ipptool(eve_uri, TESTS["ippeve-get-printer-attributes"], tmp)
            save("ippeve-get-printer-attributes", eve.exchanges[-1])

            target = IppTarget.for_printer(eve_uri, timeout=10)
            await target.poll([1])
            save("ippeve-get-jobs-which-jobs", eve.exchanges[-1])
            try:
                await target.submit(PrintRequest(pdf, "application/x-unknown", "bad", "carol"))
            except TargetRequestError:
                save("ippeve-print-job-bad-format", eve.exchanges[-1])
            await target.close()

            await ipptool(cups_uri, TESTS["cupsd-get-jobs-all"], tmp)
            save("cupsd-get-jobs-all", cups.exchanges[-1])
            await ipptool(cups_uri, TESTS["cupsd-get-jobs-job-ids"], tmp)
            save("cupsd-get-jobs-job-ids", cups.exchanges[-1])

            target = IppTarget.for_printer(cups_uri, timeout=10)
            target.poll_strategy = "job-ids"
            await target.poll([1, 999])
            save("cupsd-get-jobs-not-found", cups.exchanges[-2])
            try:
                await target.submit(PrintRequest(pdf, "application/x-unknown", "bad", "carol"))
            except TargetRequestError:
                save("cupsd-print-job-bad-format", cups.exchanges[-1])
            await target.close()
        finally:
            await eve_runner.cleanup()
            await cups_runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
