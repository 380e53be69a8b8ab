"""The session's service forwards (engine) on the real cluster: addresses, pod loss under load,
no ready pod, counters; and the pod choice with a fake catalog."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from cockpit.adapters.portforward import (
    ApiServer,
    KubePortForwarder,
    NoReadyPodError,
    PodTarget,
    PortForwardError,
)
from cockpit.adapters.servicecatalog import (
    Backend,
    KubeServiceCatalog,
    ServicePort,
    ServiceSpec,
)
from cockpit.core.events import Event, ForwardChanged, Notice
from cockpit.engine.forwards import ServiceForward, ServiceForwards, loopback_host
from cockpit.errors import NotFoundError
from tests.conftest import Cluster


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> bool:
    for _ in range(int(within / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def get(host: str, port: int, path: str = "/") -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    answer: dict[str, Any] = json.loads(body)
    return answer


class Forwards:
    """ServiceForwards on the real cluster plus every event it published."""

    def __init__(self, cluster: Cluster, namespace: str, **kw: Any) -> None:
        api_client = cluster.api()
        self.events: list[Event] = []
        self.forwards = ServiceForwards(
            KubePortForwarder(ApiServer.from_configuration(api_client.configuration)),
            KubeServiceCatalog(api_client),
            namespace,
            self.events.append,
            **kw,
        )

    def changes(self, name: str) -> list[ForwardChanged]:
        return [e for e in self.events if isinstance(e, ForwardChanged) and e.name == name]


@pytest.fixture
async def forwards(cluster: Cluster, shop: str) -> AsyncIterator[Forwards]:
    fw = Forwards(cluster, shop, report_every=0.1)
    yield fw
    await fw.forwards.stop()


@pytest.mark.cluster
async def test_each_service_gets_its_own_loopback_address(
    cluster: Cluster, shared_shop: str
) -> None:
    fw = Forwards(cluster, shared_shop)
    try:
        addresses = await fw.forwards.start(exclude={"api"})
        assert sorted(addresses.services) == ["store", "web"]
        store = addresses.services["store"]
        web = addresses.services["web"]
        assert (store.host, web.host) == ("127.0.0.2", "127.0.0.3")
        assert store.ports[0].local_port == 8080 and web.ports[0].local_port == 8080
        assert await wait_until(lambda: fw.forwards.get("store:8080").state == "listening")  # type: ignore[union-attr]
        answer = await get(store.host, 8080)
        assert answer["service"] == "store"
        chain = (await get(web.host, 8080))["chain"]
        assert [hop["service"] for hop in chain] == ["web", "api", "store"]
        last = fw.changes("store:8080")[-1]
        assert last.local == "127.0.0.2:8080" and last.remote.endswith(":8080")
        assert last.state == "listening"
    finally:
        await fw.forwards.stop()


@pytest.mark.cluster
async def test_unknown_service_is_one_line_not_found(cluster: Cluster, shared_shop: str) -> None:
    fw = Forwards(cluster, shared_shop)
    with pytest.raises(NotFoundError) as info:
        await fw.forwards.start(["stroe"])
    assert "stroe" in info.value.one_line() and shared_shop in info.value.one_line()
    assert fw.forwards.forwards == []


@pytest.mark.cluster
async def test_a_service_without_ready_pods_says_so_and_does_not_hang(
    cluster: Cluster, shared_shop: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    core.create_namespaced_service(
        shared_shop,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="nobody"),
            spec=client.V1ServiceSpec(
                selector={"app": "nobody"}, ports=[client.V1ServicePort(port=8080)]
            ),
        ),
    )
    fw = Forwards(cluster, shared_shop, wait_for_pod=1.0)
    try:
        await fw.forwards.start(["nobody"])
        fwd = fw.forwards.get("nobody")
        assert fwd is not None
        assert await wait_until(lambda: fwd.state.startswith("failed"))
        assert fwd.state == "failed: no ready pod behind nobody"
        assert fw.changes("nobody:8080")[-1].state == "failed: no ready pod behind nobody"
        host, port = fwd.listener.address  # type: ignore[union-attr]
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(ConnectionError):
            if not await asyncio.wait_for(reader.read(), 5):
                raise ConnectionError("closed")
        assert time.monotonic() - t0 < 3
        assert "no ready pod behind nobody" in fwd.stats.last_error
    finally:
        await fw.forwards.stop()
        # 1.20 answers a Status here, which this client cannot parse into a V1Service.
        core.delete_namespaced_service("nobody", shared_shop, _preload_content=False)


@pytest.mark.cluster
async def test_counters_follow_fifty_open_connections(forwards: Forwards) -> None:
    await forwards.forwards.start(["store"])
    fwd = forwards.forwards.get("store")
    assert fwd is not None and await wait_until(lambda: fwd.state == "listening")
    host, port = fwd.listener.address  # type: ignore[union-attr]
    conns = [await asyncio.open_connection(host, port) for _ in range(50)]
    request = b"GET /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
    for _, writer in conns:
        writer.write(request)
    for reader, _ in conns:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        body = await reader.readexactly(1000)
        assert head.startswith(b"HTTP/1.1 200") and len(body) == 1000
        answered = len(head) + len(body)
    assert await wait_until(
        lambda: any(e.connections == 50 for e in forwards.changes("store:8080"))
    )
    for _, writer in conns:
        writer.close()
    assert await wait_until(lambda: forwards.changes("store:8080")[-1].connections == 0)
    last = forwards.changes("store:8080")[-1]
    assert last.bytes_out == 50 * len(request)
    assert last.bytes_in == 50 * answered


@pytest.mark.cluster
async def test_pod_deleted_under_load_costs_only_the_requests_in_flight(
    cluster: Cluster, forwards: Forwards
) -> None:
    namespace = forwards.forwards.namespace
    await forwards.forwards.start(["store"])
    fwd = forwards.forwards.get("store")
    assert fwd is not None and await wait_until(lambda: fwd.state == "listening")
    first = fwd.current.pod  # type: ignore[union-attr]
    host, port = fwd.listener.address  # type: ignore[union-attr]
    results: list[tuple[float, float, str]] = []  # (start, end, pod or "")
    stop = asyncio.Event()

    async def client_loop() -> None:
        # Keep-alive connections of up to 10 requests, then a new connection.
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                results.append((time.monotonic(), time.monotonic(), ""))
                continue
            try:
                for _ in range(10):
                    t0 = time.monotonic()
                    writer.write(b"GET / HTTP/1.1\r\nHost: store\r\n\r\n")
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    body = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
                    results.append((t0, time.monotonic(), body["pod"]))
                    if stop.is_set():
                        break
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
                results.append((t0, time.monotonic(), ""))
            finally:
                writer.close()

    clients = [asyncio.create_task(client_loop()) for _ in range(6)]
    await asyncio.sleep(1.5)
    assert results and all(pod == first for _, _, pod in results if pod)
    core = client.CoreV1Api(cluster.api())
    t_kill = time.monotonic()
    await asyncio.to_thread(core.delete_namespaced_pod, first, namespace)
    await asyncio.sleep(4.0)
    stop.set()
    await asyncio.gather(*clients)

    failed = [r for r in results if not r[2]]
    before = [r for r in results if r[1] < t_kill]
    settled = [r for r in results if r[0] > t_kill + 2.0]
    print(
        f"\n{len(results)} requests, {len(failed)} failed "
        f"({[round(r[0] - t_kill, 2) for r in failed]} s after the kill)"
    )
    assert before and all(pod == first for _, _, pod in before)
    # Only requests in flight at the kill may fail: started before it, or just after it
    # while the pod was still being taken out of the endpoints.
    assert all(r[0] < t_kill + 2.0 for r in failed)
    assert len(failed) <= 6 * 2  # at most about one per client connection in flight
    assert settled and all(pod and pod != first for _, _, pod in settled)
    assert fwd.current is not None and fwd.current.pod != first
    remotes = [e.remote for e in forwards.changes("store:8080")]
    assert any(r.startswith(first) for r in remotes) and remotes[-1].startswith(fwd.current.pod)


# -- pod choice, with a fake catalog (no cluster) ---------------------------------------

SPEC = ServiceSpec("store", "shop", (ServicePort("http", 8080, "http"),))


def backends(*pods: str) -> tuple[Backend, ...]:
    return tuple(Backend(p, {"http": 8080}) for p in pods)


async def test_the_forward_sticks_to_its_pod_until_it_goes() -> None:
    published: list[ForwardChanged] = []
    fwd = ServiceForward(SPEC, SPEC.ports[0], published.append, wait_for_pod=0.2)
    fwd.update(backends("store-a", "store-b"))
    assert await fwd.pick(frozenset()) == PodTarget("shop", "store-a", 8080)
    fwd.update(backends("store-0", "store-a", "store-b"))  # a new pod sorts first: no move
    assert (await fwd.pick(frozenset())).pod == "store-a"
    fwd.update(backends("store-0", "store-b"))
    assert (await fwd.pick(frozenset())).pod == "store-0"
    assert [e.remote for e in published if e.remote] == ["store-a:8080", "store-0:8080"]


async def test_a_failed_pod_is_avoided_and_retries_exclude_it() -> None:
    fwd = ServiceForward(SPEC, SPEC.ports[0], lambda e: None, wait_for_pod=0.2)
    fwd.update(backends("store-a", "store-b"))
    a = await fwd.pick(frozenset())
    fwd.failed(a, PortForwardError("refused"))
    assert (await fwd.pick(frozenset())).pod == "store-b"
    assert (await fwd.pick(frozenset({"store-b"}))).pod == "store-a"  # better than nothing
    with pytest.raises(NoReadyPodError, match="no ready pod behind store"):
        await fwd.pick(frozenset({"store-a", "store-b"}))


async def test_a_pick_waits_briefly_for_a_pod_to_appear() -> None:
    fwd = ServiceForward(SPEC, SPEC.ports[0], lambda e: None, wait_for_pod=2.0)
    fwd.update(())
    assert fwd.current is None
    asyncio.get_running_loop().call_later(0.1, fwd.update, backends("store-c"))
    t0 = time.monotonic()
    assert (await fwd.pick(frozenset())).pod == "store-c"
    assert time.monotonic() - t0 < 1.0


def test_loopback_addresses() -> None:
    assert loopback_host(0) == "127.0.0.2"
    assert loopback_host(251) == "127.0.0.253"
    assert loopback_host(252) == "127.0.1.0"


@pytest.mark.cluster
async def test_a_taken_port_moves_the_forward_and_says_so(
    cluster: Cluster, shared_shop: str
) -> None:
    # Something else already listens on web's address (127.0.0.3:8080 when api is local).
    squatter = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.3", 8080)
    fw = Forwards(cluster, shared_shop)
    try:
        addresses = await fw.forwards.start(exclude={"api"})
        web = addresses.services["web"]
        assert web.host == "127.0.0.3" and web.ports[0].local_port not in (0, 8080)
        notices = [e for e in fw.events if isinstance(e, Notice)]
        assert len(notices) == 1 and "web:8080" in notices[0].text
        assert f"127.0.0.3:{web.ports[0].local_port}" in notices[0].text
        assert (await get("127.0.0.3", web.ports[0].local_port))["service"] == "web"
    finally:
        squatter.close()
        await fw.forwards.stop()
