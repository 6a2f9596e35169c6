"""``GET /reports/usage?group_by=user|account|printer|day&since=&until=`` (accounts-editor).

A thin handler over ``billing.usage``: totals (pages, sheets, colour pages,
cost) per group, read off the ledger, so they equal it.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from billing import usage
from billing.enums import Role
from billing.money import Currency
from proxy.keys import CONFIG, READ_SESSIONS

from . import queries, serialize
from .auth import require
from .errors import InvalidParameter

USAGE_PARAMS = frozenset({"group_by", "since", "until"})
# Staff who see money: the accounts editor (and admin, who passes wherever staff does).
USAGE_ROLES = (Role.ACCOUNTS_EDITOR,)


def parse_group_by(value: str | None) -> usage.GroupBy:
    if value is None:
        raise InvalidParameter("group_by: required, one of user, account, printer, day")
    try:
        return usage.GroupBy(value)
    except ValueError:
        raise InvalidParameter(
            f"group_by: one of user, account, printer, day, got {value[:40]!r}"
        ) from None


def parse_window(params: dict[str, str]) -> tuple[dt.datetime | None, dt.datetime | None]:
    since = queries.parse_time("since", params.get("since"))
    until = queries.parse_time("until", params.get("until"))
    if since is not None and until is not None and since > until:
        raise InvalidParameter("since: must not be later than until")
    return since, until


def totals_json(totals: usage.Totals, currency: Currency) -> serialize.JSON:
    return {
        "pages": totals.pages,
        "sheets": totals.sheets,
        "color_pages": totals.color_pages,
        "mono_pages": totals.mono_pages,
        "cost": serialize.money(totals.cost, currency),
    }


def usage_json(report: usage.Usage, currency: Currency) -> serialize.JSON:
    items = []
    for row in report.rows:
        item: serialize.JSON = {"key": row.key, **totals_json(row.totals, currency)}
        if report.group_by is usage.GroupBy.ACCOUNT:
            item["account"] = {"type": row.account_type, "name": row.name}
        items.append(item)
    return {
        "group_by": report.group_by.value,
        "since": serialize.iso(report.since),
        "until": serialize.iso(report.until),
        "currency": currency.code,
        "items": items,
        "totals": totals_json(report.totals, currency),
    }


async def usage_report(request: web.Request) -> web.Response:
    await require(request, *USAGE_ROLES)
    params = queries.query_params(request.query, USAGE_PARAMS)
    group_by = parse_group_by(params.get("group_by"))
    since, until = parse_window(params)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        report = await usage.usage(session, group_by, since=since, until=until)
    return web.json_response(usage_json(report, request.app[CONFIG].money))


def routes(prefix: str) -> list[web.RouteDef]:
    return [web.get(f"{prefix}/reports/usage", usage_report)]
