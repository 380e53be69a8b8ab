"""The *restricted* Pod Security Standard as a pure checker of a pod spec.

Kubernetes 1.20 has no PodSecurity admission, so cockpit checks the agent's pod spec itself.
Rules follow https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline
plus restricted, policy version "latest"); each violation is one line naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield f"{kind}[{c.get('name', '?')}]", c


def baseline_violations(
    spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
) -> list[str]:
    """Violations of the *baseline* level (the restricted level includes all of these)."""
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            out.append(f"spec.{host} must not be true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess must not be true")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"volume {v.get('name', '?')!r} must not be a hostPath")
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR_PREFIX) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"annotation {key} must be runtime/default or localhost/*")
    out += _selinux("spec.securityContext", psc)
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.seccompProfile.type must not be Unconfined")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')!r} is not in the safe set")
    for where, c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}.securityContext.privileged must not be true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}.securityContext.windowsOptions.hostProcess must not be true")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        for cap in sorted(added - BASELINE_CAPABILITIES):
            out.append(f"{where} must not add capability {cap}")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(f"{where} must not use hostPort {p['hostPort']}")
        out += _selinux(f"{where}.securityContext", sc)
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}.securityContext.procMount must be Default")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}.securityContext.seccompProfile.type must not be Unconfined")
    return out


def _selinux(where: str, sc: Mapping[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}.seLinuxOptions.type {opts['type']!r} is not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            out.append(f"{where}.seLinuxOptions.{key} must not be set")
    return out


def restricted_violations(
    spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
) -> list[str]:
    """Every way ``spec`` (a PodSpec as JSON) breaks the *restricted* level; [] = admitted."""
    out = baseline_violations(spec, annotations)
    psc = spec.get("securityContext") or {}
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        for kind in sorted(kinds - RESTRICTED_VOLUME_TYPES):
            if kind != "hostPath":  # already reported by baseline
                out.append(f"volume {v.get('name', '?')!r} has disallowed type {kind}")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    for where, c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"{where} must run as non-root (runAsNonRoot: true)")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}.securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where} needs seccompProfile RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}.securityContext.capabilities.drop must include ALL")
        for cap in sorted(set(caps.get("add") or []) - {"NET_BIND_SERVICE"}):
            if cap in BASELINE_CAPABILITIES:  # others already reported by baseline
                out.append(f"{where} may add only NET_BIND_SERVICE, not {cap}")
    return out


def hardening_violations(spec: Mapping[str, Any]) -> list[str]:
    """What cockpit asks of its own pods beyond *restricted*: a read-only root filesystem."""
    return [
        f"{where}.securityContext.readOnlyRootFilesystem must be true"
        for where, c in _containers(spec)
        if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True
    ]
