"""An OfficeRnD stand-in to develop, test and benchmark against.

An aiohttp server (``127.0.0.1``, a free port by default) that answers the
part of OfficeRnD's v1 API that proxyprint uses, with OfficeRnD's shapes:

=====================================================  ====================================
``POST /oauth/token``  (``sim.token_url``)             form ``client_id``, ``client_secret``,
                                                       ``grant_type=client_credentials``,
                                                       ``scope`` -> ``{"access_token",
                                                       "token_type", "expires_in", "scope"}``
``GET  /api/v1/organizations/{org}/members``           ``[{"_id", "name", "email", "status",
                                                       "calculatedStatus", "team",
                                                       "office"}]`` (no plans)
``GET  .../companies``                                 ``[{"_id", "name"}]``
``GET  .../plans``                                     ``[{"_id", "name", "price"}]``
``GET  .../memberships[?member=&team=&plan=...]``      ``[{"_id", "name", "price", "member",
                                                       "team", "office", "plan",
                                                       "isPersonal", "startDate", "endDate",
                                                       "status", "calculatedStatus",
                                                       "createdAt"}]``
``GET  .../fees[?member=&date=&team=&plan=]``          ``[{"_id", "name", "price", "quantity",
                                                       "date", "member", "team", "office",
                                                       "plan", "refundable",
                                                       "billInAdvance",
                                                       "shouldUseValueCredits",
                                                       "isPersonal", "createdAt",
                                                       "createdBy", "modifiedAt",
                                                       "modifiedBy"}]`` (+ ``source``,
                                                       ``properties`` when set)
``POST .../plans``   ``{"name", "price"?, ...}``       the new plan
``POST .../fees``    documented fee fields only        the new fee, or ``[fee]`` when
                     (``simdata.FEE_FIELDS``;          ``sim.fee_answer_as_list``
                     ``office`` required)
=====================================================  ====================================

``sim.api_url`` is the server's root (the client adds ``/api/v1/...``).
Lists are paged by cursor: ``$limit`` (1..``page_limit_max``, default 50),
``$next`` from the ``rnd-cursor-next`` header of the previous page; the
header is absent on the last page. GET filters are equality on the record's
fields (``date`` compares the day only). Bad input answers 400
``{"message": ...}``; a missing, unknown or expired bearer token 401.
Amounts are exact: JSON numbers are read as ``Decimal`` and written as
their digits.

Faults: ``set_faults(rate_429, rate_5xx, seed)`` answers that share of
requests with 429 (``Retry-After: sim.retry_after``) or 500/503, nothing
applied. ``inject(kind, path=None, count=1)`` scripts the next matching
requests instead (``FaultKind``; ``path`` is ``"POST /fees"``, ``"/fees"``,
or None for any API request, the token endpoint only when named), including
``apply-then-500``: the fee is created, the answer is an error, and
``apply-then-drop``: the fee is created, the connection closed with no answer.
``expire_tokens()`` makes every issued token invalid at once.

``latency`` seconds are awaited (``asyncio.sleep``) in every request, so
concurrent requests overlap as with a real server.

The parts: ``proxy.devkit.officernd.simdata`` (the records and the seeded
generator), ``simfaults`` (which request gets which fault), ``simapi`` (the
HTTP face, ``OfficeRnDSimulator``); this module runs it alone.

Run alone: ``python -m proxy.devkit.officernd.simulator --port 8585 --members 300
--companies 40 --individuals 25 [--latency 0.01 --rate-429 0.05 --rate-5xx 0.05]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from proxy.devkit.officernd.simapi import TOKEN_PATH, OfficeRnDSimulator
from proxy.devkit.officernd.simdata import DEFAULT_STATUSES
from proxy.devkit.officernd.simfaults import FaultKind

__all__ = [
    "DEFAULT_STATUSES",
    "TOKEN_PATH",
    "FaultKind",
    "OfficeRnDSimulator",
    "main",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.devkit.officernd.simulator", description="An OfficeRnD simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8585)
    parser.add_argument("--org", default="proxyprint-test")
    parser.add_argument("--client-id", default="cid")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--members", type=int, default=0, help="members of companies")
    parser.add_argument("--companies", type=int, default=0)
    parser.add_argument("--individuals", type=int, default=0, help="members with no company")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    return parser


async def _run(args: argparse.Namespace) -> None:
    sim = OfficeRnDSimulator(
        org=args.org,
        client_id=args.client_id,
        client_secret=args.client_secret,
        latency=args.latency,
        seed=args.seed,
        token_ttl=args.token_ttl,
        host=args.host,
        port=args.port,
    )
    sim.seed_members(args.members, args.companies, args.individuals, seed=args.seed)
    sim.set_faults(args.rate_429, args.rate_5xx, args.seed)
    await sim.serve_until_signalled()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
