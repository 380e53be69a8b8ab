"""Outbound through the intercept's SSH connection on the real cluster: the local process's
call to ``store`` goes through the agent to the Service (balanced over its pods), the agent
refuses anything but the namespace's Services, and a cut tunnel falls back to port-forwards
at the same local address."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from cockpit.adapters.ssh import AgentLink
from cockpit.engine.forwards import ServiceForward
from cockpit.errors import TunnelError
from tests.agent.conftest import App
from tests.e2e.intercept.conftest import Outbound, SessionFactory

pytestmark = pytest.mark.cluster


def chain_of(app: App) -> list[dict[str, Any]]:
    """GET / on the local api: its chain, the last hop being the store pod that answered."""
    with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/", timeout=60) as resp:
        return list(json.loads(resp.read())["chain"])


async def store_pod(app: App) -> str:
    chain = await asyncio.to_thread(chain_of, app)
    assert [(h["service"], h["served_by"]) for h in chain] == [
        ("api", "local"),
        ("store", "cluster"),
    ]
    return str(chain[1]["pod"])


def totals(fwd: ServiceForward) -> tuple[int, int]:
    """Connections ever made through (the tunnel, port-forwards)."""
    assert fwd.listener is not None
    routes = fwd.listener.routes
    return routes["tunnel"].connections_total, routes["port-forward"].connections_total


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {within:g} s"
        await asyncio.sleep(0.02)


class _Sink(asyncio.Protocol):
    pass


async def test_outbound_goes_through_the_tunnel_to_the_service_and_falls_back_when_it_is_cut(
    sessions: SessionFactory, apps: Callable[..., App], outbound: Outbound
) -> None:
    await outbound.start("store")  # before any intercept: port-forwards
    local = apps(
        SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop", STORE_URL=outbound.url("store")
    )
    fwd = outbound.forwards.get("store:8080")
    assert fwd is not None and fwd.route == "port-forward"
    await store_pod(local)
    assert totals(fwd) == (0, 1)

    session = await sessions("me", local.port, mode="global")
    outbound.forwards.use_tunnel(lambda: session.link)
    assert fwd.route == "tunnel"
    # Each call is a new connection: through the agent to the Service's ClusterIP, so
    # kube-proxy spreads them over both store pods (not pinned to one, as a port-forward is).
    pods = {await store_pod(local) for _ in range(16)}
    assert len(pods) == 2, pods
    assert totals(fwd) == (16, 1)
    await until(lambda: outbound.last("store:8080").route == "tunnel", "reported as tunnel")
    await until(lambda: outbound.last("store:8080").tunnel_bytes_out > 0, "tunnel bytes shown")
    event = outbound.last("store:8080")
    assert event.remote == f"store.{outbound.forwards.namespace}.svc:8080"
    assert event.local == outbound.url("store").removeprefix("http://")
    assert isinstance(session.link, AgentLink)
    status = await session.link.status()
    assert status["outbound"] == {"store:8080": 16}

    # The tunnel is cut: the same address answers through a port-forward meanwhile (the
    # session reconnects after trying another agent pod for 2 s).
    session.link.abort()
    await until(lambda: fwd.route == "port-forward", "falling back")
    await store_pod(local)
    assert totals(fwd) == (16, 2)
    await until(lambda: fwd.route == "tunnel", "back on the tunnel", within=60)
    await store_pod(local)
    assert totals(fwd) == (17, 2)


REFUSED = [
    ("127.0.0.1", 22, "is not the ClusterIP of a Service"),  # the agent pod itself
    ("10.250.0.1", 10250, "is not the ClusterIP of a Service"),  # the node's kubelet
    ("93.184.216.34", 80, "is not the ClusterIP of a Service"),  # outside: never tried
    ("example.com", 443, "'example.com' names no Service"),
    ("kubernetes.default", 443, "names no Service"),
    ("store.kube-system", 8080, "names no Service"),
    ("store", 22, "Service 'store' has no TCP port 22"),
]


async def test_the_agent_refuses_channels_outside_the_namespace_services(
    sessions: SessionFactory,
) -> None:
    session = await sessions("me", 1)
    assert isinstance(session.link, AgentLink)
    for host, port, reason in REFUSED:
        with pytest.raises(TunnelError, match=f"the agent refused {host}:{port}: .*{reason}"):
            await session.link.connect_direct(host, port, _Sink)
    status = await session.link.status()
    assert status["outbound_refused"] == len(REFUSED) and status["outbound"] == {}
