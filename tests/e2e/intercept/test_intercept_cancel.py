"""Quitting while an intercept is being set up (Ctrl-C during `cockpit up --intercept`) leaves
the namespace as it was: no shadow Service, no agent this start deployed, Services unchanged."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from kubernetes import client

from cockpit.core.intercept import shadow_name
from tests.conftest import Cluster
from tests.e2e.intercept.conftest import SessionFactory, service_specs, until_gone

pytestmark = pytest.mark.cluster


async def test_a_start_cancelled_while_the_agent_deploys_gives_everything_back(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    before = service_specs(cluster, shop)
    core = client.CoreV1Api(cluster.api())
    session = await sessions.build("quitter", 18080)
    starting = asyncio.create_task(session.start("global"))
    # The shadow is made while the agent (not deployed yet) starts: quit at that moment.
    for _ in range(300):
        names = {s.metadata.name for s in core.list_namespaced_service(shop).items}
        if shadow_name("api") in names or starting.done():
            break
        await asyncio.sleep(0.05)
    assert not starting.done(), "the start finished before the shadow was seen"
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    assert starting.cancelled()
    await until_gone(cluster, shop)
    assert service_specs(cluster, shop) == before
