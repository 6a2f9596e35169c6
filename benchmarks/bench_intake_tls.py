"""TCP intake hand-off over TLS with HMAC, next to plain TCP with HMAC, same run.

Two services (``ServiceStack`` on one loop thread, a private cupsd for their
set-up) each with a TCP intake: one with TLS (a certificate ``openssl`` makes
here), one without; both check the per-request HMAC. Our backend, started as
cupsd starts it, hands a 1-page PDF to a hold-mode queue (accepted and
recorded, nothing printed, so the figure is the hand-off alone), alternating
between the two after warm-up runs. Reported: median wall time of a backend
run for each and their ratio (goal <= 1.2x).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.documents import make_pdf
from proxy.devkit.stack import ServiceStack

from .harness import LoopThread, backend_argv, backend_env, env_int, median, scratch_dir

QUEUE = "pp-tls-bench"
SECRET = "bench-secret-" * 4  # 52 bytes
WARMUP = 3


def _certificate(root: Path) -> tuple[Path, Path]:
    cert, key = root / "intake.pem", root / "intake.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"backend exited {result.returncode}: {result.stderr.decode()[-1500:]}")
    return seconds


def _measure(root: Path, jobs: int) -> dict[str, list[float]]:
    cert, key = _certificate(root)
    pdf = make_pdf(root / "one-page.pdf", 1)
    cupsd = PrivateCupsd(log_level="warn")
    loop = LoopThread()
    ports = {"tls": free_port(), "tcp": free_port()}
    stacks = {
        "tls": ServiceStack(
            cupsd,
            root / "svc-tls",
            extra={
                "intake": {
                    "tcp": f"127.0.0.1:{ports['tls']}",
                    "secret": SECRET,
                    "tls_cert": str(cert),
                    "tls_key": str(key),
                }
            },
        ),
        "tcp": ServiceStack(
            cupsd,
            root / "svc-tcp",
            extra={"intake": {"tcp": f"127.0.0.1:{ports['tcp']}", "secret": SECRET}},
        ),
    }
    entered: list[ServiceStack] = []
    times: dict[str, list[float]] = {"tls": [], "tcp": []}
    try:
        cupsd.start()
        for stack in stacks.values():
            loop.run(stack.__aenter__())
            entered.append(stack)
            loop.run(stack.add_printer(QUEUE, target="ipp://127.0.0.1:9/ipp/print", mode="hold"))
            loop.run(stack.add_users("bench"))
        backend = cupsd.serverbin / "backend" / "proxyprint"
        envs = {}
        for which, scheme in (("tls", "proxyprints"), ("tcp", "proxyprint")):
            env = backend_env(f"{scheme}://127.0.0.1:{ports[which]}", QUEUE, "application/pdf")
            env |= {"PROXYPRINT_INTAKE_SECRET": SECRET, "PROXYPRINT_INTAKE_CA": str(cert)}
            envs[which] = env
        for run in range(WARMUP + jobs):
            order = ("tls", "tcp") if run % 2 == 0 else ("tcp", "tls")
            for which in order:
                seconds = _run(backend_argv(backend, run + 1, pdf, user="bench"), envs[which])
                if run >= WARMUP:
                    times[which].append(seconds)
    finally:
        for stack in reversed(entered):
            loop.run(stack.__aexit__(None, None, None))
        loop.close()
        cupsd.stop()
    return times


def main() -> None:
    jobs = env_int("BENCH_INTAKE_TLS_JOBS", 30)
    with scratch_dir("ppbench-tls-") as root:
        times = _measure(root, jobs)
    tls, tcp = median(times["tls"]), median(times["tcp"])
    print(
        f"intake_tls ({jobs} one-page hand-offs each, median): TLS + HMAC {tls * 1000:.1f} ms; "
        f"plain TCP + HMAC {tcp * 1000:.1f} ms; ratio {tls / tcp:.2f}x (goal <= 1.2x)",
        flush=True,
    )
    print(f"intake_tls: interpreter {sys.version.split()[0]}", flush=True)
