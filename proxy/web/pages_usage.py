"""The admin Usage page: pages and cost per day, printer and account, colour vs mono.

The same figures as ``GET /api/v1/reports/usage`` (``billing.usage``, read off
the ledger), for the same ``since``/``until`` window, each grouping drawn as
a server-side SVG bar chart (``charts``) with its numbers in a table beside it.
"""

from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from billing import usage
from proxy.api import queries
from proxy.api.reports import USAGE_ROLES, parse_window
from proxy.keys import CONFIG, READ_SESSIONS

from .auth import signed_in
from .charts import Bar, Segment, bar_chart
from .render import html, money_text

PARAMS = frozenset({"since", "until"})


def _page_bars(report: usage.Usage) -> list[Bar]:
    return [
        Bar(
            row.key,
            [
                Segment("color", Decimal(row.totals.color_pages)),
                Segment("mono", Decimal(row.totals.mono_pages)),
            ],
            f"{row.totals.pages} pages",
        )
        for row in report.rows
    ]


async def usage_page(request: web.Request) -> web.Response:
    signed_in(request, *USAGE_ROLES)
    params = queries.query_params(request.query, PARAMS)
    since, until = parse_window(params)
    currency = request.app[CONFIG].money
    reports: dict[str, usage.Usage] = {}
    async with request.app[READ_SESSIONS]() as session, session.begin():
        for group_by in (usage.GroupBy.DAY, usage.GroupBy.PRINTER, usage.GroupBy.ACCOUNT):
            reports[group_by.value] = await usage.usage(session, group_by, since=since, until=until)

    def cost_bars(report: usage.Usage) -> list[Bar]:
        return [
            Bar(r.key, [Segment("cost", r.totals.cost)], money_text(r.totals.cost, currency))
            for r in report.rows
        ]

    day, printer, account = reports["day"], reports["printer"], reports["account"]
    totals = day.totals
    charts = {
        "day-pages": bar_chart("chart-day-pages", "Pages per day (colour, mono)", _page_bars(day)),
        "day-cost": bar_chart("chart-day-cost", "Cost per day", cost_bars(day)),
        "printer-cost": bar_chart("chart-printer-cost", "Cost per printer", cost_bars(printer)),
        "account-cost": bar_chart("chart-account-cost", "Cost per account", cost_bars(account)),
        "color-mono": bar_chart(
            "chart-color-mono",
            "Colour and mono pages",
            [
                Bar("colour", [Segment("color", Decimal(totals.color_pages))],
                    f"{totals.color_pages} pages"),
                Bar("mono", [Segment("mono", Decimal(totals.mono_pages))],
                    f"{totals.mono_pages} pages"),
            ],
        ),
    }  # fmt: skip
    return html(
        request,
        "usage.html",
        reports=reports,
        totals=totals,
        charts=charts,
        since=params.get("since", ""),
        until=params.get("until", ""),
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/admin/usage", usage_page, name="web.admin-usage")]
