"""Large bodies through a global intercept on the real cluster: a client pod's upload reaches
the local process intact, and the local process's download reaches the pod whole."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.agent.conftest import App
from tests.e2e.intercept.conftest import Prober, SessionFactory

pytestmark = pytest.mark.cluster

SIZE = 20_000_000


async def test_a_global_intercept_carries_large_bodies_both_ways(
    shop: str, prober: Prober, sessions: SessionFactory, apps: Callable[..., App]
) -> None:
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop", LOG_INTERVAL="60")
    await sessions("me", local.port, mode="global")
    await prober.until("local/laptop", within=10)
    target = {"host": "api", "port": 8080, "size": SIZE}
    # The prober checks the local app's answer: byte count and sha256 of what it sent.
    uploaded = await prober.call("/upload", target)
    # ... and that exactly SIZE bytes of body arrived.
    downloaded = await prober.call("/download", target)
    assert uploaded["mbps"] > 0
    assert downloaded["mbps"] > 0
    assert (await prober.who()) == "local/laptop"
