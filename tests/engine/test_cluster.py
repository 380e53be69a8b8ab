"""ClusterWatcher and the pod log follower against a scripted fake cluster: the paths that are
hard to provoke on a real one (a stream that breaks before its first line, relists, a watch
that goes down for one kind only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from cockpit.adapters.kube import Changed, Listed, StateSink, UpdateSink
from cockpit.core.events import (
    ConnectionChanged,
    Event,
    Level,
    LogLine,
    ServiceChanged,
    SourceKind,
)
from cockpit.core.kubemodel import KINDS
from cockpit.engine.cluster import ClusterWatcher
from cockpit.errors import ClusterError, NotFoundError

T = TypeVar("T")
NOW = 1714557600.0  # 2024-05-01T10:00:00Z


def stamp(second: int, frac: str = "") -> str:
    return f"2024-05-01T10:00:{second:02d}{'.' + frac if frac else ''}Z"


@dataclass
class FakeStream:
    """A scripted log response: chunks, then an end or a break."""

    chunks: list[bytes]
    breaks: bool = False
    hold: asyncio.Event | None = None  # keep the stream open until set
    server_time: str = stamp(0)
    closed: bool = False

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._run()

    async def _run(self) -> AsyncIterator[list[bytes]]:
        for chunk in self.chunks:
            yield [chunk]
        if self.hold is not None:
            await self.hold.wait()
        if self.breaks:
            raise ClusterError("log stream broke: connection reset")

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeWatch:
    initial: dict[str, list[dict[str, Any]]]
    stopped: bool = False

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeCluster:
    """A ClusterSource whose objects and log responses a test scripts."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: dict[tuple[str, str], list[FakeStream | Exception]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    context: str = "dev"
    namespace: str = "shop"
    server: str = "https://fake"
    on_updates: UpdateSink | None = None
    on_state: StateSink | None = None
    exists: bool | None = True

    async def watch_namespace(
        self,
        namespace: str,
        on_updates: UpdateSink,
        on_state: StateSink,
        kinds: Sequence[str] = KINDS,
    ) -> FakeWatch:
        self.on_updates, self.on_state = on_updates, on_state
        return FakeWatch({k: list(self.objects.get(k, [])) for k in kinds})

    async def follow_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool = True,
        since_time: str = "",
        tail_lines: int | None = None,
        previous: bool = False,
    ) -> FakeStream:
        self.requests.append(
            {"pod": pod, "since": since_time, "tail": tail_lines, "previous": previous}
        )
        script = self.logs.get((pod, container)) or []
        if not script:
            return FakeStream([], hold=asyncio.Event())  # quiet: stays open
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    def namespace_exists(self, namespace: str) -> bool | None:
        return self.exists

    def restart_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def delete_pod(self, namespace: str, name: str) -> None:
        raise NotImplementedError

    def server_version(self) -> str:
        return "v1.20.2"

    def review_access(self, namespace: str, permissions: Sequence[Any]) -> list[Any]:
        return []


def service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"app": name}}}


def pod(
    name: str,
    app: str = "store",
    *,
    restarts: int = 0,
    state: str = "running",
    cid: str = "c1",
    last_cid: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "main",
        "ready": state == "running",
        "restartCount": restarts,
        "state": {
            state: {"startedAt": stamp(0)} if state == "running" else {"reason": "CrashLoopBackOff"}
        },
        "lastState": {"terminated": {"containerID": last_cid, "reason": "Error", "exitCode": 1}}
        if last_cid
        else {},
    }
    if state != "waiting":
        status["containerID"] = cid
    return {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if state == "running" else "False"}],
            "containerStatuses": [status],
        },
    }


def lines(*entries: tuple[str, str]) -> bytes:
    return b"".join(f"{s} {t}\n".encode() for s, t in entries)


def warning(name: str, target: str, count: int = 1, second: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": name},
        "type": "Warning",
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "count": count,
        "lastTimestamp": stamp(second),
        "involvedObject": {"kind": "Pod", "name": target},
    }


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lines: list[LogLine] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def on_lines(self, new: Sequence[LogLine]) -> None:
        self.lines.extend(new)

    def texts(self, kind: SourceKind = SourceKind.POD) -> list[str]:
        return [line.text for line in self.lines if line.kind is kind]


async def settle(condition: Callable[[], bool] = lambda: False, rounds: int = 50) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.01)


def watcher(fake: FakeCluster, sink: Sink, services: list[str] | None = None) -> ClusterWatcher:
    return ClusterWatcher(
        fake, "shop", services, sink.publish, on_lines=sink.on_lines, clock=lambda: NOW + 30
    )


async def test_views_and_connection_state() -> None:
    fake = FakeCluster({"services": [service("store")], "pods": [pod("store-1"), pod("store-2")]})
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    assert [e for e in sink.events if isinstance(e, ConnectionChanged)] == [
        ConnectionChanged("api", "connecting"),
        ConnectionChanged("api", "connected"),
    ]
    assert ServiceChanged("store", ready=2, total=2) in sink.events
    assert fake.on_state is not None and fake.on_updates is not None
    fake.on_state("pods", "disconnected: connection refused")
    fake.on_state("services", "disconnected: connection refused")
    fake.on_state("pods", "connected")
    assert sink.events[-1] == ConnectionChanged("api", "disconnected")  # services still down
    fake.on_state("services", "connected")
    assert sink.events[-1] == ConnectionChanged("api", "connected")
    states = [e.state for e in sink.events if isinstance(e, ConnectionChanged)]
    assert states == ["connecting", "connected", "disconnected", "connected"]
    # A pod goes: coalesced into one ServiceChanged on the next loop turn.
    fake.on_updates([Changed("pods", "DELETED", pod("store-2"))])
    await settle(lambda: sink.events[-1] == ServiceChanged("store", ready=1, total=1))
    assert sink.events[-1] == ServiceChanged("store", ready=1, total=1)
    await w.stop()


async def test_warning_events_become_lines_once() -> None:
    fake = FakeCluster(
        {
            "services": [service("store")],
            "pods": [pod("store-1")],
            # one recent event at start, one too old to show
            "events": [
                warning("old", "store-1", second=0),
                warning("recent", "store-1", second=29),
            ],
        }
    )
    sink = Sink()
    w = ClusterWatcher(fake, "shop", None, sink.publish, on_lines=sink.on_lines,
                       clock=lambda: NOW + 1000, event_history=975)  # fmt: skip
    await w.start()
    assert sink.texts(SourceKind.EVENT) == [
        "Pod/store-1: BackOff: Back-off restarting failed container"
    ]
    assert fake.on_updates is not None
    fake.on_updates(
        [Changed("events", "MODIFIED", warning("recent", "store-1", count=2, second=40))]
    )
    # A relist delivers every event again: nothing new.
    fake.on_updates([Listed("events", [warning("recent", "store-1", count=2, second=40)], "9")])
    events = [x for x in sink.lines if x.kind is SourceKind.EVENT]
    assert [x.text for x in events] == [
        "Pod/store-1: BackOff: Back-off restarting failed container",
        "Pod/store-1: BackOff: Back-off restarting failed container (x2)",
    ]
    assert all(x.level is Level.WARNING and x.service == "store" for x in events)
    await w.stop()


async def test_unknown_service_and_namespace() -> None:
    fake = FakeCluster({"services": [service("store")]})
    with pytest.raises(NotFoundError) as missing:
        await watcher(fake, Sink(), ["stroe"]).start()
    assert missing.value.one_line() == (
        "service 'stroe' not found in namespace 'shop' (did you mean 'store'?)"
    )
    empty = FakeCluster({}, exists=False)
    with pytest.raises(NotFoundError, match="namespace 'shop' not found in context 'dev'"):
        await watcher(empty, Sink()).start()


async def test_a_stream_that_breaks_resumes_from_its_last_second() -> None:
    fake = FakeCluster({"services": [service("store")], "pods": [pod("store-1")]})
    first = FakeStream([lines((stamp(1, "1"), "a"), (stamp(1, "2"), "b"))], breaks=True)
    again = FakeStream([lines((stamp(1, "1"), "a"), (stamp(1, "2"), "b"), (stamp(1, "3"), "c"))],
                       hold=asyncio.Event())  # fmt: skip
    fake.logs[("store-1", "main")] = [first, again]
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    await settle(lambda: len(sink.texts()) == 3, rounds=200)
    assert sink.texts() == ["a", "b", "c"]
    assert [(r["since"], r["tail"]) for r in fake.requests] == [("", 20), (stamp(1), None)]
    await w.stop()


async def test_a_stream_that_breaks_before_its_first_line_resumes_from_attach_time() -> None:
    fake = FakeCluster({"services": [service("store")], "pods": [pod("store-1")]})
    fake.logs[("store-1", "main")] = [
        FakeStream([], breaks=True, server_time=stamp(5)),
        FakeStream([lines((stamp(6), "written while away"))], hold=asyncio.Event()),
    ]
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    await settle(lambda: len(sink.texts()) == 1, rounds=200)
    assert sink.texts() == ["written while away"]
    # Not the tail again (it would skip what was written while away): from when it attached.
    assert [(r["since"], r["tail"]) for r in fake.requests] == [("", 20), (stamp(5), None)]
    await w.stop()


async def test_attach_to_a_restarted_container_shows_the_previous_one_first() -> None:
    fake = FakeCluster(
        {
            "services": [service("store")],
            "pods": [pod("store-1", restarts=1, cid="c2", last_cid="c1")],
        }
    )
    fake.logs[("store-1", "main")] = [
        FakeStream([lines((stamp(1), "old 1"), (stamp(2), "old 2"))]),  # previous=true
        FakeStream([lines((stamp(8), "new 1"))], hold=asyncio.Event()),
    ]
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    await settle(lambda: "new 1" in sink.texts(), rounds=200)
    assert [(x.text, x.stream, x.kind) for x in sink.lines] == [
        ("last lines of the previous main container (Error):", "stdout", SourceKind.COCKPIT),
        ("old 1", "previous", SourceKind.POD),
        ("old 2", "previous", SourceKind.POD),
        ("new 1", "stdout", SourceKind.POD),
    ]
    assert [(r["previous"], r["tail"]) for r in fake.requests] == [(True, 20), (False, 20)]
    await w.stop()


async def test_a_crash_looping_container_is_read_once_per_instance() -> None:
    fake = FakeCluster(
        {
            "services": [service("store")],
            "pods": [pod("store-1", restarts=1, state="waiting", last_cid="c1")],
        }
    )
    fake.logs[("store-1", "main")] = [FakeStream([lines((stamp(1), "boot c1"))])]
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    await settle(lambda: sink.texts() == ["boot c1"])
    # Waiting in back-off: the last instance is what the log endpoint serves, read once.
    assert [(r["previous"], r["tail"]) for r in fake.requests] == [(False, 20)]
    # The next instance runs and dies.
    fake.logs[("store-1", "main")] = [
        FakeStream([lines((stamp(1), "boot c1"), (stamp(12), "boot c2"))])
    ]
    assert fake.on_updates is not None
    fake.on_updates(
        [Changed("pods", "MODIFIED", pod("store-1", restarts=2, state="waiting", last_cid="c2"))]
    )
    await settle(lambda: "boot c2" in sink.texts())
    assert sink.texts() == ["boot c1", "boot c2"]
    notes = sink.texts(SourceKind.COCKPIT)
    assert notes == ["container main restarted (Error, exit code 1), restart #2"]
    await w.stop()


async def test_gone_pods_are_dropped_and_new_ones_followed_from_the_start() -> None:
    fake = FakeCluster({"services": [service("store")], "pods": [pod("store-1")]})
    end = asyncio.Event()
    fake.logs[("store-1", "main")] = [FakeStream([lines((stamp(1), "one"))], hold=end)]
    sink = Sink()
    w = watcher(fake, sink)
    await w.start()
    logs = w.logs
    assert logs is not None
    await settle(lambda: sink.texts() == ["one"])
    assert fake.on_updates is not None
    fake.on_updates(
        [Changed("pods", "DELETED", pod("store-1")), Changed("pods", "ADDED", pod("store-2"))]
    )
    await settle(lambda: logs.following == ["store-1/main", "store-2/main"])
    assert logs.following == ["store-1/main", "store-2/main"]  # store-1 drains to its end
    end.set()
    await settle(lambda: logs.following == ["store-2/main"])
    assert logs.following == ["store-2/main"]
    assert fake.requests[-1] == {"pod": "store-2", "since": "", "tail": None, "previous": False}
    await w.stop()
    assert logs.following == []
