"""Port-forward streams and local listeners against the real cluster and the shop demo."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes import client

from cockpit.adapters.portforward import (
    ApiServer,
    FixedTarget,
    PodTarget,
    PodTunnel,
    PortForwardError,
    PortForwardListener,
    bind_loopback,
    open_pod_stream,
)
from cockpit.errors import CockpitError, NotFoundError
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

PATTERN = bytes(range(256))


@pytest.fixture(scope="module", params=["spdy", "websocket"])
def api(cluster: Cluster, request: pytest.FixtureRequest) -> ApiServer:
    """The API server, carrying streams over SPDY (the default) or websockets (the fallback)."""
    server = ApiServer.from_kubeconfig(str(cluster.kubeconfig))
    server.transport = request.param
    return server


def pods_of(cluster: Cluster, ns: str, app: str) -> list[str]:
    core = client.CoreV1Api(cluster.api())
    return sorted(
        p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
    )


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    for _ in range(int(within / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[bytes, bytes]:
    """Send one request, read one Content-Length answer: (head, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@pytest.fixture
async def listener(
    api: ApiServer, cluster: Cluster, shared_shop: str
) -> AsyncIterator[PortForwardListener]:
    pod = pods_of(cluster, shared_shop, "store")[0]
    fwd = PortForwardListener(api, FixedTarget(PodTarget(shared_shop, pod, 8080)), host="127.0.0.2")
    await fwd.start()
    yield fwd
    await fwd.close()


async def test_stream_reaches_the_named_pod(
    api: ApiServer, cluster: Cluster, shared_shop: str
) -> None:
    pod = pods_of(cluster, shared_shop, "store")[1]
    reader, writer = await open_pod_stream(api, shared_shop, pod, 8080)
    head, body = await http(reader, writer, b"GET / HTTP/1.1\r\nHost: store\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    answer = json.loads(body)
    assert answer["pod"] == pod and answer["service"] == "store"
    # The same stream carries a second request (keep-alive).
    head, body = await http(reader, writer, b"GET /healthz HTTP/1.1\r\nHost: store\r\n\r\n")
    assert body == b"ok"
    writer.close()
    await writer.wait_closed()


async def test_listener_download_upload_and_counters(listener: PortForwardListener) -> None:
    host, port = listener.address
    assert host == "127.0.0.2"
    size = 8 * 1024 * 1024 + 123
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET /bytes?n={size} HTTP/1.1\r\nHost: store\r\n\r\n".encode()
    head, body = await http(reader, writer, request)
    assert len(body) == size
    assert body == (PATTERN * (size // 256 + 1))[:size]  # every byte, in order

    payload = os.urandom(6 * 1024 * 1024 + 7)
    post = f"POST /echo HTTP/1.1\r\nHost: store\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
    head2, body2 = await http(reader, writer, post + payload)
    answer = json.loads(body2)
    assert answer["bytes"] == len(payload)
    assert answer["sha256"] == hashlib.sha256(payload).hexdigest()
    assert listener.stats.connections == 1
    writer.close()
    await writer.wait_closed()
    assert await wait_until(lambda: listener.stats.connections == 0)
    stats = listener.stats
    assert stats.connections == 0 and stats.connections_total == 1 and stats.failed == 0
    assert stats.bytes_out == len(request) + len(post) + len(payload)
    assert stats.bytes_in == len(head) + len(body) + len(head2) + len(body2)


async def test_fifty_concurrent_connections(listener: PortForwardListener) -> None:
    host, port = listener.address

    async def client_session(i: int) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        n = 0
        for _ in range(5):
            _, body = await http(
                reader, writer, f"GET /bytes?n={1000 + i} HTTP/1.1\r\nHost: s\r\n\r\n".encode()
            )
            n += len(body)
        writer.close()
        return n

    results = await asyncio.wait_for(asyncio.gather(*(client_session(i) for i in range(50))), 30)
    assert results == [5 * (1000 + i) for i in range(50)]
    assert listener.stats.connections_total == 50
    assert listener.stats.failed == 0
    if listener.api.transport == "spdy":
        assert len(listener.api.spdy_pool()[0]) == 1  # every stream on one connection
        listener.api.close_connections()
        assert listener.api.spdy_pool()[0] == {}


async def test_half_close_still_gets_the_whole_answer(listener: PortForwardListener) -> None:
    host, port = listener.address
    size = 3 * 1024 * 1024

    def fetch() -> tuple[bytes, float]:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                f"GET /bytes?n={size} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n".encode()
            )
            sock.shutdown(socket.SHUT_WR)  # the client says it is done talking
            t0 = time.monotonic()
            data = bytearray()
            while chunk := sock.recv(1 << 20):
                data += chunk
            return bytes(data), time.monotonic() - t0

    data, took = await asyncio.to_thread(fetch)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == size
    assert took < 5  # the connection ends by itself soon after the answer


async def test_unknown_pod_is_one_line_not_found(api: ApiServer, shared_shop: str) -> None:
    with pytest.raises(NotFoundError) as info:
        await open_pod_stream(api, shared_shop, "stroe-0", 8080)
    line = info.value.one_line()
    assert "stroe-0" in line and "\n" not in line


async def test_closed_pod_port_reports_the_error(
    api: ApiServer, cluster: Cluster, shared_shop: str
) -> None:
    pod = pods_of(cluster, shared_shop, "store")[0]
    reader, writer = await open_pod_stream(api, shared_shop, pod, 9999)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(PortForwardError) as info:
        await asyncio.wait_for(reader.read(), 10)
    assert "9999" in str(info.value)
    # The pod stays reachable on its open port right after (a failed stream must not wedge
    # the connection it shared).
    t0 = time.monotonic()
    reader, writer = await open_pod_stream(api, shared_shop, pod, 8080, connect_timeout=5)
    _, body = await asyncio.wait_for(
        http(reader, writer, b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n"), 5
    )
    assert body == b"ok" and time.monotonic() - t0 < 5
    writer.close()


async def test_listener_closes_a_connection_it_cannot_forward(
    api: ApiServer, shared_shop: str
) -> None:
    fwd = PortForwardListener(
        api, FixedTarget(PodTarget(shared_shop, "gone-pod", 8080)), host="127.0.0.2"
    )
    host, port = await fwd.start()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(), 10)
            if not data:
                raise ConnectionError("closed")
        assert fwd.stats.failed == 1
        assert "gone-pod" in fwd.stats.last_error
    finally:
        await fwd.close()


async def test_pod_tunnel_runs_any_protocol(
    api: ApiServer, cluster: Cluster, shared_shop: str
) -> None:
    pod = pods_of(cluster, shared_shop, "web")[0]
    received: asyncio.Queue[bytes | None] = asyncio.Queue()

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            assert isinstance(data, bytes)  # a plain protocol gets bytes, never views
            received.put_nowait(data)

        def connection_lost(self, exc: Exception | None) -> None:
            received.put_nowait(None)

    tunnel = PodTunnel(api, shared_shop, pod)
    transport, _ = await tunnel.create_connection(Collect, "web-agent", 8080)
    assert transport.get_extra_info("peername") == (pod, 8080)
    transport.write(b"GET /healthz HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    data = b""
    while (chunk := await asyncio.wait_for(received.get(), 10)) is not None:
        data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")


async def test_taken_port_falls_back_to_a_free_one() -> None:
    first = await bind_loopback("127.0.0.2", 0, asyncio.Protocol)
    taken = first.sockets[0].getsockname()[1]
    try:
        second = await bind_loopback("127.0.0.2", taken, asyncio.Protocol)
        port = second.sockets[0].getsockname()[1]
        assert port != taken and second.sockets[0].getsockname()[0] == "127.0.0.2"
        second.close()
    finally:
        first.close()


async def test_unreachable_api_server_is_one_line() -> None:
    import ssl

    dead = ApiServer("https://127.0.0.1:1", ssl.create_default_context())
    with pytest.raises(CockpitError) as info:
        await open_pod_stream(dead, "ns", "pod", 80, connect_timeout=5)
    assert "127.0.0.1:1" in info.value.one_line()
