"""`cockpit up --headless` with a sync rule on the real cluster: the rule's states come out as
SyncChanged JSON lines and a saved file lands in every replica of the remote service."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.e2e.sync.conftest import PAUSE, SITE_DIR, deploy, run_in

pytestmark = pytest.mark.cluster
COCKPIT = Path(sys.executable).parent / "cockpit"


def test_headless_session_syncs_into_the_remote_service(
    cluster: Cluster, namespace: str, site: list[str], tmp_path: Path
) -> None:
    # The service that runs locally must exist in the cluster too (its env is imported).
    deploy(cluster.api(), namespace, "api", {"name": "api", "image": PAUSE})
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "index.html").write_text("v1\n")
    (tmp_path / "cockpit.yaml").write_text(
        f"namespace: {namespace}\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, -c, 'import time; time.sleep(3600)']\n"
        "  site:\n"
        "    sync:\n"
        f"      - {{local: static, remote: {SITE_DIR}/www}}\n"
    )
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    proc = subprocess.Popen(
        [str(COCKPIT), "up", "api", "--headless"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    seen: list[dict[str, Any]] = []

    def wait_for(pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"cockpit exited {proc.returncode}: {err}") from None
                continue
            seen.append(ev)
            if pred(ev):
                return ev
        syncs = [e for e in seen if e["type"] == "SyncChanged"]
        raise AssertionError(f"not seen in {timeout} s; sync events: {syncs[-5:]}")

    name = f"site: static -> {SITE_DIR}/www"

    def sync_state(state: str) -> Any:
        return lambda e: e["type"] == "SyncChanged" and e["name"] == name and e["state"] == state

    try:
        first = wait_for(sync_state("in-sync"))
        assert (first["files"], first["paths"]) == (1, ["static"])
        (tmp_path / "static" / "index.html").write_text("v2\n")
        wait_for(sync_state("syncing"))
        done = wait_for(sync_state("in-sync"))
        assert done["last_sync"] > first["last_sync"] and done["duration"] > 0
        for pod in site:
            assert run_in(cluster.api(), namespace, pod, f"cat {SITE_DIR}/www/index.html") == "v2\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
