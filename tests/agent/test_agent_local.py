"""The agent program on 127.0.0.1 with real asyncssh clients: authentication and host-key
pinning, global and personal routing (per request, on shared keep-alive connections),
overlap refusal, outbound channels, and crash safety (drop, half-open, grace, idle TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import asyncssh
import pytest

from cockpit.adapters.ssh import AgentLink, new_client_key, public_openssh
from cockpit.agent.router import IDLE_TTL, WARM, WARM_AHEAD
from cockpit.agent.server import OPEN_TIMEOUT
from cockpit.core.intercept import ServicePort, intercept_patch, intercept_record
from cockpit.errors import InterceptError, TunnelError
from tests.agent.conftest import AgentFactory, App, Harness, Http, RecordingCluster, who

PORTS = [ServicePort(8080, "TCP", 8080)]
ME = {"baggage": "cockpit-session=me"}
YOU = {"baggage": "cockpit-session=you"}


async def intercept(h: Harness, session: str, local: App, mode: str | None = "global") -> AgentLink:
    link = await h.link(session)
    await link.hello()
    return await route_store(link, local.port, mode)


async def route_store(link: AgentLink, local_port: int, mode: str | None = "global") -> AgentLink:
    """Claim ``store``, expose its port 8080 as ``local_port`` here and (with a mode) route it."""
    await link.reserve("store", PORTS)
    await link.expose("store", 8080, "127.0.0.1", local_port)
    if mode is not None:
        await link.route("store", mode, True)  # type: ignore[arg-type]
    return link


def agent_port(h: Harness) -> int:
    return h.agent.router.services["store"].ports[8080]


# ------------------------------------------------------------------------ authentication


async def test_a_registered_session_key_is_accepted(make_agent: AgentFactory) -> None:
    h = await make_agent()
    link = await h.link("me")
    hello = await link.hello()
    assert hello["pod"] == "agent-0"
    assert hello["protocol"] == 1
    await link.aclose()


async def test_a_foreign_key_is_refused(make_agent: AgentFactory) -> None:
    h = await make_agent()
    h.cluster.keys["me"] = public_openssh(new_client_key())  # someone else's key
    with pytest.raises(TunnelError, match="refused session me's key"):
        await AgentLink.connect(
            session="me", client_key=new_client_key(), host_key=h.host_key, port=h.agent.ssh_port
        )
    assert h.agent.conns == {}


async def test_an_unregistered_session_is_refused(make_agent: AgentFactory) -> None:
    h = await make_agent()
    with pytest.raises(TunnelError, match="refused"):
        await AgentLink.connect(
            session="ghost", client_key=new_client_key(), host_key=h.host_key, port=h.agent.ssh_port
        )


async def test_a_host_key_other_than_the_published_one_is_refused(make_agent: AgentFactory) -> None:
    h = await make_agent()
    key = new_client_key()
    h.cluster.keys["me"] = public_openssh(key)
    impostor = public_openssh(asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(TunnelError, match="host key does not match"):
        await AgentLink.connect(
            session="me", client_key=key, host_key=impostor, port=h.agent.ssh_port
        )


async def test_the_agent_serves_no_shell(make_agent: AgentFactory) -> None:
    h = await make_agent()
    link = await h.link("me")
    result = await link.conn.run("id", check=False)
    assert result.exit_status == 1
    assert "only the 'cockpit' subsystem" in str(result.stderr)
    await link.aclose()


# ------------------------------------------------------------------------------- routing


async def test_global_intercept_on_and_off(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode=None)
    port = agent_port(h)
    assert await who(port) == "cluster/store-origin"
    await link.route("store", "global", True)
    assert await who(port) == "local/laptop"
    await link.route("store", "global", False)
    assert await who(port) == "cluster/store-origin"
    await link.aclose()


async def test_toggling_affects_an_open_keep_alive_connection(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode=None)
    client = Http(agent_port(h))
    assert await client.who() == "cluster/store-origin"
    await link.route("store", "global", True)
    assert await client.who() == "local/laptop"
    await link.route("store", "global", False)
    assert await client.who() == "cluster/store-origin"
    client.close()
    await link.aclose()


async def test_two_personal_intercepts_and_plain_traffic_share_one_connection(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    mine = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="my-laptop")
    yours = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="your-laptop")
    me = await intercept(h, "me", mine, mode="personal")
    you = await intercept(h, "you", yours, mode="personal")
    client = Http(agent_port(h))
    for _ in range(3):
        assert await client.who(ME) == "local/my-laptop"
        assert await client.who() == "cluster/store-origin"
        assert await client.who(YOU) == "local/your-laptop"
        assert (
            await client.who({"baggage": "user=7, cockpit-session=you;x=1"}) == "local/your-laptop"
        )
    status = await me.status()
    assert status["served"] == {
        "store/me": 3,
        "store/origin": 3,
        "store/you": 6,
    }
    client.close()
    await me.aclose()
    await you.aclose()


async def test_bodies_and_large_answers_pass_intact(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode="personal")
    client = Http(agent_port(h))
    body = bytes(range(256)) * 4096  # 1 MiB
    for headers in (ME, {}):
        status, answer = await client.request("/echo", headers, method="POST", body=body)
        assert status == 200
        assert json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
        status, data = await client.request("/bytes?n=3000000", headers)
        assert status == 200
        assert len(data) == 3_000_000
        assert data[:512] == bytes(range(256)) * 2
    client.close()
    await link.aclose()


async def test_overlapping_claims_are_refused_with_a_clear_message(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    me = await intercept(h, "me", local, mode="global")
    you = await intercept(h, "you", local, mode=None)
    with pytest.raises(InterceptError, match="held by a global intercept of session me"):
        await you.route("store", "personal", True)
    with pytest.raises(InterceptError, match="held by a global intercept of session me"):
        await you.route("store", "global", True)
    await me.route("store", "personal", True)
    with pytest.raises(InterceptError, match="cockpit-session=me"):
        await you.route("store", "personal", True, value="cockpit-session=me")
    assert (await me.status())["routes"] == {
        "store": [
            {
                "session": "me",
                "mode": "personal",
                "header": "baggage",
                "value": "cockpit-session=me",
            }
        ]
    }
    await me.aclose()
    await you.aclose()


async def test_route_needs_a_reservation(make_agent: AgentFactory) -> None:
    h = await make_agent()
    link = await h.link("me")
    with pytest.raises(InterceptError, match="has not reserved service 'store'"):
        await link.route("store", "global", True)
    await link.aclose()


async def test_a_session_whose_local_process_is_down_falls_back_to_the_original_pods(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode="global")
    local.stop()
    assert await who(agent_port(h)) == "cluster/store-origin"
    await link.aclose()


async def test_raw_tcp_is_routed_per_connection(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    """A client that waits for the server to speak first gets a plain TCP splice."""
    h = await make_agent()
    echo_server = await asyncio.start_server(_greeter(b"local\n"), "127.0.0.1", 0)
    local_port = echo_server.sockets[0].getsockname()[1]
    link = await route_store(await h.link("me"), local_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent_port(h))
    assert await asyncio.wait_for(reader.readline(), 5) == b"local\n"
    writer.close()
    echo_server.close()
    await link.aclose()


def _greeter(text: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text)
        await writer.drain()
        writer.close()

    return greet


# ------------------------------------------------------------------------------ outbound


class _Collect(asyncio.Protocol):
    """The local side of a direct channel in these tests: keeps what arrives until EOF."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof.set()
        return True


def _service(name: str, ip: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": [{"port": port}]}}


# ------------------------------------------------------------------------- session channels


def connections_to(port: int) -> int:
    """ESTABLISHED TCP connections whose local end is 127.0.0.1:``port`` (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            host, _, hex_port = fields[1].partition(":")
            if host == "0100007F" and int(hex_port, 16) == port and fields[3] == "01":
                count += 1
    return count


async def test_channels_to_the_session_are_reused_not_leaked(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode="global")
    for _ in range(30):  # one new client connection each, as most in-cluster callers do
        assert await who(agent_port(h)) == "local/laptop"
    # Each client connection borrowed a channel (its own connection to the local process)
    # and gave it back: the open ones are the warm few, not one per client connection.
    await _until(lambda: connections_to(local.port) <= WARM + 1, 10)
    await link.aclose()


async def keeps_alive(h: Harness, link: AgentLink) -> None:
    """One request answered by the local process on a channel that stays open afterwards (what
    lets the agent keep warm channels to it), and the intercept off again."""
    await link.route("store", "global", True)
    client = Http(agent_port(h))
    assert await client.who() == "local/laptop"
    client.close()
    await link.route("store", "global", False)


class OneAtATime(BaseHTTPRequestHandler):
    """A local server that serves one connection at a time and closes it after each answer."""

    def do_GET(self) -> None:
        body = json.dumps({"served_by": "local", "pod": "one-at-a-time"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_server_of_one_connection_at_a_time_gets_no_warm_channels(
    make_agent: AgentFactory,
) -> None:
    """An idle warm channel (a connection to the process that sends nothing) would hold such
    a server until it was replaced; its answers close their connections, so none is kept."""
    h = await make_agent()
    server = HTTPServer(("127.0.0.1", 0), OneAtATime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    link = await h.link("me")
    try:
        await route_store(link, server.server_address[1], "global")
        for _ in range(3):
            assert await asyncio.wait_for(who(agent_port(h)), 2) == "local/one-at-a-time"
        await asyncio.sleep(1.0)  # many housekeeping ticks
        assert h.agent.router.idle_count("store", 8080, "me") == 0
        assert await asyncio.wait_for(who(agent_port(h)), 2) == "local/one-at-a-time"
    finally:
        await link.aclose()  # first: a connection held open would keep the server busy
        await asyncio.wait_for(asyncio.to_thread(server.shutdown), 10)
        server.server_close()


async def test_warm_channels_wait_for_a_toggle_and_go_with_the_reservation(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode=None)  # reserved and exposed, intercept off
    router = h.agent.router
    await asyncio.sleep(0.3)  # several housekeeping ticks
    assert router.idle_count("store", 8080, "me") == 0  # none before the process kept one open
    await keeps_alive(h, link)
    await _until(lambda: router.idle_count("store", 8080, "me") == WARM, 10)
    assert connections_to(local.port) == WARM  # each one already connected to the process
    on_request_path: list[tuple[str, int]] = []
    open_reverse = h.agent.open_reverse

    async def recording(
        session: str, service: str, port: int, peer: tuple[str, int], judge: bool = True
    ) -> tuple[Any, Any]:
        if peer[0]:  # warm-ups open with no client address; a client's request has one
            on_request_path.append(peer)
        return await open_reverse(session, service, port, peer, judge)

    h.agent.open_reverse = recording  # type: ignore[method-assign]
    await link.route("store", "global", True)
    assert await who(agent_port(h)) == "local/laptop"
    assert on_request_path == []  # the first request after the toggle found a channel open
    await link.release("store")
    assert router.idle_count("store", 8080, "me") == 0
    await _until(lambda: connections_to(local.port) == 0, 10)
    await link.aclose()


async def test_a_lost_session_keeps_no_warm_channels(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local, mode=None)
    await keeps_alive(h, link)
    await _until(lambda: h.agent.router.idle_count("store", 8080, "me") == WARM, 10)
    link.abort()
    await _until(lambda: "me" not in h.agent.conns, 10)
    assert h.agent.router.idle_count("store", 8080, "me") == 0
    await asyncio.sleep(0.3)  # several housekeeping ticks: none opens a channel again
    assert h.agent.router.idle_count("store", 8080, "me") == 0


async def test_outbound_direct_channel_reaches_a_service_of_the_namespace(
    make_agent: AgentFactory,
) -> None:
    h = await make_agent()
    h.cluster.others.append(_service("store", "127.0.0.1", h.origin.port))
    link = await h.link("me")
    got = _Collect()
    channel = await link.connect_direct("store", h.origin.port, lambda: got)
    channel.write(b"GET /healthz HTTP/1.1\r\nHost: store\r\nConnection: close\r\n\r\n")
    await asyncio.wait_for(got.eof.wait(), 5)
    assert got.data.startswith(b"HTTP/1.1 200")
    channel.close()
    assert h.agent.outbound.forwarded == {f"store:{h.origin.port}": 1}
    await link.aclose()


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [
        ("127.0.0.1", 22, "not the ClusterIP of a Service"),
        ("example.com", 443, "'example.com' names no Service"),
        ("store.other", 8080, "names no Service"),
        ("nobody", 8080, "no Service 'nobody'"),
        ("store", 22, "Service 'store' has no TCP port 22"),
    ],
)
async def test_outbound_is_refused_outside_the_namespace_services(
    make_agent: AgentFactory, host: str, port: int, reason: str
) -> None:
    h = await make_agent()
    h.cluster.others.append(_service("store", "10.252.0.10", 8080))
    link = await h.link("me")
    with pytest.raises(TunnelError, match=f"the agent refused {host}:{port}: .*{reason}"):
        await link.connect_direct(host, port, _Collect)
    assert h.agent.outbound.refused == 1
    assert not h.agent.outbound.forwarded
    await link.aclose()


# -------------------------------------------------------------------------- crash safety


async def test_a_dropped_session_is_routed_back_at_once_and_restored_after_grace(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent(grace=0.6, drain=0.5)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local)
    port = agent_port(h)
    assert await who(port) == "local/laptop"
    link.abort()
    await asyncio.sleep(0.05)
    assert await who(port) == "cluster/store-origin"
    assert h.cluster.restored == []
    await _until(lambda: h.cluster.restored == ["store"], 3)
    assert h.cluster.forgotten == ["me"]
    # Draining: late connections still reach the original pods through the shadow.
    assert await who(port) == "cluster/store-origin"
    assert h.cluster.shadows_deleted == []
    await _until(lambda: "store" not in h.agent.router.services, 2)
    assert h.cluster.shadows_deleted == ["store"]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_session_back_within_grace_keeps_its_service(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent(grace=1.0)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local)
    link.abort()
    await asyncio.sleep(0.3)
    again = await _relink(h, "me", local)
    await asyncio.sleep(1.2)
    assert h.cluster.restored == []
    assert await who(agent_port(h)) == "local/laptop"
    await again.aclose()


async def _relink(h: Harness, session: str, local: App) -> AgentLink:
    # A new key for the same session: the client restarted.
    return await route_store(await h.link(session), local.port)


async def test_release_by_the_last_session_restores_at_once(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    h = await make_agent()
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    me = await intercept(h, "me", local, mode="personal")
    you = await intercept(h, "you", local, mode="personal")
    assert await me.release("store") is False
    assert h.cluster.restored == []
    assert await you.release("store") is True
    assert h.cluster.restored == ["store"]
    await me.aclose()
    await you.aclose()


async def test_a_failed_restore_is_retried(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    cluster = RecordingCluster(restore_fails=True)
    h = await make_agent(cluster, grace=0.2)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    link = await intercept(h, "me", local)
    link.abort()
    await asyncio.sleep(0.5)
    assert "store" in h.agent.router.services  # still routing to the original pods
    assert await who(agent_port(h)) == "cluster/store-origin"
    cluster.restore_fails = False
    h.agent._retry_at.clear()
    await _until(lambda: cluster.restored == ["store"], 2)


async def _frozen_intercept(h: Harness, local: App) -> tuple[Freezer, AgentLink]:
    """A global intercept whose SSH connection runs through a Freezer that can go silent."""
    freezer = await Freezer.start(h.agent.ssh_port)
    key = new_client_key()
    h.cluster.keys["me"] = public_openssh(key)
    link = await AgentLink.connect(
        session="me", client_key=key, host_key=h.host_key, port=freezer.port, keepalive=30
    )
    return freezer, await route_store(link, local.port)


async def test_a_half_open_session_is_detected_by_keepalives(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    """The client stops answering (SIGSTOP, laptop lid) but its TCP connection stays up."""
    h = await make_agent(keepalive=0.3, keepalive_count=2)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    freezer, link = await _frozen_intercept(h, local)
    port = agent_port(h)
    assert await who(port) == "local/laptop"
    freezer.thawed.clear()
    t0 = time.monotonic()
    await _until(lambda: "me" not in h.agent.conns, 5)
    detected = time.monotonic() - t0
    assert detected < 0.3 * (2 + 1) + 0.6, detected
    assert await who(port) == "cluster/store-origin"
    freezer.close()
    link.abort()


async def test_a_frozen_session_is_dropped_on_its_first_unanswered_channel(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    """Keepalives are slow here on purpose: the first request finds out instead."""
    h = await make_agent(keepalive=30)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    freezer, link = await _frozen_intercept(h, local)
    port = agent_port(h)
    assert await who(port) == "local/laptop"
    freezer.thawed.clear()
    t0 = time.monotonic()
    assert await who(port) == "cluster/store-origin"
    assert time.monotonic() - t0 < 1.5
    assert "me" not in h.agent.conns
    assert await who(port) == "cluster/store-origin"
    freezer.close()
    link.abort()


async def test_a_stalled_session_is_not_dropped_for_a_warm_channel(
    make_agent: AgentFactory, apps: Callable[..., App]
) -> None:
    """Warm-ups keep opening channels in the background; one the session is slow to confirm
    is no verdict on it (keepalives and requests judge), so a stall leaves it connected."""
    h = await make_agent(keepalive=30)
    local = apps(SERVICE="store", COCKPIT_LOCAL="1", POD_NAME="laptop")
    freezer, link = await _frozen_intercept(h, local)
    assert await who(agent_port(h)) == "local/laptop"
    await _until(lambda: h.agent.router.idle_count("store", 8080, "me") == WARM, 10)
    freezer.thawed.clear()
    # Long enough for the warm channels to be replaced and those opens to time out.
    await asyncio.sleep(IDLE_TTL - WARM_AHEAD + OPEN_TIMEOUT + 0.5)
    assert "me" in h.agent.conns
    freezer.thawed.set()
    assert await who(agent_port(h)) == "local/laptop"
    assert "me" in h.agent.conns
    freezer.close()
    link.abort()


async def test_the_idle_agent_deletes_itself(make_agent: AgentFactory) -> None:
    h = await make_agent(idle_ttl=0.3)
    link = await h.link("me")
    await asyncio.sleep(0.5)
    assert h.cluster.deleted_self == 0  # a connected session keeps it alive
    await link.aclose()
    await _until(lambda: h.cluster.deleted_self == 1, 2)


async def test_services_found_at_start_are_served_and_restored_if_nobody_comes_back(
    make_agent: AgentFactory,
) -> None:
    svc = {
        "metadata": {"name": "store", "namespace": "shop", "resourceVersion": "1"},
        "spec": {"selector": {"app": "store"}, "ports": [{"port": 8080, "targetPort": "http"}]},
    }
    record = intercept_record(svc, {8080: 20042})
    annotated = {"metadata": {"name": "store", "annotations": {}}, "spec": {}}
    for op in intercept_patch(svc, record):
        if op["path"].startswith("/metadata/annotations/"):
            annotated["metadata"]["annotations"]["cockpit.dev/intercept"] = op["value"]
    cluster = RecordingCluster(owned=[annotated])
    h = await make_agent(cluster, grace=0.5)
    assert h.agent.router.services["store"].ports == {8080: 20042}
    assert await who(20042) == "cluster/store-origin"
    await _until(lambda: cluster.restored == ["store"], 2)


# ------------------------------------------------------------------------------ helpers


async def _until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Freezer:
    """A TCP relay that can stop relaying without closing anything: a half-open link."""

    def __init__(self) -> None:
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.target = 0

    @classmethod
    async def start(cls, target: int) -> Freezer:
        self = cls()
        self.target = target
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    await self.thawed.wait()
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
