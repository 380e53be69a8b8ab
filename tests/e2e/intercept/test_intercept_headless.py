"""`cockpit up api --headless --intercept global` on the real cluster, as a user runs it: the
intercept is on at start, a JSON command on stdin turns it off and on, SIGTERM gives the
Service back."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.e2e.intercept.conftest import Prober, service_specs, until_restored, up_headless

pytestmark = pytest.mark.cluster

LOCAL = "local/api-local"  # app.py run by cockpit up: served_by local, named by the engine


def _read_until(proc: subprocess.Popen[str], match: Any, within: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"cockpit ended (exit {proc.poll()})")
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if match(event):
            return dict(event)
    raise AssertionError("no such event in time")


async def test_headless_up_with_intercept_then_commands_on_stdin(
    cluster: Cluster, shop: str, prober: Prober, tmp_path: Path
) -> None:
    before = service_specs(cluster, shop)
    proc = await up_headless(cluster, shop, tmp_path)
    try:
        info = await asyncio.to_thread(
            _read_until, proc, lambda e: e.get("type") == "SessionInfo", 30
        )
        mine = {"baggage": f"cockpit-session={info['session_id']}"}
        await asyncio.to_thread(
            _read_until, proc,
            lambda e: e.get("type") == "ConnectionChanged" and e.get("name") == "agent"
            and e.get("state") == "connected", 90,
        )  # fmt: skip
        await prober.until(LOCAL, within=10)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"cmd": "intercept", "mode": "global", "on": False}) + "\n")
        proc.stdin.flush()
        result = await asyncio.to_thread(
            _read_until, proc, lambda e: e.get("type") == "CommandResult", 20
        )
        assert result["ok"] is True, result
        assert (await prober.who()) == "cluster"
        proc.stdin.write(json.dumps({"cmd": "intercept", "mode": "personal", "on": True}) + "\n")
        proc.stdin.flush()
        result = await asyncio.to_thread(
            _read_until, proc, lambda e: e.get("type") == "CommandResult", 20
        )
        assert result["ok"] is True, result
        assert (await prober.who(headers=mine)) == LOCAL
        assert (await prober.who()) == "cluster"  # no header: the original pods
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0
    await prober.until("cluster")
    await until_restored(cluster, shop, before)
