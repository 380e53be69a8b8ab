"""The env source's choices that need no cluster: which container, which references, which
field values a local run gets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cockpit.adapters.envsource import KubeEnvSource, _references, local_fields
from cockpit.errors import UsageError


def service(*targets: int | str) -> Any:
    ports = [SimpleNamespace(port=80, target_port=t) for t in targets]
    return SimpleNamespace(spec=SimpleNamespace(ports=ports))


SIDECAR = {"name": "proxy", "ports": [{"containerPort": 15001, "name": "envoy"}]}
APP = {"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]}


@pytest.mark.parametrize(
    ("targets", "wanted", "chosen"),
    [
        ((8080,), None, "app"),  # the container that serves the service's target port
        (("http",), None, "app"),  # a named target port
        ((9999,), None, "proxy"),  # none serves it: the first container
        ((8080,), "proxy", "proxy"),  # asked for by name
    ],
)
def test_the_container_that_serves_the_service(
    targets: tuple[int | str, ...], wanted: str | None, chosen: str
) -> None:
    picked = KubeEnvSource._container([SIDECAR, APP], wanted, service(*targets), "shop-api")
    assert picked["name"] == chosen


def test_an_unknown_container_names_the_ones_there_are() -> None:
    with pytest.raises(UsageError, match=r"no container 'db' \(it has proxy, app\)"):
        KubeEnvSource._container([SIDECAR, APP], "db", service(8080), "shop-api")


def test_only_referenced_config_maps_and_secrets_are_read() -> None:
    container = {
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
            {"name": "C", "value": "plain"},
        ],
        "envFrom": [{"configMapRef": {"name": "cm2"}}, {"secretRef": {"name": "s2"}}],
    }
    assert _references(container) == ({"cm1", "cm2"}, {"s1", "s2"})


def test_field_values_for_a_local_run() -> None:
    template = {
        "metadata": {"labels": {"app": "api"}, "annotations": {"team": "shop"}},
        "spec": {"serviceAccountName": "api-sa"},
    }
    fields = local_fields("api", "shop", template)
    assert fields["metadata.name"] == "api-local"
    assert fields["metadata.namespace"] == "shop"
    assert fields["status.podIP"] == "127.0.0.1"
    assert fields["spec.serviceAccountName"] == "api-sa"
    assert fields["metadata.labels['app']"] == "api"
    assert fields["metadata.annotations['team']"] == "shop"
