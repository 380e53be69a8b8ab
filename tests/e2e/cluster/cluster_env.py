"""Helpers for the cluster-adapter tests: a cuttable loopback relay in front of the API server,
kubeconfig copies (through the relay, or as a ServiceAccount), small workloads, recorders."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from cockpit.core.events import (
    ConnectionChanged,
    Event,
    LogLine,
    Notice,
    ServiceChanged,
    SourceKind,
)

PYTHON_IMAGE = "docker.io/cockpit/python:dev"


# -- the relay -------------------------------------------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.1 in front of the API server. ``cut()`` closes the listener and
    every relayed connection (the API server "goes away"); ``restore()`` listens again on the
    same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        for task in pipes:
            self._tasks.discard(task)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()


def api_target(kubeconfig: Path) -> tuple[str, int]:
    """Host and port of the API server a kubeconfig points at."""
    url = urlsplit(load_kubeconfig(kubeconfig)["clusters"][0]["cluster"]["server"])
    return url.hostname or "127.0.0.1", url.port or 443


def load_kubeconfig(path: Path) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def kubeconfig_copy(
    source: Path,
    target: Path,
    *,
    server: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A copy of a kubeconfig with another server address, a token user, or a namespace."""
    doc = load_kubeconfig(source)
    if server is not None:
        for entry in doc["clusters"]:
            entry["cluster"]["server"] = server
    if token is not None:
        for entry in doc["users"]:
            entry["user"] = {"token": token}
    if namespace is not None:
        for entry in doc["contexts"]:
            entry["context"]["namespace"] = namespace
    target.write_text(json.dumps(doc))
    return target


def free_port() -> int:
    """A loopback port nothing listens on (for an API server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_account_token(api: client.ApiClient, namespace: str, name: str) -> str:
    """Create a ServiceAccount and return its token (1.20 makes a token Secret for it)."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sa = core.read_namespaced_service_account(name, namespace)
        for ref in sa.secrets or ():
            secret = core.read_namespaced_secret(ref.name, namespace)
            if secret.data and secret.data.get("token"):
                return base64.b64decode(secret.data["token"]).decode()
        time.sleep(0.2)
    raise AssertionError(f"no token Secret for ServiceAccount {name}")


# -- workloads -------------------------------------------------------------------------------


def python_deployment(
    name: str,
    script: str,
    *,
    replicas: int = 1,
    grace: int = 2,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment whose container runs ``python3 -u -c script``."""
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "main",
                            "image": PYTHON_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-u", "-c", script],
                        }
                    ],
                },
            },
        },
    }


def service_for(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": labels or {"app": name}, "ports": [{"port": 8080}]},
    }


def deploy(api: client.ApiClient, namespace: str, *objects: dict[str, Any]) -> None:
    for obj in objects:
        if obj["kind"] == "Deployment":
            client.AppsV1Api(api).create_namespaced_deployment(namespace, obj)
        elif obj["kind"] == "Service":
            client.CoreV1Api(api).create_namespaced_service(namespace, obj)
        else:
            raise ValueError(obj["kind"])


# A process that counts: "seq N" every few ms, "bye N" on SIGTERM.
TICKER = """
import signal, sys, time
n = 0
def bye(*_):
    print("bye %d" % n, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while True:
    print("seq %d" % n, flush=True)
    n += 1
    time.sleep(0.01)
"""


# -- recording what the engine side receives -------------------------------------------------


class Recorder:
    """Collects published events and log lines; ``wait`` polls a condition on them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lines: list[LogLine] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def on_lines(self, lines: Sequence[LogLine]) -> None:
        self.lines.extend(lines)

    async def wait(self, condition: Callable[[], Any], within: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + within
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                recent = [str(e) for e in self.events[-5:]] + [
                    f"{x.source}: {x.text}" for x in self.lines[-5:]
                ]
                raise AssertionError(
                    f"timed out waiting for {what or condition}; last seen: {recent}"
                )
            await asyncio.sleep(0.05)

    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, ConnectionChanged)]

    def changes(self, service: str) -> list[ServiceChanged]:
        return [e for e in self.events if isinstance(e, ServiceChanged) and e.service == service]

    def last(self, service: str) -> ServiceChanged | None:
        changes = self.changes(service)
        return changes[-1] if changes else None

    def notices(self, key: str) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Notice) and e.key == key]

    def texts(self, source_prefix: str = "", stream: str | None = None) -> list[str]:
        """What the pods' containers wrote (cockpit's own notes and events left out)."""
        return [
            line.text
            for line in self.lines
            if line.kind is SourceKind.POD
            and line.source.startswith(source_prefix)
            and (stream is None or line.stream == stream)
        ]


def seq_numbers(texts: Sequence[str]) -> list[int]:
    return [int(t.split()[1]) for t in texts if t.startswith("seq ")]


def pod_names(api: client.ApiClient, namespace: str, app: str) -> list[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return sorted(p.metadata.name for p in pods.items if p.metadata.deletion_timestamp is None)


@contextlib.asynccontextmanager
async def running(watcher: Any) -> Any:
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


# ``cockpit`` as a user runs it (the package has no __main__).
COCKPIT = [sys.executable, "-c", "import sys; from cockpit.cli import main; sys.exit(main())"]
