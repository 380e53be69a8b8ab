"""The agent on 127.0.0.1, driven by real asyncssh clients, with the shop app as both the
"original pods" and the developer's local process. The cluster side is a recording stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from cockpit.adapters.ssh import AgentLink, new_client_key, public_openssh
from cockpit.agent.server import Agent, AgentConfig
from cockpit.core.agent_spec import AgentSettings

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "shop" / "app.py"


@dataclass
class App:
    """One app.py process on 127.0.0.1 (stopped by PID)."""

    proc: subprocess.Popen[str]
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_app(**env: str) -> App:
    full = {
        **os.environ,
        "PORT": "0",
        "BIND": "127.0.0.1",
        "LOG_INTERVAL": "60",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, str(APP)], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if m:
            # Keep draining its log so the pipe never fills.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return App(proc, int(m.group(1)))
    proc.kill()
    raise AssertionError("app.py did not start")


@pytest.fixture
def apps() -> Iterator[Callable[..., App]]:
    started: list[App] = []

    def start(**env: str) -> App:
        app = start_app(**env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


@dataclass
class RecordingCluster:
    """ClusterOps for the agent's local tests: keys in a dict, calls recorded."""

    keys: dict[str, str] = field(default_factory=dict)
    host_keys: dict[str, str] = field(default_factory=dict)
    owned: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)  # Services not intercepted
    restored: list[str] = field(default_factory=list)
    shadows_deleted: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    deleted_self: int = 0
    restore_fails: bool = False

    async def client_key(self, session: str) -> str | None:
        return self.keys.get(session)

    async def publish_host_key(self, pod: str, public_key: str) -> None:
        self.host_keys = {pod: public_key}

    async def owned_services(self) -> list[dict[str, Any]]:
        return self.owned

    async def services(self) -> list[dict[str, Any]]:
        return self.owned + self.others

    async def restore(self, service: str) -> None:
        if self.restore_fails:
            raise RuntimeError("API unreachable")
        self.restored.append(service)

    async def delete_shadow(self, service: str) -> None:
        self.shadows_deleted.append(service)

    async def forget_client_keys(self, sessions: Any) -> None:
        self.forgotten += list(sessions)
        for s in sessions:
            self.keys.pop(s, None)

    async def delete_self(self) -> None:
        self.deleted_self += 1


@dataclass
class Harness:
    agent: Agent
    cluster: RecordingCluster
    origin: App

    @property
    def host_key(self) -> str:
        return self.cluster.host_keys["agent-0"]

    async def link(self, session: str, **kw: Any) -> AgentLink:
        key = new_client_key()
        self.cluster.keys[session] = public_openssh(key)
        return await AgentLink.connect(
            session=session,
            client_key=key,
            host_key=self.host_key,
            port=self.agent.ssh_port,
            **kw,
        )


AgentFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_agent(apps: Callable[..., App]) -> AsyncIterator[AgentFactory]:
    """Start an agent on 127.0.0.1 whose "original pods" are an app.py answering as cluster."""
    started: list[Agent] = []

    async def make(cluster: RecordingCluster | None = None, **settings: Any) -> Harness:
        origin = apps(SERVICE="store", POD_NAME="store-origin")
        cluster = cluster or RecordingCluster()
        config = AgentConfig(
            pod="agent-0",
            settings=AgentSettings(**{"grace": 30.0, "idle_ttl": 0, "drain": 0.2, **settings}),
            bind="127.0.0.1",
            ssh_port=0,
            tick=0.05,
        )
        agent = Agent(config, cluster, lambda service, port: ("127.0.0.1", origin.port))
        await agent.start()
        started.append(agent)
        return Harness(agent, cluster, origin)

    yield make
    for agent in started:
        agent.settings = AgentSettings(drain=0)
        await agent.stop()


class Http:
    """An HTTP/1.1 client on one keep-alive connection (h11), for routing checks."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, path: str = "/echo", headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes = b"",
    ) -> tuple[int, bytes]:  # fmt: skip
        if self.writer is None or self.conn.our_state is h11.MUST_CLOSE:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.conn = h11.Connection(h11.CLIENT)
        assert self.reader is not None
        hdrs = [("host", "api"), ("content-length", str(len(body))), *(headers or {}).items()]
        self.writer.write(self.conn.send(h11.Request(method=method, target=path, headers=hdrs)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before the answer ended")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, b"".join(chunks)

    async def who(self, headers: dict[str, str] | None = None) -> str:
        """``served_by/pod`` of the answer to ``GET /``."""
        status, body = await self.request("/", headers)
        assert status == 200, body
        data = json.loads(body)
        return f"{data['served_by']}/{data['pod']}"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def who(port: int, headers: dict[str, str] | None = None) -> str:
    """One request on a fresh connection."""
    client = Http(port)
    try:
        return await client.who(headers)
    finally:
        client.close()
