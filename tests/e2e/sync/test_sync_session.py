"""Remote sync end to end on the real cluster: real files, the real file watcher, the cluster
watch telling which pods run, tar over exec into every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cockpit.adapters.kube import Kube
from cockpit.adapters.podsync import KubePodFiles
from cockpit.core.config import parse_config
from cockpit.core.events import SyncChanged
from cockpit.engine.cluster import ClusterWatcher
from cockpit.engine.sync import RemoteSync, RuleSync
from tests.conftest import Cluster
from tests.e2e.sync.conftest import PYTHON, SITE_DIR, deploy, run_in, wait_ready
from tests.engine.test_sync import Bus

pytestmark = pytest.mark.cluster

WITHIN = 60.0  # generous: pods start and exec round trips slow down on a busy machine
REMOTE = f"{SITE_DIR}/app"


class Session:
    """The sync side of a session: cluster watch + remote sync, events recorded."""

    def __init__(self, cluster: Cluster, namespace: str, src: Path) -> None:
        self.api = cluster.api()
        self.namespace = namespace
        self.src = src
        self.bus = Bus()
        self.kube = Kube.load(cluster.kubeconfig)
        self.watcher = ClusterWatcher(self.kube, namespace, None, self.bus.publish)
        self.sync: RemoteSync | None = None

    async def start(self, config_text: str, quiet: float = 0.05) -> None:
        config = parse_config(config_text, str(self.src.parent / "cockpit.yaml"))
        await self.watcher.start()
        self.sync = RemoteSync(
            config, "api", self.namespace, KubePodFiles(self.kube), self.bus, quiet=quiet
        )
        await self.sync.start()
        self.watcher.on_pods(self.sync.update_pods)

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        await self.watcher.stop()
        self.kube.close()

    def rule(self, service: str = "site") -> RuleSync:
        assert self.sync is not None
        return next(r for r in self.sync.rules if r.service == service)

    def state(self, service: str = "site") -> SyncChanged | None:
        return self.rule(service).state

    async def until(self, check: Callable[[], bool], what: str, within: float = WITHIN) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {within:.0f} s; last: {self.state()}")
            await asyncio.sleep(0.05)

    async def in_sync(self, service: str = "site") -> SyncChanged:
        def done() -> bool:
            state = self.state(service)
            return state is not None and state.state == "in-sync" and not state.pending

        await self.until(done, f"{service} in sync")
        state = self.state(service)
        assert state is not None
        return state

    def pods(self, app: str = "site") -> list[str]:
        return wait_ready(self.api, self.namespace, f"app={app}", 2 if app == "site" else 1)

    def listing(self, pod: str) -> list[str]:
        out = run_in(self.api, self.namespace, pod, f"cd {REMOTE} && find . -mindepth 1 | sort")
        return out.splitlines()

    async def eventually_everywhere(self, expected: list[str]) -> None:
        """Every site pod lists ``expected`` under REMOTE, and the rule is in sync."""
        pods = self.pods()
        assert len(pods) == 2
        deadline = time.monotonic() + WITHIN
        for pod in pods:
            while (listing := self.listing(pod)) != expected:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{pod}: {listing} != {expected}; last: {self.state()}")
                await asyncio.sleep(0.1)
        await self.in_sync()


CONFIG = f"""\
services:
  api:
    command: python3 app.py
  site:
    sync:
      - local: src
        remote: {REMOTE}
        post_sync: touch /tmp/synced || true
"""


@pytest.fixture
async def session(
    cluster: Cluster, namespace: str, site: list[str], tmp_path: Path
) -> AsyncIterator[Session]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("<h1>shop</h1>\n")
    (src / "css").mkdir()
    (src / "css" / "site.css").write_text("body { color: red }\n")
    session = Session(cluster, namespace, src)
    yield session
    await session.stop()


async def test_create_delete_rename_reach_every_replica(session: Session) -> None:
    await session.start(CONFIG)
    await session.eventually_everywhere(["./css", "./css/site.css", "./index.html"])
    src = session.src

    (src / "js").mkdir()
    (src / "js" / "app.js").write_text("console.log(1)\n")
    await session.eventually_everywhere(
        ["./css", "./css/site.css", "./index.html", "./js", "./js/app.js"]
    )

    (src / "index.html").rename(src / "home.html")
    await session.eventually_everywhere(
        ["./css", "./css/site.css", "./home.html", "./js", "./js/app.js"]
    )

    (src / "css" / "site.css").unlink()
    (src / "css").rmdir()
    await session.eventually_everywhere(["./home.html", "./js", "./js/app.js"])
    pod = session.pods()[0]
    assert run_in(session.api, session.namespace, pod, f"cat {REMOTE}/home.html") == (
        "<h1>shop</h1>\n"
    )


async def test_a_burst_of_1000_changes_is_one_sync(session: Session) -> None:
    # A longer quiet window than the default: the burst must not be split by a busy machine.
    await session.start(CONFIG, quiet=0.5)
    await session.in_sync()
    before = session.rule().syncs
    burst = session.src / "burst"
    burst.mkdir()
    for i in range(1000):
        (burst / f"f{i:04d}.txt").write_text(f"{i}\n")
    await session.until(lambda: session.rule().syncs > before, "a sync after the burst")
    state = await session.in_sync()
    for pod in session.pods():
        count = run_in(session.api, session.namespace, pod, f"ls {REMOTE}/burst | wc -l")
        assert count.strip() == "1000", pod
    assert session.rule().syncs - before == 1
    assert state.files == 1000  # files written by that one sync


async def test_a_pod_replaced_mid_session_gets_the_files(session: Session) -> None:
    await session.start(CONFIG)
    (session.src / "late.txt").write_text("added during the session\n")
    await session.eventually_everywhere(["./css", "./css/site.css", "./index.html", "./late.txt"])
    old = session.pods()
    client.CoreV1Api(session.api).delete_namespaced_pod(
        old[0], session.namespace, grace_period_seconds=0
    )

    deadline = time.monotonic() + WITHIN
    while True:
        pods = session.pods()
        if old[0] not in pods:
            break
        assert time.monotonic() < deadline, "the deleted pod was not replaced"
        await asyncio.sleep(0.2)
    new = next(p for p in pods if p not in old)

    async def new_pod_has_files() -> bool:
        try:
            return session.listing(new) == ["./css", "./css/site.css", "./index.html", "./late.txt"]
        except Exception:
            return False

    deadline = time.monotonic() + WITHIN
    while not await new_pod_has_files():
        assert time.monotonic() < deadline, f"{new} never got the files; last: {session.state()}"
        await asyncio.sleep(0.2)
    await session.in_sync()
    assert run_in(session.api, session.namespace, new, "ls /tmp/synced")  # post_sync ran there


async def test_no_tar_and_a_read_only_path_fail_with_one_clear_line(
    session: Session, cluster: Cluster
) -> None:
    notar: dict[str, Any] = {
        "name": "main",
        "image": PYTHON,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "rm -f /usr/bin/tar /bin/tar && exec sleep infinity"],
    }
    (pod,) = deploy(session.api, session.namespace, "notar", notar)
    # The site's root filesystem is read-only (site_container): /opt/app cannot be made.
    config = """\
services:
  api:
    command: python3 app.py
  site:
    sync: [{local: src, remote: /opt/app}]
  notar:
    sync: [{local: src, remote: /tmp/app}]
"""
    await session.start(config)

    def failed(service: str) -> bool:
        state = session.state(service)
        return state is not None and state.state == "failed"

    await session.until(lambda: failed("site") and failed("notar"), "both rules failed")
    notar_state, site_state = session.state("notar"), session.state("site")
    assert notar_state is not None and site_state is not None
    assert notar_state.reason == (
        f"container main of pod {pod} has no tar; remote sync needs tar in the image"
    )
    reason = site_state.reason
    assert reason.startswith("/opt/app is read-only in container web of pod site-"), reason
    assert reason.endswith(" (and 1 more pod)"), reason
    titles = [a for a in session.bus.alerts if "no tar" in a or "read-only" in a]
    assert len(titles) >= 2
