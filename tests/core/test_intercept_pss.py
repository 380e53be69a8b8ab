"""The restricted Pod Security Standard checker, and the agent's objects checked against it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cockpit.core import agent_spec
from cockpit.core.agent_spec import AGENT_RULES, USER_RULES, AgentSettings
from cockpit.core.intercept import AGENT_NAME, AGENT_POD_LABELS
from cockpit.core.pss import hardening_violations, restricted_violations


def agent_pod() -> dict[str, Any]:
    return agent_spec.pod_spec(AgentSettings())


def test_the_agent_pod_is_admitted_by_the_restricted_standard() -> None:
    assert restricted_violations(agent_pod()) == []
    assert hardening_violations(agent_pod()) == []


def test_the_agent_deployment_template_is_the_checked_spec() -> None:
    dep = agent_spec.deployment("shop", AgentSettings())
    assert dep["spec"]["template"]["spec"] == agent_pod()
    assert dep["spec"]["template"]["metadata"]["labels"] == dict(AGENT_POD_LABELS)
    assert dep["spec"]["selector"]["matchLabels"] == dict(AGENT_POD_LABELS)


def _break(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(agent_pod())
    node: Any = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


C = "containers.0.securityContext"


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("hostNetwork", True, "hostNetwork"),
        ("hostPID", True, "hostPID"),
        ("hostIPC", True, "hostIPC"),
        (f"{C}.privileged", True, "privileged"),
        (f"{C}.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
        (f"{C}.allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        (f"{C}.runAsNonRoot", False, "non-root"),
        (f"{C}.runAsUser", 0, "runAsUser must not be 0"),
        ("securityContext.runAsUser", 0, "runAsUser must not be 0"),
        (f"{C}.capabilities", {"drop": ["NET_RAW"]}, "drop must include ALL"),
        (f"{C}.capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}, "only NET_BIND_SERVICE"),
        (f"{C}.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "capability SYS_ADMIN"),
        (f"{C}.seccompProfile", {"type": "Unconfined"}, "Unconfined"),
        (f"{C}.procMount", "Unmasked", "procMount"),
        (f"{C}.seLinuxOptions", {"type": "spc_t"}, "seLinuxOptions.type"),
        (f"{C}.seLinuxOptions", {"user": "root"}, "seLinuxOptions.user"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "kernel.msgmax"),
        ("containers.0.ports", [{"containerPort": 2222, "hostPort": 2222}], "hostPort"),
        ("volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
        ("volumes", [{"name": "n", "nfs": {"server": "x", "path": "/"}}], "disallowed type nfs"),
        (
            "securityContext.windowsOptions",
            {"hostProcess": True},
            "hostProcess",
        ),
    ],
)
def test_each_restricted_rule_catches_its_breach(path: str, value: Any, needle: str) -> None:
    found = restricted_violations(_break(path, value))
    assert any(needle in v for v in found), found


def test_seccomp_must_be_set_at_pod_or_container_level() -> None:
    spec = _break(f"{C}.seccompProfile", None)
    assert restricted_violations(spec) == []  # pod-level RuntimeDefault covers it
    spec["securityContext"].pop("seccompProfile")
    assert restricted_violations(spec) == [
        "containers[agent] needs seccompProfile RuntimeDefault or Localhost"
    ]


def test_non_root_may_come_from_the_pod_level() -> None:
    spec = _break(f"{C}.runAsNonRoot", None)
    assert restricted_violations(spec) == []
    spec["securityContext"].pop("runAsNonRoot")
    assert restricted_violations(spec) == [
        "containers[agent] must run as non-root (runAsNonRoot: true)"
    ]


def test_init_containers_are_checked_too() -> None:
    spec = agent_pod()
    spec["initContainers"] = [{"name": "init", "image": "x"}]
    found = restricted_violations(spec)
    assert "initContainers[init].securityContext.allowPrivilegeEscalation must be false" in found


def test_apparmor_annotation() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/agent"
    assert restricted_violations(agent_pod(), {key: "runtime/default"}) == []
    assert restricted_violations(agent_pod(), {key: "unconfined"}) != []


def test_read_only_root_filesystem_is_required_by_hardening() -> None:
    spec = _break(f"{C}.readOnlyRootFilesystem", None)
    assert restricted_violations(spec) == []
    assert hardening_violations(spec) == [
        "containers[agent].securityContext.readOnlyRootFilesystem must be true"
    ]


def test_settings_travel_as_environment_and_back() -> None:
    settings = AgentSettings(grace=2.5, idle_ttl=30, keepalive=0.5, keepalive_count=2, drain=1)
    env = {e["name"]: e.get("value") for e in agent_spec.pod_spec(settings)["containers"][0]["env"]}
    assert env["COCKPIT_AGENT_GRACE"] == "2.5"
    assert AgentSettings.from_env({k: v for k, v in env.items() if v is not None}) == settings
    assert AgentSettings.from_env({}) == AgentSettings()


def test_rbac_is_least_privilege() -> None:
    role = agent_spec.role("shop")
    verbs = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert all(v not in ("*", "create", "update", "escalate", "bind") for _, _, v in verbs)
    assert all(r not in ("*", "pods", "secrets", "pods/exec") for _, r, _ in verbs)
    named = {tuple(r["resources"]): r.get("resourceNames") for r in role["rules"]}
    assert named[("deployments",)] == [AGENT_NAME]
    assert named[("configmaps",)] == [AGENT_NAME]
    binding = agent_spec.role_binding("shop")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": "shop"}
    ]


def test_the_rbac_table_lists_every_rule() -> None:
    table = agent_spec.rbac_table()
    assert len([line for line in table.splitlines() if line.startswith("- ")]) == len(
        AGENT_RULES
    ) + len(USER_RULES)
    assert "configmaps (core) named cockpit-agent: get, patch" in table


@pytest.mark.parametrize(
    ("rules", "ask", "allowed"),
    [
        ([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
         ("get", "", "services", ""), True),
        ([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
         ("patch", "", "services", ""), False),
        ([{"apiGroups": ["apps"], "resources": ["services"], "verbs": ["get"]}],
         ("get", "", "services", ""), False),
        ([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
         ("create", "", "pods/portforward", ""), True),
        ([{"apiGroups": [""], "resources": ["pods/*"], "verbs": ["create"]}],
         ("create", "", "pods/portforward", ""), True),
        ([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
         ("create", "", "pods/portforward", ""), False),
        ([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
           "resourceNames": ["cockpit-agent"]}],
         ("get", "", "configmaps", "cockpit-agent"), True),
        ([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
           "resourceNames": ["cockpit-agent"]}],
         ("get", "", "configmaps", ""), False),
        ([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
           "resourceNames": ["other"]}],
         ("get", "", "configmaps", "cockpit-agent"), False),
        ([], ("get", "", "services", ""), False),
    ],
)  # fmt: skip
def test_rules_allow(
    rules: list[dict[str, Any]], ask: tuple[str, str, str, str], allowed: bool
) -> None:
    assert agent_spec.rules_allow(rules, *ask) is allowed


def test_docs_show_the_rbac_table_the_code_grants() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
    assert agent_spec.rbac_table() in doc.read_text()
