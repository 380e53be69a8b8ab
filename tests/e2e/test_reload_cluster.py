"""Hot reload inside a hybrid session on the real cluster: after an edit, the restarted local
api serves the new code and still reaches the cluster's store with the imported environment."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, Cluster
from tests.engine.test_reloader import free_port
from tests.test_cli import Headless

pytestmark = pytest.mark.cluster
HEALTH = 'self.send_text(HTTPStatus.OK, "ok")'


def chain(port: int) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        hops: list[dict[str, str]] = json.loads(resp.read())["chain"]
        return hops


def test_a_reloaded_local_api_keeps_the_cluster_environment(
    cluster: Cluster, shared_shop: str, tmp_path: Path
) -> None:
    source = (REPO / "examples" / "shop" / "app.py").read_text()
    assert HEALTH in source
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(source)
    port = free_port()
    (tmp_path / "cockpit.yaml").write_text(
        f"namespace: {shared_shop}\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, app.py]\n"
        "    cwd: app\n"
        f"    port: {port}\n"
        f"    env: {{SERVICE: api, PORT: '{port}', BIND: 127.0.0.1}}\n"
    )
    run = Headless(
        ["up", "api", "--headless"], tmp_path, {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    )
    try:
        run.until(lambda o: o["type"] == "ProcessChanged" and o["status"] == "ready", within=60)
        run.until(lambda o: o["type"] == "SyncChanged" and o["state"] == "watching")
        assert [hop["service"] for hop in chain(port)] == ["api", "store"]

        (app / "app.py").write_text(source.replace(HEALTH, HEALTH.replace('"ok"', '"ok v2"')))
        run.until(lambda o: o["type"] == "SyncChanged" and o["state"] == "in-sync", within=60)
        run.until(lambda o: o["type"] == "ProcessChanged" and o["restarts"] == 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.read() == b"ok v2"
        hops = chain(port)  # STORE_URL still points at the session's forward into the cluster
        assert [hop["service"] for hop in hops] == ["api", "store"]
        assert hops[0]["served_by"] == "local"
        assert hops[1]["served_by"] == "cluster" and hops[1]["pod"].startswith("store-")
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish(within=60) == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
