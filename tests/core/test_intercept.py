"""Intercept core: annotation format, patches (applied and round-tripped), routing decisions,
leases (grace and idle clocks)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.intercept import (
    AGENT_POD_LABELS,
    ANNOTATION,
    Claim,
    HeaderMatch,
    InterceptRecord,
    Leases,
    PortRecord,
    RouteTable,
    allocate_agent_ports,
    check_interceptable,
    intercept_patch,
    intercept_record,
    is_shadow_of,
    record_of,
    restore_patch,
    shadow_name,
    shadow_service,
    sniff_http1,
)
from cockpit.errors import InterceptError


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (add, replace, remove, test) as the API server applies it: all or nothing."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node: Any = out
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "replace":
            _ = node[key]  # replace requires the target to exist
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            node[key] = copy.deepcopy(op["value"])
    return out


def svc(
    name: str = "store",
    selector: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "resourceVersion": "41",
            "labels": {"app": name},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.252.0.9",
            "selector": {"app": name} if selector is None else selector,
            "ports": ports
            if ports is not None
            else [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}],
            **spec,
        },
    }


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("service", "needle"),
    [
        (svc(selector={}), "has no selector"),
        (svc(clusterIP="None"), "headless"),
        (svc(type="ExternalName"), "ExternalName"),
        (svc(ports=[]), "no ports"),
        (svc(ports=[{"port": 53, "protocol": "UDP"}]), "UDP port (53)"),
        (svc(name="store-cockpit-origin"), "shadow service"),
        (svc(name="x" * 50), "63-character"),
        (svc(selector=dict(AGENT_POD_LABELS)), "cockpit down"),
    ],
)
def test_services_cockpit_cannot_intercept_get_one_clear_line(
    service: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InterceptError) as err:
        check_interceptable(service)
    assert needle in err.value.one_line()
    assert "\n" not in err.value.one_line()


def test_a_service_redirected_by_another_tool_is_refused() -> None:
    s = svc()
    s["metadata"]["annotations"] = {"telepresence.getambassador.io/manager": "x"}
    with pytest.raises(InterceptError, match="another tool"):
        check_interceptable(s)


def test_a_service_already_intercepted_by_cockpit_passes_so_sessions_can_share_it() -> None:
    s = svc()
    record = intercept_record(s, {8080: 20000})
    check_interceptable(apply_patch(s, intercept_patch(s, record)))


def test_an_unreadable_annotation_is_refused_with_a_hint() -> None:
    s = svc()
    s["metadata"]["annotations"] = {ANNOTATION: "{not json"}
    with pytest.raises(InterceptError, match="unreadable") as err:
        check_interceptable(s)
    assert err.value.hint


def test_a_plain_service_passes() -> None:
    check_interceptable(svc())


# ---------------------------------------------------------------------------------- patches


def test_intercept_points_the_service_at_the_agent_and_records_the_original() -> None:
    s = svc(
        ports=[
            {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"},
            {"name": "admin", "port": 9090, "protocol": "TCP"},
        ]
    )
    record = intercept_record(s, {8080: 20000, 9090: 20001})
    patched = apply_patch(s, intercept_patch(s, record))
    assert patched["spec"]["selector"] == dict(AGENT_POD_LABELS)
    assert [p["targetPort"] for p in patched["spec"]["ports"]] == [20000, 20001]
    back = record_of(patched)
    assert back == record
    assert back.selector == {"app": "store"}
    assert [p.target_port for p in back.ports] == ["http", 9090]  # default targetPort = port


def test_restore_gives_back_exactly_the_original_spec_and_annotations() -> None:
    s = svc(
        ports=[
            {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"},
            {"name": "grpc", "port": 9000, "protocol": "TCP", "targetPort": 9001},
        ]
    )
    s["metadata"]["annotations"] = {"team": "shop"}
    record = intercept_record(s, {8080: 20000, 9000: 20001})
    patched = apply_patch(s, intercept_patch(s, record))
    assert patched["metadata"]["annotations"]["team"] == "shop"
    restored = apply_patch(patched, restore_patch(patched) or [])
    assert restored == s


def test_restore_without_prior_annotations_leaves_an_empty_map() -> None:
    s = svc()
    patched = apply_patch(s, intercept_patch(s, intercept_record(s, {8080: 20000})))
    restored = apply_patch(patched, restore_patch(patched) or [])
    assert restored["spec"] == s["spec"]
    assert restored["metadata"].get("annotations", {}) == {}


def test_intercept_patch_is_guarded_by_the_resource_version() -> None:
    s = svc()
    ops = intercept_patch(s, intercept_record(s, {8080: 20000}))
    changed = copy.deepcopy(s)
    changed["metadata"]["resourceVersion"] = "42"
    with pytest.raises(ValueError, match="test failed"):
        apply_patch(changed, ops)


def test_a_second_restore_fails_instead_of_clobbering() -> None:
    s = svc()
    patched = apply_patch(s, intercept_patch(s, intercept_record(s, {8080: 20000})))
    ops = restore_patch(patched)
    assert ops is not None
    restored = apply_patch(patched, ops)
    with pytest.raises(KeyError):
        apply_patch(restored, ops)
    assert restore_patch(restored) is None


def test_a_port_added_while_intercepted_keeps_its_target() -> None:
    s = svc()
    patched = apply_patch(s, intercept_patch(s, intercept_record(s, {8080: 20000})))
    patched["spec"]["ports"].append(
        {"name": "new", "port": 7000, "protocol": "TCP", "targetPort": 7}
    )
    restored = apply_patch(patched, restore_patch(patched) or [])
    assert [p["targetPort"] for p in restored["spec"]["ports"]] == ["http", 7]


def test_missing_agent_port_is_an_error() -> None:
    with pytest.raises(InterceptError, match="no agent port for port 8080"):
        intercept_record(svc(), {})


def test_shadow_service_selects_the_original_pods_on_the_original_ports() -> None:
    s = svc()
    shadow = shadow_service(s, intercept_record(s, {8080: 20000}))
    assert shadow["metadata"]["name"] == "store-cockpit-origin"
    assert shadow["metadata"]["namespace"] == "shop"
    assert shadow["spec"]["selector"] == {"app": "store"}
    assert shadow["spec"]["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}
    ]
    assert is_shadow_of(shadow, "store")
    assert not is_shadow_of(shadow, "api")
    assert not is_shadow_of(svc(), "store")


def test_shadow_name() -> None:
    assert shadow_name("api") == "api-cockpit-origin"
    assert len(shadow_name("a" * 48)) == 63
    with pytest.raises(InterceptError):
        shadow_name("a" * 49)


@given(
    ports=st.lists(st.integers(1, 65535), unique=True, max_size=20),
    used=st.sets(st.integers(20000, 20040), max_size=30),
)
def test_allocated_agent_ports_are_distinct_free_and_in_range(
    ports: list[int], used: set[int]
) -> None:
    got = allocate_agent_ports(ports, used)
    assert set(got) == set(ports)
    assert not set(got.values()) & used
    assert len(set(got.values())) == len(ports)
    assert all(20000 <= p <= 20999 for p in got.values())


def test_agent_port_exhaustion_is_an_error() -> None:
    with pytest.raises(InterceptError, match="no free port"):
        allocate_agent_ports([1, 2], [20000], first=20000, last=20001)


@given(
    selector=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9./-]{0,20}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{0,10}", fullmatch=True),
        min_size=1,
        max_size=4,
    ),
    target=st.one_of(st.integers(1, 65535), st.from_regex(r"[a-z]{1,15}", fullmatch=True)),
)
def test_annotation_round_trips(selector: dict[str, str], target: int | str) -> None:
    record = InterceptRecord(
        selector, (PortRecord(80, "TCP", target, 20000, "web"),), "x-cockpit-origin"
    )
    text = record.to_annotation()
    assert json.loads(text)["v"] == 1
    assert InterceptRecord.from_annotation(text) == record


@pytest.mark.parametrize(
    "text",
    ['{"v": 2, "selector": {}, "ports": [], "shadow": "x"}', "[]", '{"v": 1}',
     '{"v":1,"selector":{"a":1},"ports":[],"shadow":"x"}',
     '{"v":1,"selector":{},"ports":[{"port":1,"targetPort":true,"agentPort":2}],"shadow":"x"}'],
)  # fmt: skip
def test_malformed_annotations_are_refused(text: str) -> None:
    with pytest.raises(InterceptError, match="unreadable"):
        InterceptRecord.from_annotation(text, "api")


# ---------------------------------------------------------------------------------- routing

ME = HeaderMatch.for_session("me")
YOU = HeaderMatch.for_session("you")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"baggage", b"cockpit-session=me")], True),
        ([(b"Baggage", b"user=1, cockpit-session=me;ttl=5")], True),
        ([(b"baggage", b"user=1"), (b"baggage", b"cockpit-session=me")], True),
        ([(b"baggage", b"cockpit-session=mex")], False),
        ([(b"baggage", b"cockpit-session=you")], False),
        ([(b"x-baggage", b"cockpit-session=me")], False),
        ([], False),
    ],
)
def test_header_match_follows_list_and_baggage_member_syntax(
    headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert ME.matches(headers) is expected


def test_custom_header_and_template() -> None:
    m = HeaderMatch.for_session("s1", header="X-Dev", template="{session}")
    assert m == HeaderMatch("x-dev", "s1")
    assert m.matches([(b"x-dev", b"s1")])


def test_requests_go_to_the_matching_personal_session_and_the_rest_to_the_origin() -> None:
    table = RouteTable()
    table.claim("api", Claim("me", "personal", ME))
    table.claim("api", Claim("you", "personal", YOU))
    assert table.route_request("api", [(b"baggage", b"cockpit-session=me")]) == "me"
    assert table.route_request("api", [(b"baggage", b"cockpit-session=you")]) == "you"
    assert table.route_request("api", [(b"host", b"api")]) is None
    assert table.route_request("store", [(b"baggage", b"cockpit-session=me")]) is None


def test_global_claim_takes_every_request() -> None:
    table = RouteTable()
    table.claim("api", Claim("me", "global"))
    assert table.global_owner("api") == "me"
    assert table.route_request("api", []) == "me"


@pytest.mark.parametrize(
    ("first", "second", "needle"),
    [
        (Claim("me", "global"), Claim("you", "global"), "global intercept of session me"),
        (Claim("me", "global"), Claim("you", "personal", YOU), "would overlap"),
        (Claim("me", "personal", ME), Claim("you", "global"), "personal intercept of session me"),
        (Claim("me", "personal", ME), Claim("you", "personal", ME), "baggage: cockpit-session=me"),
    ],
)
def test_overlapping_claims_are_refused_and_change_nothing(
    first: Claim, second: Claim, needle: str
) -> None:
    table = RouteTable()
    table.claim("api", first)
    before = table.snapshot()
    with pytest.raises(InterceptError, match=needle):
        table.claim("api", second)
    assert table.snapshot() == before


def test_a_session_switches_its_own_mode_freely() -> None:
    table = RouteTable()
    table.claim("api", Claim("me", "personal", ME))
    table.claim("api", Claim("me", "global"))
    assert table.snapshot() == {"api": [{"session": "me", "mode": "global"}]}
    assert table.release("api", "me") == Claim("me", "global")
    assert table.snapshot() == {}


def test_personal_claim_needs_a_matcher() -> None:
    with pytest.raises(InterceptError, match="header"):
        RouteTable().claim("api", Claim("me", "personal"))


def test_releasing_a_session_drops_all_its_claims_only() -> None:
    table = RouteTable()
    table.claim("api", Claim("me", "personal", ME))
    table.claim("api", Claim("you", "personal", YOU))
    table.claim("store", Claim("me", "global"))
    assert table.release_session("me") == ["api", "store"]
    assert table.route_request("store", []) is None
    assert table.route_request("api", [(b"baggage", b"cockpit-session=you")]) == "you"


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"POST /echo HTTP/1.1", True),
        (b"P", None),
        (b"GE", None),
        (b"PRI * HTTP/2.0\r\n", False),
        (b"CONNECT x:1 HTTP/1.1", False),
        (b"\x16\x03\x01", False),
        (b"", None),
    ],
)
def test_sniff_http1(first: bytes, expected: bool | None) -> None:
    assert sniff_http1(first) is expected


# ---------------------------------------------------------------------------------- leases


def test_a_dropped_session_releases_its_services_after_the_grace_period() -> None:
    leases = Leases()
    leases.connect("me")
    leases.hold("api", "me")
    leases.disconnect("me", now=100.0)
    assert leases.expire(now=104.0, grace=5.0) == ([], [])
    assert leases.expire(now=105.0, grace=5.0) == (["me"], ["api"])
    leases.forget("api", now=105.0)
    assert leases.idle_for(now=110.0) == 5.0


def test_a_session_back_within_grace_keeps_its_services() -> None:
    leases = Leases()
    leases.connect("me")
    leases.hold("api", "me")
    leases.disconnect("me", now=100.0)
    leases.connect("me")
    assert leases.expire(now=1000.0, grace=5.0) == ([], [])
    assert leases.live_holders("api") == {"me"}


def test_a_service_held_by_another_live_session_is_not_restored() -> None:
    leases = Leases()
    for s in ("me", "you"):
        leases.connect(s)
        leases.hold("api", s)
    leases.disconnect("me", now=0.0)
    assert leases.expire(now=10.0, grace=1.0) == (["me"], [])
    assert leases.live_holders("api") == {"you"}
    assert leases.drop("api", "you", now=11.0) is True  # last holder: restore now


def test_services_found_at_agent_start_are_restored_unless_claimed_within_grace() -> None:
    leases = Leases()
    leases.adopt("api", now=0.0)
    leases.adopt("web", now=0.0)
    leases.connect("me")
    leases.hold("web", "me")
    assert leases.expire(now=2.0, grace=2.0) == ([], ["api"])
    assert leases.idle_for(now=2.0) == 0.0


def test_idle_clock_runs_only_with_no_session_and_no_service() -> None:
    leases = Leases()
    assert leases.idle_for(now=10.0) == 0.0  # starts counting now
    assert leases.idle_for(now=15.0) == 5.0
    leases.connect("me")
    assert leases.idle_for(now=16.0) == 0.0
    leases.disconnect("me", now=20.0)  # held nothing: no grace needed
    assert leases.gone_since == {}
    assert leases.idle_for(now=23.0) == 3.0
