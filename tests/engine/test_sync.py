"""Remote sync in the engine with a fake pod side: real files and the real file watcher; which
pods get a full sync, which a change, the states published, failures, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cockpit.adapters.podsync import PodContainer, PushResult, TarPayload
from cockpit.core.backoff import Backoff
from cockpit.core.config import SyncRule, parse_config
from cockpit.core.events import Event, Level, LogLine, SyncChanged
from cockpit.core.kubemodel import ContainerView, PodView
from cockpit.core.syncplan import SyncPlan
from cockpit.engine.sync import RemoteSync, RuleSync
from cockpit.errors import NotFoundError, SyncError

WITHIN = 20.0


@dataclass
class Push:
    pod: str
    container: str
    remote: str
    members: tuple[str, ...]
    deletes: tuple[str, ...]
    post: str | None
    full: bool


@dataclass
class FakePodFiles:
    pushes: list[Push] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)  # pod -> error to raise
    delay: float = 0.0

    async def push(
        self,
        target: PodContainer,
        remote_dir: str,
        plan: SyncPlan,
        payload: TarPayload | None,
        post_sync: str | None = None,
    ) -> PushResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        if target.pod in self.fail:
            raise self.fail[target.pod]
        if plan.members:
            assert payload is not None and payload.members == len(plan.members)
        self.pushes.append(
            Push(
                target.pod,
                target.container,
                remote_dir,
                tuple(m.arcname for m in plan.members),
                plan.deletes,
                post_sync,
                full=False,
            )
        )
        return PushResult(0.01, "")


@dataclass
class Bus:
    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def now(self) -> float:
        return time.time()

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def ingest(self, lines: Sequence[LogLine]) -> None:
        pass

    def end_of_stream(self) -> None:
        pass

    def say(self, text: str, level: Level = Level.INFO) -> int:
        self.lines.append(text)
        return len(self.lines)

    def alert(
        self, key: str, service: str, title: str, detail: str, level: Level, log_seq: int
    ) -> None:
        self.alerts.append(title)

    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, SyncChanged)]

    def last(self) -> SyncChanged:
        return [e for e in self.events if isinstance(e, SyncChanged)][-1]


def pod(
    name: str, *, container: str = "app", cid: str = "c1", state: str = "running", uid: str = ""
) -> PodView:
    return PodView(
        name=name,
        phase="Running",
        ready=state == "running",
        deleting=False,
        restarts=0,
        reasons=(),
        containers=(ContainerView(container, state=state, container_id=cid),),
        uid=uid or f"uid-{name}",
        spec_containers=(container,),
    )


async def until(check: Callable[[], bool], within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("hi")
    (root / "css").mkdir()
    (root / "css" / "site.css").write_text("body {}")
    return root


@pytest.fixture
async def running(src: Path) -> AsyncIterator[tuple[RuleSync, FakePodFiles, Bus]]:
    files, bus = FakePodFiles(), Bus()
    rule = SyncRule(local=str(src), remote="/app/static", post_sync=["nginx", "-s", "reload"])
    # A quiet window long enough that a busy machine does not split one test's saves.
    sync = RuleSync("web", rule, str(src), "shop", files, bus, quiet=0.3, retry=Backoff(0.05, 0.2))
    await sync.start()
    yield sync, files, bus
    await sync.stop()


async def test_initial_full_sync_to_running_pods_then_changes_to_all(
    running: tuple[RuleSync, FakePodFiles, Bus], src: Path
) -> None:
    sync, files, bus = running
    assert bus.last().state == "watching" and bus.last().paths == (str(src),)
    sync.update_pods([pod("web-1"), pod("web-2"), pod("web-3", state="waiting", cid="")])
    await until(lambda: bus.last().state == "in-sync")
    assert sorted(p.pod for p in files.pushes) == ["web-1", "web-2"]  # not the waiting one
    first = files.pushes[0]
    assert first.members == ("css", "css/site.css", "index.html")
    assert (first.remote, first.post) == ("/app/static", "nginx -s reload")
    assert bus.states()[-2:] == ["syncing", "in-sync"]
    assert bus.last().files == 2 and bus.last().bytes == len("hi") + len("body {}")

    files.pushes.clear()
    seen = len(bus.states())
    (src / "index.html").write_text("changed")
    (src / "css" / "site.css").rename(src / "css" / "main.css")
    await until(lambda: len(files.pushes) == 2 and bus.last().state == "in-sync")
    after = [e for e in bus.events if isinstance(e, SyncChanged)][seen:]
    assert [e.state for e in after][:2] == ["pending", "syncing"]
    assert after[0].pending == 3  # index.html, the old and the new css name
    assert {p.pod for p in files.pushes} == {"web-1", "web-2"}
    for push in files.pushes:  # only what changed, and the old name deleted
        assert push.members == ("css/main.css", "index.html")
        assert push.deletes == ("css/site.css",)
    assert "sync web:" in bus.lines[-1] and "into 2 pods" in bus.lines[-1]


async def test_a_new_pod_or_a_restarted_container_gets_a_full_sync(
    running: tuple[RuleSync, FakePodFiles, Bus],
) -> None:
    sync, files, bus = running
    sync.update_pods([pod("web-1")])
    await until(lambda: bus.last().state == "in-sync")
    files.pushes.clear()
    sync.update_pods([pod("web-1"), pod("web-2")])  # a second replica
    await until(lambda: len(files.pushes) == 1 and bus.last().state == "in-sync")
    assert files.pushes[0].pod == "web-2" and len(files.pushes[0].members) == 3
    files.pushes.clear()
    sync.update_pods([pod("web-1", cid="c2"), pod("web-2")])  # web-1's container restarted
    await until(lambda: len(files.pushes) == 1 and bus.last().state == "in-sync")
    assert files.pushes[0].pod == "web-1" and len(files.pushes[0].members) == 3
    files.pushes.clear()
    sync.update_pods([pod("web-2")])  # web-1 gone: nothing to do
    await asyncio.sleep(0.2)
    assert files.pushes == [] and bus.last().state == "in-sync"
    sync.update_pods([])
    await until(lambda: bus.last().state == "watching")


async def test_a_failing_pod_is_reported_alerted_once_and_retried(
    running: tuple[RuleSync, FakePodFiles, Bus],
) -> None:
    sync, files, bus = running
    files.fail["web-2"] = SyncError("container app of pod web-2 has no tar; remote sync needs tar")
    sync.update_pods([pod("web-1"), pod("web-2")])
    await until(lambda: bus.last().state == "failed")
    assert bus.last().reason == "container app of pod web-2 has no tar; remote sync needs tar"
    await asyncio.sleep(0.5)  # several retries (backoff 0.05..0.2 s) fail the same way
    assert bus.alerts == [f"sync failed: {bus.last().reason}"]
    del files.fail["web-2"]
    await until(lambda: bus.last().state == "in-sync")  # the retry timer, no change needed
    assert any(p.pod == "web-2" for p in files.pushes)


async def test_a_pod_gone_mid_push_is_dropped_with_the_next_update(
    running: tuple[RuleSync, FakePodFiles, Bus],
) -> None:
    sync, files, bus = running
    files.fail["web-1"] = NotFoundError("pod 'web-1' not found in namespace 'shop'")
    sync.update_pods([pod("web-1"), pod("web-2")])
    await until(lambda: bus.last().state == "failed")
    sync.update_pods([pod("web-2")])
    await until(lambda: bus.last().state == "in-sync")


async def test_changes_during_a_push_go_out_together_next(
    running: tuple[RuleSync, FakePodFiles, Bus], src: Path
) -> None:
    sync, files, bus = running
    sync.update_pods([pod("web-1")])
    await until(lambda: bus.last().state == "in-sync")
    files.pushes.clear()
    files.delay = 2.0  # long enough for the next saves to settle (quiet 0.3 s) meanwhile
    (src / "a.txt").write_text("a")
    await until(lambda: bus.last().state == "syncing")
    for i in range(20):
        (src / f"more-{i}.txt").write_text("x")
    await until(lambda: bus.last().state == "syncing" and bus.last().pending == 20)
    await until(lambda: len(files.pushes) == 2 and bus.last().state == "in-sync")
    assert files.pushes[0].members == ("a.txt",)
    assert len(files.pushes[1].members) == 20


async def test_a_container_the_pods_lack_is_a_rule_failure(src: Path) -> None:
    files, bus = FakePodFiles(), Bus()
    rule = SyncRule(local=str(src), remote="/app", container="sidecar")
    sync = RuleSync("web", rule, str(src), "shop", files, bus)
    await sync.start()
    try:
        sync.update_pods([pod("web-1")])
        await until(lambda: bus.last().state == "failed")
        assert bus.last().reason == "container sidecar not found in pod web-1 (containers: app)"
        assert files.pushes == []
    finally:
        await sync.stop()


async def test_a_service_missing_from_the_cluster_is_a_rule_failure(
    running: tuple[RuleSync, FakePodFiles, Bus],
) -> None:
    sync, files, bus = running
    sync.update_pods(None)
    await until(lambda: bus.last().state == "failed")
    assert bus.last().reason == "service 'web' not found in namespace 'shop'"
    assert files.pushes == []
    sync.update_pods([pod("web-1")])  # created later: synced then
    await until(lambda: bus.last().state == "in-sync")


async def test_a_missing_local_path_fails_the_rule_not_the_session(tmp_path: Path) -> None:
    files, bus = FakePodFiles(), Bus()
    rule = SyncRule(local="nope", remote="/app")
    sync = RuleSync("web", rule, str(tmp_path / "nope"), "shop", files, bus)
    await sync.start()
    sync.update_pods([pod("web-1")])
    await asyncio.sleep(0.1)
    await sync.stop()
    assert bus.last().state == "failed"
    assert bus.last().reason.startswith("sync web: nope -> /app: ")
    assert "does not exist" in bus.last().reason and files.pushes == []
    assert len(bus.alerts) == 1


async def test_a_file_rule_pushes_only_its_file(tmp_path: Path) -> None:
    (tmp_path / "app.ini").write_text("a")
    (tmp_path / "other.txt").write_text("b")
    files, bus = FakePodFiles(), Bus()
    rule = SyncRule(local="app.ini", remote="/etc/app/settings.ini")
    sync = RuleSync("web", rule, str(tmp_path / "app.ini"), "shop", files, bus)
    await sync.start()
    try:
        sync.update_pods([pod("web-1")])
        await until(lambda: bus.last().state == "in-sync")
        assert [(p.remote, p.members) for p in files.pushes] == [("/etc/app", ("settings.ini",))]
        files.pushes.clear()
        (tmp_path / "other.txt").write_text("changed")
        (tmp_path / "app.ini").write_text("changed")
        await until(lambda: len(files.pushes) == 1 and bus.last().state == "in-sync")
        assert files.pushes[0].members == ("settings.ini",)
    finally:
        await sync.stop()


async def test_remote_sync_takes_the_rules_of_remote_services_only(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "api").mkdir()
    config = parse_config(
        "services:\n"
        "  api:\n"
        "    command: python app.py\n"
        "    sync: [{local: api, remote: /srv}]\n"
        "  web:\n"
        "    sync: [{local: web, remote: /app, ignore: ['*.tmp']}]\n",
        str(tmp_path / "cockpit.yaml"),
    )
    files, bus = FakePodFiles(), Bus()
    sync = RemoteSync(config, "api", "shop", files, bus)
    assert [(r.service, r.local) for r in sync.rules] == [("web", str(tmp_path / "web"))]
    await sync.start()
    try:
        sync.update_pods({"web": [pod("web-1")], "api": [pod("api-1")]})
        await until(lambda: bus.last().state == "in-sync")
        (tmp_path / "web" / "x.tmp").write_text("ignored")
        (tmp_path / "web" / "x.txt").write_text("synced")
        await until(lambda: len(files.pushes) == 2)
        assert files.pushes[1].members == ("x.txt",)
        assert {p.pod for p in files.pushes} == {"web-1"}
    finally:
        await sync.stop()
