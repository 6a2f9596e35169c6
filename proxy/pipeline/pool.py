"""Open targets, one per target URI, shared by dispatch and the tracker."""

from __future__ import annotations

from ..config import Config
from ..targets.base import Target
from ..targets.open import open_target

TARGET_TIMEOUT = 30.0


class TargetPool:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._targets: dict[str, Target] = {}

    def get(self, uri: str) -> Target:
        target = self._targets.get(uri)
        if target is None:
            target = open_target(uri, cups_server=self._config.cups.server, timeout=TARGET_TIMEOUT)
            self._targets[uri] = target
        return target

    def requests_made(self) -> int:
        return sum(int(getattr(t, "requests_made", 0)) for t in self._targets.values())

    async def close(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            await target.close()
