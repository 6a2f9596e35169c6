"""What the server itself counted: ``proxyprint_http_requests_total`` read from /metrics.

A test that checks answers one by one can still miss that a request reached
another route than the one it meant; the server's own count by route template
and status cannot.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

Served = Counter[tuple[str, str, int]]  # (method, route template, status) -> requests


async def served(client: TestClient[web.Request, web.Application], token: str) -> Served:
    """The server's request counts so far (this scrape counts only after it)."""
    async with client.get("/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    counts: Served = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "proxyprint_http_requests_total":
                labels = sample.labels
                key = (labels["method"], labels["route"], int(labels["status"]))
                counts[key] = int(sample.value)
    return counts
