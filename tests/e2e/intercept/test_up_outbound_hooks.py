"""`cockpit up api --headless --intercept global` with intercept hooks, as a user runs it: the
cluster's web calls the local api, whose call to store (its imported env: a 127.0.0.x forward)
goes through the agent's tunnel; toggling the intercept runs on_intercept_on/off."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.e2e.intercept.conftest import Prober, up_headless

pytestmark = pytest.mark.cluster


class Events:
    """cockpit's JSON lines, read on a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[dict[str, Any]] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._new:
                self.seen.append(event)
                self._new.notify_all()

    def _wait(self, match: Callable[[dict[str, Any]], bool], start: int, within: float) -> Any:
        deadline = time.monotonic() + within
        with self._new:
            while True:
                for event in self.seen[start:]:
                    if match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"no such event after {within:g} s")
                self._new.wait(min(left, 0.5))

    async def wait(
        self, match: Callable[[dict[str, Any]], bool], within: float = 30.0, start: int = 0
    ) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self._wait, match, start, within))


async def test_up_routes_outbound_through_the_tunnel_and_runs_the_intercept_hooks(
    cluster: Cluster, shop: str, prober: Prober, tmp_path: Path
) -> None:
    hook_log = tmp_path / "hooks.log"
    hooks = (
        f"      on_intercept_on: ['echo on $COCKPIT_SESSION >> {hook_log}']\n"
        f"      on_intercept_off: ['echo off >> {hook_log}']\n"
    )
    proc = await up_headless(cluster, shop, tmp_path, api_hooks=hooks)
    events = Events(proc)
    try:
        info = await events.wait(lambda e: e.get("type") == "SessionInfo")
        await events.wait(
            lambda e: (
                e.get("type") == "ConnectionChanged"
                and e.get("name") == "agent"
                and e.get("state") == "connected"
            ),
            within=90,
        )
        await prober.until("local/api-local", within=10)
        answer = await prober.call("/fetch", {"url": "http://web:8080/"})
        assert answer["status"] == 200, answer["body"]
        chain = json.loads(answer["body"])["chain"]
        assert [(h["service"], h["served_by"]) for h in chain] == [
            ("web", "cluster"),
            ("api", "local"),
            ("store", "cluster"),
        ]
        store = await events.wait(
            lambda e: (
                e.get("type") == "ForwardChanged"
                and e.get("name") == "store:8080"
                and e.get("route") == "tunnel"
                and e.get("tunnel_bytes_out", 0) > 0
            )
        )
        assert store["remote"] == f"store.{shop}.svc:8080"
        assert store["local"].startswith("127.0.0.")
        await events.wait(lambda e: "on_intercept_on" in json.dumps(e))  # the hook ran
        assert proc.stdin is not None
        for on in (False, True):
            mark = len(events.seen)
            command = {"cmd": "intercept", "mode": "global", "on": on}
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
            result = await events.wait(lambda e: e.get("type") == "CommandResult", start=mark)
            assert result["ok"] is True, result
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
    assert proc.returncode == 0
    session = info["session_id"]
    assert hook_log.read_text().splitlines() == [f"on {session}", "off", f"on {session}", "off"]
