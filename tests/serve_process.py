"""``proxyprint serve`` and the CLI as subprocesses, as an admin runs them: for the
tests that kill the service (SIGKILL) and start it again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def proxyprint_cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class ServeProcess:
    """One ``proxyprint serve`` with its own ``PROXYPRINT_*`` environment; log in ``root``."""

    name: str
    env: dict[str, str]
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return Path(self.env["PROXYPRINT_INTAKE_SOCKET"])

    @property
    def url(self) -> str:
        return f"http://{self.env['PROXYPRINT_HTTP_LISTEN']}"

    @property
    def log(self) -> Path:
        return self.root / f"serve-{self.name}.log"

    async def start(self) -> None:
        self.proc = self._spawn()
        for _ in range(1200):  # 60 s: a loaded machine starts Python slowly
            if self.socket.exists():
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        raise AssertionError(f"instance {self.name} did not open its intake socket")

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.socket.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
