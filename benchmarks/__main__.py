"""`python -m benchmarks` (make bench): run every benchmarks/bench_*.py in turn.

Each module has a ``main() -> None`` that prints its own lines. ``--only NAME``
(repeatable; "prorata" or "bench_prorata") runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import cast

import benchmarks

PREFIX = "bench_"


def discover() -> list[str]:
    """Names of the benchmark modules, without the prefix, sorted."""
    return sorted(
        info.name.removeprefix(PREFIX)
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith(PREFIX) and not info.ispkg
    )


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(available)}",
    )
    args = parser.parse_args(argv)
    selected = available
    if args.only:
        wanted = [name.removeprefix(PREFIX) for name in args.only]
        unknown = sorted(set(wanted) - set(available))
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; have {', '.join(available)}")
        selected = [name for name in available if name in wanted]
    for name in selected:
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
        run = cast("Callable[[], None]", module.main)
        run()
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
