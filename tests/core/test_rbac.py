"""The one list of permissions cockpit needs, the rules that grant them, doctor's report."""

from __future__ import annotations

import pytest
import yaml

from cockpit.core.agent_spec import AGENT_RULES, USER_RULES
from cockpit.core.rbac import (
    NEEDED,
    AccessCheck,
    DoctorReport,
    Permission,
    RoleRule,
    missing_permissions_line,
    rbac_markdown,
    render_doctor,
    role_manifest,
    role_rules_yaml,
    rules_for,
)


def needed(verb: str, resource: str, group: str = "", name: str = "") -> bool:
    return any(
        (p.verb, p.resource, p.group, p.name) == (verb, resource, group, name) for p in NEEDED
    )


@pytest.mark.parametrize(
    ("verb", "resource", "group"),
    [
        *[(v, r, "") for r in ("pods", "services", "endpoints", "events", "configmaps", "secrets")
          for v in ("get", "list", "watch")],
        *[(v, "deployments", "apps") for v in ("get", "list", "watch")],
        ("get", "pods/log", ""),
        ("create", "pods/exec", ""),
        ("create", "pods/portforward", ""),
        ("patch", "services", ""),
        ("patch", "deployments", "apps"),
        ("create", "services", ""),
        ("delete", "services", ""),
        ("delete", "pods", ""),
        ("create", "serviceaccounts", ""),
        ("create", "roles", "rbac.authorization.k8s.io"),
        ("create", "rolebindings", "rbac.authorization.k8s.io"),
        ("create", "deployments", "apps"),
    ],
)  # fmt: skip
def test_everything_cockpit_does_is_in_the_list(verb: str, resource: str, group: str) -> None:
    assert needed(verb, resource, group)


def test_the_intercept_and_agent_rules_are_included() -> None:
    for rule in (*USER_RULES, *AGENT_RULES):
        for resource in rule.resources:
            for verb in rule.verbs:
                for name in rule.names or ("",):
                    assert needed(verb, resource, rule.api_group, name), (verb, resource, name)


def test_the_list_has_no_duplicates_and_every_entry_says_why() -> None:
    keys = [(p.group, p.resource, p.name, p.verb) for p in NEEDED]
    assert len(keys) == len(set(keys))
    assert all(p.feature for p in NEEDED)


def test_review_attributes_split_the_subresource() -> None:
    assert Permission("create", "pods/portforward").review_attributes("shop") == {
        "namespace": "shop",
        "verb": "create",
        "group": "",
        "resource": "pods",
        "subresource": "portforward",
    }
    named = Permission("get", "deployments", "apps", name="cockpit-agent")
    assert named.review_attributes("shop")["name"] == "cockpit-agent"
    assert "subresource" not in named.review_attributes("shop")


def test_rule_yaml_is_exactly_what_a_role_takes() -> None:
    rule = RoleRule("", "pods/portforward", ("create",))
    assert (
        rule.yaml() == '- apiGroups: [""]\n  resources: ["pods/portforward"]\n  verbs: ["create"]'
    )
    named = RoleRule("apps", "deployments", ("get", "delete"), name="cockpit-agent")
    assert yaml.safe_load(named.yaml()) == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["cockpit-agent"],
            "verbs": ["get", "delete"],
        }
    ]


def test_rules_for_merges_verbs_per_resource_in_kubectl_order() -> None:
    perms = [
        Permission("watch", "pods"),
        Permission("get", "pods"),
        Permission("create", "pods/exec"),
        Permission("list", "pods"),
    ]
    assert rules_for(perms) == [
        RoleRule("", "pods", ("get", "list", "watch")),
        RoleRule("", "pods/exec", ("create",)),
    ]


def test_the_generated_role_grants_every_needed_permission() -> None:
    manifest = yaml.safe_load(role_manifest("shop"))
    assert manifest["kind"] == "Role" and manifest["metadata"]["namespace"] == "shop"
    granted = set()
    for rule in manifest["rules"]:
        for name in rule.get("resourceNames", [""]):
            for verb in rule["verbs"]:
                granted.add((rule["apiGroups"][0], rule["resources"][0], name, verb))
    assert granted == {(p.group, p.resource, p.name, p.verb) for p in NEEDED}
    assert yaml.safe_load(role_rules_yaml()) == manifest["rules"]


def test_markdown_table_names_every_resource() -> None:
    table = rbac_markdown()
    assert table.splitlines()[0] == "| resource | verbs | needed for |"
    assert "| `pods/portforward` (core) | create | port-forwards and the agent tunnel" in table
    for perm in NEEDED:
        assert f"`{perm.resource}`" in table


def report(missing: list[Permission], *, exists: bool | None = True) -> DoctorReport:
    ok = [Permission("get", "pods"), Permission("list", "pods")]
    checks = [AccessCheck(p, True) for p in ok] + [AccessCheck(p, False) for p in missing]
    return DoctorReport(
        context="dev",
        server="https://127.0.0.1:6443",
        namespace="shop",
        version="v1.20.2",
        namespace_exists=exists,
        checks=tuple(checks),
        user="alice",
    )


def test_doctor_report_all_good() -> None:
    rep = report([])
    assert rep.ok and rep.missing == []
    lines = render_doctor(rep)
    assert (
        lines[0] == "ok       API server https://127.0.0.1:6443 (Kubernetes v1.20.2), context dev"
    )
    assert "ok       2 of 2 permissions in shop" in lines
    assert lines[-1] == "everything cockpit needs is in place"


def test_doctor_report_prints_the_rule_for_each_missing_permission() -> None:
    portforward = Permission("create", "pods/portforward", feature="port-forwards")
    rep = report([portforward, Permission("get", "pods/log", feature="pod logs")])
    assert not rep.ok
    text = "\n".join(render_doctor(rep))
    assert (
        "MISSING  create pods/portforward in shop - needed for port-forwards\n"
        '         - apiGroups: [""]\n'
        '           resources: ["pods/portforward"]\n'
        '           verbs: ["create"]\n'
    ) in text
    assert "2 permission(s) missing. A Role (and a RoleBinding to alice) in shop" in text
    assert text.endswith(
        '- apiGroups: [""]\n  resources: ["pods/portforward"]\n  verbs: ["create"]\n'
        '- apiGroups: [""]\n  resources: ["pods/log"]\n  verbs: ["get"]'
    )


def test_doctor_report_missing_namespace_is_not_ok() -> None:
    rep = report([], exists=False)
    assert not rep.ok
    assert "MISSING  namespace shop does not exist" in render_doctor(rep)
    unknown = report([], exists=None)
    assert unknown.ok
    assert any("not allowed to check" in line for line in render_doctor(unknown))


def test_missing_permissions_line_is_short() -> None:
    perms = [Permission("get", f"r{i}") for i in range(6)]
    assert missing_permissions_line(perms, "shop") == (
        "missing 6 permission(s) in shop: get r0, get r1, get r2, get r3 and 2 more"
    )
