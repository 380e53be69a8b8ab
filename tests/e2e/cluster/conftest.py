"""Fixtures for the cluster-adapter tests on the real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cockpit.adapters.kube import Kube
from tests.conftest import Cluster
from tests.e2e.cluster.cluster_env import Relay, api_target, kubeconfig_copy


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[Kube]:
    kube = Kube.load(cluster.kubeconfig)
    yield kube
    kube.close()


@pytest.fixture
async def relay(cluster: Cluster) -> AsyncIterator[Relay]:
    """A cuttable relay in front of the API server."""
    relay = Relay(api_target(cluster.kubeconfig))
    await relay.start()
    yield relay
    await relay.close()


@pytest.fixture
def relay_kubeconfig(cluster: Cluster, relay: Relay, tmp_path: Path) -> Path:
    """The admin kubeconfig, pointed at the relay (same CA and client certificate)."""
    return kubeconfig_copy(
        cluster.kubeconfig, tmp_path / "relay.kubeconfig", server=f"https://127.0.0.1:{relay.port}"
    )
