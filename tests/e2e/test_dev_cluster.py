"""The dev cluster script as a user meets it: idempotent up, status, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEV_CLUSTER, Cluster

pytestmark = pytest.mark.cluster


def dev_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEV_CLUSTER), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def dev(cluster: Cluster) -> Cluster:
    if not cluster.dev:
        pytest.skip("COCKPIT_TEST_KUBECONFIG points at another cluster; dev-cluster not in use")
    return cluster


def test_second_up_is_a_no_op(dev: Cluster) -> None:
    proc = dev_cluster("up")
    assert proc.returncode == 0
    assert "already up" in proc.stderr
    assert proc.stdout.strip() == str(dev.kubeconfig)


def test_status_lists_every_component_and_ready_node(dev: Cluster) -> None:
    proc = dev_cluster("status")
    assert proc.returncode == 0
    for name in ("etcd", "containerd", "kube-apiserver", "kubelet", "kube-proxy", "dnsmasq"):
        assert any(
            line.startswith(name) and "running pid" in line for line in proc.stdout.splitlines()
        ), name
    assert "node                       Ready" in proc.stdout
    assert "egress guard               installed" in proc.stdout


def test_kubeconfig_prints_the_admin_kubeconfig(dev: Cluster) -> None:
    assert dev_cluster("kubeconfig").stdout.strip() == str(dev.kubeconfig)


def test_unknown_subcommand_is_one_clear_line(dev: Cluster) -> None:
    proc = dev_cluster("upp")
    assert proc.returncode != 0
    assert "invalid choice: 'upp'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_up_with_a_port_taken_fails_with_one_line_and_starts_nothing(
    dev: Cluster, tmp_path: Path
) -> None:
    """A second instance (own state dir) while ours holds 127.0.0.1:6443 refuses cleanly."""
    state = tmp_path / "state"
    env = dict(os.environ, COCKPIT_CLUSTER_STATE=str(state))
    proc = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "up"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dev-cluster: error: port 127.0.0.1:6443"), last
    assert "already in use" in last
    assert "Traceback" not in proc.stderr
    assert not (state / "pids").exists()
    assert dev_cluster("status").returncode == 0  # ours is untouched
