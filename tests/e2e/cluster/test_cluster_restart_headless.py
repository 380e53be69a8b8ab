"""`cockpit up --headless` restarts a service that runs in the cluster: a rollout restart with
its progress in the stream and one result line; a user without the right gets one line and
the Deployment is left as it was."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cockpit.adapters.kube import RESTARTED_AT
from cockpit.core.rbac import NEEDED, Permission
from tests.conftest import Cluster, write_shop_config
from tests.e2e.cluster.cluster_env import COCKPIT, pod_names
from tests.e2e.cluster.test_cluster_doctor import grant, user_kubeconfig, wait_allowed

pytestmark = pytest.mark.cluster


class Headless:
    """One `cockpit up api --headless` session: its JSON events and its stdin."""

    def __init__(
        self, namespace: str, kubeconfig: Path, cwd: Path, services: str | None = None
    ) -> None:
        """``services``: the cockpit.yaml ``services:`` body (default: api, the shop's app)."""
        if services is None:
            write_shop_config(cwd, namespace)
        else:
            (cwd / "cockpit.yaml").write_text(f"namespace: {namespace}\nservices:\n{services}")
        self.proc = subprocess.Popen(
            [*COCKPIT, "up", "api", "--headless"],
            cwd=cwd,
            env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[dict[str, Any]] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._events.put(json.loads(line))

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], within: float = 90
    ) -> dict[str, Any]:
        for event in self.seen:
            if pred(event):
                return event
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(f"cockpit exited {self.proc.returncode}: {err}") from None
                continue
            self.seen.append(event)
            if pred(event):
                return event
        raise AssertionError(f"not seen in {within} s; last events: {self.seen[-5:]}")

    def notices(self, key: str) -> list[str]:
        return [e["text"] for e in self.seen if e["type"] == "Notice" and e["key"] == key]

    def quit(self) -> None:
        self.send({"cmd": "quit"})
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def session_dir(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "app"
    work.mkdir()
    yield work


def result_of(session: Headless, request_id: str, within: float = 150) -> dict[str, Any]:
    return session.wait_for(
        lambda e: e["type"] == "CommandResult" and e["request_id"] == request_id, within
    )


def test_headless_restart_rolls_store_with_progress(
    cluster: Cluster, shop: str, session_dir: Path
) -> None:
    api = cluster.api()
    before = set(pod_names(api, shop, "store"))
    session = Headless(shop, cluster.kubeconfig, session_dir)
    try:
        session.wait_for(lambda e: e["type"] == "ProcessChanged" and e["status"] == "ready")
        session.send({"cmd": "restart", "service": "store", "id": "r1"})
        result = result_of(session, "r1")
        assert result["ok"], result
        assert result["message"].startswith("restarted store in ")
        assert result["message"].endswith("(2/2 ready)")
        notices = session.notices("restart:store")
        assert notices[0] == "restarting store: rollout started"
        assert any("new pods" in n or "old pod" in n for n in notices[1:-1]), notices
        assert notices[-1] == result["message"]
        after = set(pod_names(api, shop, "store"))
        assert len(after) == 2 and not after & before
        # one pod only: the other one stays
        (victim, keeper) = sorted(after)
        session.send({"cmd": "restart", "service": "store", "pod": victim, "id": "r2"})
        one = result_of(session, "r2")
        assert one["ok"] and one["message"].startswith(f"replaced pod {victim} of store in ")
        remaining = set(pod_names(api, shop, "store"))
        assert keeper in remaining and victim not in remaining
    finally:
        session.quit()
    assert session.proc.returncode == 0


async def test_headless_restart_without_the_right_is_one_line_and_changes_nothing(
    cluster: Cluster, shop: str, session_dir: Path, tmp_path: Path
) -> None:
    kubeconfig = user_kubeconfig(cluster, shop, "dev", tmp_path)
    # everything cockpit asks for but patching Deployments (what a rollout restart is)
    granted = [p for p in NEEDED if (p.verb, p.resource) != ("patch", "deployments")]
    grant(cluster, shop, "dev", granted)
    await wait_allowed(kubeconfig, shop, Permission("create", "pods/portforward"), True)
    session = Headless(shop, kubeconfig, session_dir)
    try:
        await asyncio.to_thread(
            session.wait_for, lambda e: e["type"] == "ProcessChanged" and e["status"] == "ready"
        )
        session.send({"cmd": "restart", "service": "store", "id": "denied"})
        result = await asyncio.to_thread(result_of, session, "denied", 60)
        assert not result["ok"]
        message = result["message"]
        assert "\n" not in message and "store" in message and "forbidden" in message.lower()
    finally:
        await asyncio.to_thread(session.quit)
    template = (
        client.AppsV1Api(cluster.api()).read_namespaced_deployment("store", shop).spec.template
    )
    assert RESTARTED_AT not in (template.metadata.annotations or {})
