"""``GET /metrics``: Prometheus text format, for a token of role ``reader`` or ``admin``.

Why a token: the API is not only reachable from localhost (users release
their jobs through it), and the numbers describe the site's business (job
volumes, error rates). Prometheus sends the token itself::

    scrape_configs:
      - job_name: proxyprint
        authorization: {credentials_file: /etc/prometheus/proxyprint.token}
        static_configs: [{targets: ["127.0.0.1:6310"]}]

``reader`` is the monitoring role: it may read this and nothing else.
"""

from __future__ import annotations

from aiohttp import web

from billing.enums import Role
from proxy.metrics import CONTENT_TYPE, scrape

from .auth import require

METRICS_ROLES = (Role.READER, Role.ADMIN)


async def metrics(request: web.Request) -> web.Response:
    await require(request, *METRICS_ROLES)
    body = await scrape(request.app)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [web.get("/metrics", metrics)]
