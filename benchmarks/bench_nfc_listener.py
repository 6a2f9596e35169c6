"""NFC TCP listener: 200 idle authenticated readers, their memory, and the HTTP tap beside them.

The whole service runs in this process (``ServiceStack`` next to a private
cupsd, ``nfc.tcp_listen`` on a free 127.0.0.1 port, background workers on, as
``proxyprint serve`` runs it).  One hold-mode proxy printer; R readers
(``nfc_admin.add_reader``, each with its own id and token) release it.  The
readers' side is a separate Python process with R plain blocking sockets:
each connects, sends ``READER_ID TOKEN`` and waits for ``OK hello``, then
stays idle.  So this process's VmRSS holds the server side of the
connections only.

Reported, with R idle readers next to none (the baseline, same run):

- the listener's ``open_connections`` and ``authenticated_connections``, and
  this process's open file descriptors;
- this process's VmRSS before opening and with R open, and the difference per
  connection (after a warm-up connection, ``gc.collect()`` before each read);
- HTTP tap latency (``POST /api/v1/readers/{id}/tap``, a card whose owner
  has nothing held: the whole tap path, its event committed), median of 20
  taps, with none and with R idle readers, as a ratio;
- that every connection still answers ``PING`` afterwards, and that closing
  them brings the listener back to 0.

``BENCH_NFC_READERS`` sets R (default 200).
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.stack import ServiceStack
from proxy.keys import READER_LISTENER
from proxy.nfc_listener import ReaderListener

from .harness import LoopThread, env_int, median, percentile, scratch_dir, wait_until

DEFAULT_READERS = 200
TAPS = 20
WARMUP_TAPS = 5
PRINTER = "pp-nfc-hold"
HTTP_READER = "bench-http"
USER = "walker"
CARD = "04:be:7c:01"  # walker's card; walker has nothing held, so a tap releases nothing
TIMEOUT = 60.0

# The readers: plain blocking sockets in their own process.  Commands on stdin
# (``open N``, ``ping``, ``close``), one answer line each on stdout.
READERS_SCRIPT = r"""
import json, socket, sys

config = json.loads(sys.stdin.readline())
port, readers, socks = config["port"], config["readers"], []


def answer(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", "replace").strip()


def ask(sock, line):
    sock.sendall(line.encode("ascii") + b"\n")
    return answer(sock)


for command in sys.stdin:
    verb, *args = command.split()
    if verb == "open":
        ok = 0
        for reader_id, token in readers[: int(args[0])]:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(sock)
            ok += ask(sock, f"{reader_id} {token}") == f"OK hello {reader_id}"
        print("opened", ok, flush=True)
    elif verb == "ping":
        print("pong", sum(ask(sock, "PING") == "OK pong" for sock in socks), flush=True)
    elif verb == "close":
        for sock in socks:
            sock.close()
        socks.clear()
        print("closed", flush=True)
"""


def _rss_kib() -> int:
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Readers:
    """The reader process: ``send("open 200")`` -> ``"opened 200"``."""

    def __init__(self, port: int, readers: list[tuple[str, str]]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", READERS_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._write(json.dumps({"port": port, "readers": readers}))

    def _write(self, line: str) -> None:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def send(self, command: str) -> list[str]:
        """The command's answer, split; RuntimeError if the process ended."""
        self._write(command)
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        answer = stdout.readline().split()
        if not answer:
            raise RuntimeError(f"the reader process ended (exit {self.process.poll()})")
        return answer

    def stop(self) -> None:
        """Close its stdin (it then exits, closing every socket); kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _tap(stack: ServiceStack, token: str) -> float:
    """One HTTP tap (its own connection, as a reader makes it); seconds to the answer."""
    host, _, port = stack.config.http.listen.rpartition(":")
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(
            "POST",
            f"/api/v1/readers/{HTTP_READER}/tap",
            body=json.dumps({"card": CARD}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    seconds = time.perf_counter() - start
    if response.status != 200 or json.loads(body)["released"] != []:
        raise RuntimeError(f"tap: HTTP {response.status} {body[:500]!r}")
    return seconds


def _taps(stack: ServiceStack, token: str, count: int) -> list[float]:
    return [_tap(stack, token) for _ in range(count)]


@dataclass
class Result:
    readers: int
    opened: int  # readers that got ``OK hello``
    open_connections: int
    authenticated: int
    fds_before: int
    fds_open: int
    rss_before: int  # KiB
    rss_open: int
    rss_closed: int
    taps_idle: list[float]  # seconds, no reader connected
    taps_busy: list[float]  # seconds, every reader connected and idle
    pongs: int
    open_after_close: int
    fds_closed: int


def _measure(root: Path, count: int) -> Result:
    cupsd = PrivateCupsd(log_level="warn")
    loop = LoopThread()
    stack = ServiceStack(
        cupsd, root / "service", extra={"nfc": {"tcp_listen": f"127.0.0.1:{free_port()}"}}
    )
    started = False
    readers: Readers | None = None
    try:
        cupsd.start()
        loop.run(stack.__aenter__())
        started = True
        assert stack.app is not None
        listener: ReaderListener = stack.app[READER_LISTENER]
        loop.run(stack.add_printer(PRINTER, target="ipp://127.0.0.1:9/ipp/print", mode="hold"))
        loop.run(stack.add_users(USER))
        loop.run(stack.add_card(USER, CARD))
        token = loop.run(stack.add_reader(HTTP_READER, [PRINTER]))
        ids = [f"rdr-{n:03d}" for n in range(count)]
        pairs = [(rid, loop.run(stack.add_reader(rid, [PRINTER]))) for rid in ids]
        readers = Readers(listener.port, pairs)

        # Warm-up: taps, and one reader connection opened and closed.
        _taps(stack, token, WARMUP_TAPS)
        if readers.send("open 1") != ["opened", "1"]:
            raise RuntimeError("warm-up reader was not authenticated")
        readers.send("close")
        wait_until(lambda: listener.open_connections == 0, "warm-up closed", TIMEOUT)

        taps_idle = _taps(stack, token, TAPS)
        fds_before, rss_before = _fds(), _rss_kib()
        opened = int(readers.send(f"open {count}")[1])
        wait_until(
            lambda: listener.authenticated_connections >= opened, "readers authenticated", TIMEOUT
        )
        open_connections, authenticated = (
            listener.open_connections,
            listener.authenticated_connections,
        )
        fds_open, rss_open = _fds(), _rss_kib()
        taps_busy = _taps(stack, token, TAPS)
        pongs = int(readers.send("ping")[1])
        readers.send("close")
        wait_until(lambda: listener.open_connections == 0, "readers closed", TIMEOUT)
        return Result(
            readers=count,
            opened=opened,
            open_connections=open_connections,
            authenticated=authenticated,
            fds_before=fds_before,
            fds_open=fds_open,
            rss_before=rss_before,
            rss_open=rss_open,
            rss_closed=_rss_kib(),
            taps_idle=taps_idle,
            taps_busy=taps_busy,
            pongs=pongs,
            open_after_close=listener.open_connections,
            fds_closed=_fds(),
        )
    finally:
        if readers is not None:
            readers.stop()
        if started:
            loop.run(stack.__aexit__(None, None, None))
        loop.close()
        cupsd.stop()


def _ms(values: list[float]) -> str:
    return f"median {median(values) * 1000:.1f} ms p95 {percentile(values, 95) * 1000:.1f} ms"


def main() -> None:
    count = env_int("BENCH_NFC_READERS", DEFAULT_READERS)
    with scratch_dir("ppbench-nfc-") as root:
        r = _measure(root, count)
    grown = r.rss_open - r.rss_before
    print(
        f"nfc_listener: {r.opened} of {r.readers} readers authenticated and idle: "
        f"open_connections {r.open_connections}, authenticated {r.authenticated}; "
        f"process fds {r.fds_before} -> {r.fds_open}; "
        f"VmRSS {r.rss_before / 1024:.1f} MiB -> {r.rss_open / 1024:.1f} MiB "
        f"(+{grown / 1024:.2f} MiB, {grown / max(r.opened, 1):.1f} KiB per connection)",
        flush=True,
    )
    print(
        f"nfc_listener: HTTP tap with {r.readers} idle readers ({TAPS} taps): {_ms(r.taps_busy)}; "
        f"with 0 idle readers: {_ms(r.taps_idle)}; "
        f"ratio {median(r.taps_busy) / median(r.taps_idle):.2f}x",
        flush=True,
    )
    print(
        f"nfc_listener: afterwards {r.pongs} of {r.opened} connections answered PING; "
        f"all closed: open_connections {r.open_after_close}, process fds {r.fds_closed}, "
        f"VmRSS {r.rss_closed / 1024:.1f} MiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
