"""`cockpit up --headless` with a sync rule on the real cluster: the rule's states come out as
SyncChanged JSON lines and a saved file lands in every replica of the remote service."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.e2e.cluster.test_cluster_restart_headless import Headless
from tests.e2e.sync.conftest import PAUSE, SITE_DIR, deploy, run_in

pytestmark = pytest.mark.cluster


def test_headless_session_syncs_into_the_remote_service(
    cluster: Cluster, namespace: str, site: list[str], tmp_path: Path
) -> None:
    # The service that runs locally must exist in the cluster too (its env is imported).
    deploy(cluster.api(), namespace, "api", {"name": "api", "image": PAUSE})
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "index.html").write_text("v1\n")
    session = Headless(
        namespace,
        cluster.kubeconfig,
        tmp_path,
        services=(
            "  api:\n"
            f"    command: [{sys.executable!r}, -c, 'import time; time.sleep(3600)']\n"
            "  site:\n"
            "    sync:\n"
            f"      - {{local: static, remote: {SITE_DIR}/www}}\n"
        ),
    )
    name = f"site: static -> {SITE_DIR}/www"

    def sync_state(state: str) -> Any:
        return lambda e: e["type"] == "SyncChanged" and e["name"] == name and e["state"] == state

    try:
        first = session.wait_for(sync_state("in-sync"), 60)
        assert (first["files"], first["paths"]) == (1, ["static"])
        (tmp_path / "static" / "index.html").write_text("v2\n")
        session.seen.clear()  # only what follows the save
        session.wait_for(sync_state("syncing"), 60)
        done = session.wait_for(sync_state("in-sync"), 60)
        assert done["last_sync"] > first["last_sync"] and done["duration"] > 0
        for pod in site:
            assert run_in(cluster.api(), namespace, pod, f"cat {SITE_DIR}/www/index.html") == "v2\n"
    finally:
        session.quit()
    assert session.proc.returncode == 0, session.proc.stderr.read()  # type: ignore[union-attr]
