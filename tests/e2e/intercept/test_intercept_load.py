"""Toggling under load on the real cluster: 20 toggles of a global intercept while a client
pod sends 200 requests per second to the service; not one request may fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.agent.conftest import App
from tests.e2e.intercept.conftest import Prober, SessionFactory

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RATE = 200.0
SECONDS = 52.0  # > 10,000 requests
TOGGLES = 20


async def test_twenty_toggles_under_200_requests_per_second_fail_no_request(
    shop: str, prober: Prober, sessions: SessionFactory, apps: Callable[..., App]
) -> None:
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop", LOG_INTERVAL="60")
    session = await sessions("me", local.port, mode="global")
    await prober.until("local/laptop")
    assert (await session.toggle("global", False)).ok
    load = await prober.start_load("http://api:8080/echo", RATE, SECONDS)
    await asyncio.sleep(1.0)
    interval = (SECONDS - 4.0) / TOGGLES
    for i in range(TOGGLES):
        result = await session.toggle("global", i % 2 == 0)
        assert result.ok, result.message
        await asyncio.sleep(interval)
    results = await prober.load_results(load, within=SECONDS + 60)
    failed = [r for r in results if r[1] != 200]
    served = {r[2] for r in results}
    assert len(results) >= 10_000
    assert failed == [], failed[:5]
    assert served == {"local", "cluster"}
