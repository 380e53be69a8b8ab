"""The agent's outbound destination check: Services of its namespace only, decided from data."""

from __future__ import annotations

import pytest

from cockpit.core.outbound import (
    Destination,
    Refused,
    ServiceEntry,
    check_destination,
    service_entry,
    service_name,
)

SERVICES = [
    ServiceEntry("store", "10.252.0.10", frozenset({8080})),
    ServiceEntry("db", "", frozenset({5432})),  # headless
    ServiceEntry("mail", "", frozenset({25}), external=True),
]


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("store", "store"),
        ("STORE.", "store"),
        ("store.shop", "store"),
        ("store.shop.svc", "store"),
        ("store.shop.svc.cluster.local", "store"),
        ("store.shop.svc.cluster.local.", "store"),
        ("store.other", None),
        ("store.other.svc.cluster.local", None),
        ("example.com", None),
        ("a.b.shop", None),
        ("shop", "shop"),
        ("", None),
    ],
)
def test_service_name_reads_the_names_of_the_namespace_only(host: str, name: str | None) -> None:
    assert service_name(host, "shop") == name


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("store", 8080, Destination("store", "10.252.0.10", 8080)),
        ("store.shop.svc", 8080, Destination("store", "10.252.0.10", 8080)),
        ("10.252.0.10", 8080, Destination("store", "10.252.0.10", 8080)),
        ("db", 5432, Destination("db", "db.shop.svc.cluster.local", 5432)),
    ],
)
def test_a_service_port_of_the_namespace_is_allowed(
    host: str, port: int, expected: Destination
) -> None:
    assert check_destination(host, port, "shop", SERVICES) == expected


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [
        ("127.0.0.1", 22, "not the ClusterIP of a Service"),
        ("10.251.0.7", 8080, "not the ClusterIP of a Service"),  # a pod IP
        ("93.184.216.34", 80, "not the ClusterIP of a Service"),
        ("::1", 22, "not the ClusterIP of a Service"),
        ("localhost", 22, "no Service 'localhost'"),
        ("example.com", 443, "'example.com' names no Service"),
        ("kubernetes.default", 443, "names no Service"),
        ("nobody", 80, "no Service 'nobody' in namespace 'shop'"),
        ("store", 22, r"has no TCP port 22 \(8080\)"),
        ("10.252.0.10", 22, "has no TCP port 22"),
        ("mail", 25, "is an ExternalName"),
    ],
)
def test_anything_else_is_refused_with_a_reason(host: str, port: int, reason: str) -> None:
    with pytest.raises(Refused, match=reason) as info:
        check_destination(host, port, "shop", SERVICES)
    assert "\n" not in str(info.value)


def test_service_entry_reads_the_json_of_a_service() -> None:
    svc = {
        "metadata": {"name": "web"},
        "spec": {
            "clusterIP": "None",
            "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        },
    }
    assert service_entry(svc) == ServiceEntry("web", "", frozenset({8080}))
    external = {"metadata": {"name": "x"}, "spec": {"type": "ExternalName"}}
    assert service_entry(external).external
