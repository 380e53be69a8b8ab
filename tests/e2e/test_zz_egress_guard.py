"""Runs last (see conftest): nothing the cluster ran during the suite tried to leave the machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DEV_CLUSTER, Cluster

pytestmark = pytest.mark.cluster


def test_egress_guard_blocked_nothing(cluster: Cluster) -> None:
    if not cluster.dev:
        pytest.skip(
            "egress guard belongs to the dev cluster; COCKPIT_TEST_KUBECONFIG is another cluster"
        )
    out = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "guard"], capture_output=True, text=True, check=True
    ).stdout
    guard = json.loads(out)
    assert guard["installed"] is True
    assert guard["blocked"] == 0, (
        "cluster traffic tried to leave the machine: see `dmesg | grep cockpit-egress-blocked`"
    )


def test_every_component_sits_behind_the_guard(cluster: Cluster) -> None:
    """The guard helps only if every host-side component is in its cgroup and it ends in REJECT."""
    if not cluster.dev:
        pytest.skip("egress guard belongs to the dev cluster")
    from pathlib import Path

    members = set(Path("/sys/fs/cgroup/unified/cockpit-dev/cgroup.procs").read_text().split())
    pid_files = sorted(Path("/var/lib/cockpit-dev/pids").glob("*.pid"))
    assert len(pid_files) >= 10
    for pid_file in pid_files:
        assert pid_file.read_text().split()[0] in members, f"{pid_file.stem} is outside the guard"
    rules = subprocess.run(
        ["iptables", "-S", "COCKPIT-EGRESS"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert rules[-1] == "-A COCKPIT-EGRESS -j REJECT --reject-with icmp-port-unreachable"
    output = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    assert "-m cgroup --path cockpit-dev -j COCKPIT-EGRESS" in output
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    assert "-s 10.251.0.0/24 -j COCKPIT-EGRESS" in forward
