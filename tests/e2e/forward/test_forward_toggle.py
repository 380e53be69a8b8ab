"""`f` on the real cluster: a session's port-forward stops (connections refused) and starts
again at the same address, while the local process keeps running with the same environment;
and `cockpit up --headless` prints each cleanup step on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.adapters.process import process_factory
from cockpit.cli import _cluster_starter
from cockpit.core.commands import ToggleForward
from cockpit.core.config import parse_config
from cockpit.core.events import Event, ForwardChanged, ProcessChanged, ProcessStatus
from cockpit.engine.session import Engine
from tests.adapters.test_portforward_forwards import get
from tests.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster
COCKPIT = Path(sys.executable).parent / "cockpit"
APP = REPO / "examples" / "shop" / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shop_config(namespace: str, port: int) -> str:
    return (
        f"namespace: {namespace}\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, {str(APP)!r}]\n"
        f"    port: {port}\n"
        f"    env: {{SERVICE: api, PORT: '{port}', BIND: 127.0.0.1}}\n"
    )


async def refused(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


async def test_toggle_forward_stops_and_restarts_the_listener_at_the_same_address(
    cluster: Cluster, shared_shop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `cockpit up` finds the kubeconfig the way the kubernetes client does ($KUBECONFIG, read
    # when the client is imported): point that default at the cluster under test.
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig)
    )
    port = free_port()
    config = parse_config(shop_config(shared_shop, port), str(tmp_path / "cockpit.yaml"))
    engine = Engine(
        config,
        "api",
        process_factory=process_factory,
        base_env=dict(os.environ),
        namespace=shared_shop,
        cluster=_cluster_starter("api", "", shared_shop),
    )
    seen: list[Event] = []

    async def collect() -> None:
        async for event in engine.events():
            seen.append(event)

    collector = asyncio.create_task(collect())

    async def until(check: Any, within: float = 60.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for event in reversed(seen):
                if check(event):
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"not seen in {within} s; last events: {seen[-6:]}")

    def store(state: str) -> Any:
        return lambda e: (
            isinstance(e, ForwardChanged) and e.name == "store:8080" and e.state == state
        )

    try:
        await engine.start()
        ready = await until(lambda e: isinstance(e, ProcessChanged) and e.status.value == "ready")
        pid = ready.pid
        listening = await until(store("listening"))
        host, fwd_port = listening.local.rsplit(":", 1)
        env_before = environ_of(pid)
        assert f"STORE_URL=http://{listening.local}".encode() in env_before
        chain = (await get("127.0.0.1", port))["chain"]
        assert [hop["service"] for hop in chain] == ["api", "store"]

        off = await engine.submit(ToggleForward(service="store"))
        assert off.ok, off.message
        assert off.message.startswith("store: port-forward stopped")
        stopped = await until(store("stopped"))
        assert stopped.local == listening.local
        assert await refused(host, int(fwd_port))
        assert engine.state.forwards["store:8080"].state == "stopped"

        on = await engine.submit(ToggleForward(service="store"))
        assert on.ok, on.message
        assert on.message == f"store: port-forward listening again on {listening.local}"
        again = await until(lambda e: store("listening")(e) and seen.index(e) > seen.index(stopped))
        assert again.local == listening.local
        assert (await get(host, int(fwd_port)))["service"] == "store"
        chain = (await get("127.0.0.1", port))["chain"]
        assert [hop["service"] for hop in chain] == ["api", "store"]

        # the local process was never restarted and its environment is what it was
        statuses = [e for e in seen if isinstance(e, ProcessChanged)]
        assert [e.status for e in statuses if e.status is ProcessStatus.STOPPING] == []
        assert environ_of(pid) == env_before
    finally:
        await engine.stop()
        await asyncio.wait_for(collector, 30)
    assert await refused(host, int(fwd_port))  # the session's listeners are gone with it


def test_headless_forward_command_and_cleanup_steps_on_sigterm(
    cluster: Cluster, shop: str, tmp_path: Path
) -> None:
    from tests.e2e.intercept.conftest import FAST

    port = free_port()
    (tmp_path / "cockpit.yaml").write_text(shop_config(shop, port))
    env = {**os.environ, **FAST.env(), "KUBECONFIG": str(cluster.kubeconfig)}
    proc = subprocess.Popen(
        [str(COCKPIT), "up", "api", "--headless", "--intercept", "global"],
        cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    seen: list[dict[str, Any]] = []

    def read_until(match: Any, within: float = 90.0) -> dict[str, Any]:
        assert proc.stdout is not None
        for event in seen:
            if match(event):
                return event
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"cockpit ended (exit {proc.wait()}): {proc.stderr.read()}")  # type: ignore[union-attr]
            event = json.loads(line)
            seen.append(event)
            if match(event):
                return dict(event)
        raise AssertionError(f"not seen in {within} s; last: {seen[-5:]}")

    try:
        read_until(lambda e: e["type"] == "ConnectionChanged" and e["name"] == "agent"
                   and e["state"] == "connected")  # fmt: skip
        read_until(lambda e: e["type"] == "ForwardChanged" and e["name"] == "store:8080"
                   and e["state"] == "listening")  # fmt: skip
        proc.stdin.write(json.dumps({"cmd": "forward", "service": "store", "id": "f1"}) + "\n")
        proc.stdin.flush()
        result = read_until(lambda e: e["type"] == "CommandResult" and e["request_id"] == "f1")
        assert result["ok"] is True and result["command"] == "forward", result
        read_until(lambda e: e["type"] == "ForwardChanged" and e["name"] == "store:8080"
                   and e["state"] == "stopped")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seen.extend(json.loads(line) for line in rest.splitlines() if line.strip())
    steps = [e["text"] for e in seen if e["type"] == "Notice" and e["key"] == "cleanup"]
    session = next(e["session_id"] for e in seen if e["type"] == "SessionInfo")
    assert steps == [
        "removing the intercept of api, giving the Service back",
        "stopping the local process api",
        "closing port-forwards and watches",
        f"done: session {session} stopped",
    ]
    # each step comes before what it announces is reported done
    index = {id(e): n for n, e in enumerate(seen)}
    first_step = next(e for e in seen if e["type"] == "Notice" and e["key"] == "cleanup")
    stopped = next(
        e for e in seen if e["type"] == "ProcessChanged" and e["status"] in ("stopped", "exited")
        and index[id(e)] > index[id(first_step)]
    )  # fmt: skip
    assert index[id(first_step)] < index[id(stopped)]
    assert seen[-1]["type"] == "Notice" and seen[-1]["text"] == steps[-1]
