"""What the env import reads from the cluster: the Deployment behind a service, its container
spec, and the ConfigMaps and Secrets it refers to; and the private file a .env goes into.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cockpit.adapters.servicecatalog import map_api_error
from cockpit.errors import CockpitError, NotFoundError, UsageError


@dataclass(frozen=True, slots=True)
class EnvInputs:
    """Everything ``cockpit.core.envimport.import_env`` needs, read from the cluster."""

    container: Mapping[str, Any]  # the container spec as the API returns it (camelCase JSON)
    config_maps: Mapping[str, Mapping[str, str]] = field(repr=False)  # only referenced ones
    secrets: Mapping[str, Mapping[str, str]] = field(repr=False)  # decoded; never in a repr
    fields: Mapping[str, str] = field(default_factory=dict)  # fieldRef path -> local value
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per container
    what: str = ""  # "container 'api' of deployment 'api'"


class EnvSource(Protocol):
    async def read(
        self, namespace: str, service: str, *, container: str | None = None
    ) -> EnvInputs:
        """The inputs for ``service``'s Deployment; NotFoundError when the service or its
        Deployment does not exist, UsageError for an unknown ``container``."""
        ...


def local_fields(deployment: str, namespace: str, template: Mapping[str, Any]) -> dict[str, str]:
    """fieldRef values for a local run of the Deployment: its own names and labels, and
    loopback for the pod and host IPs (what the local process can actually bind)."""
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    fields = {
        "metadata.name": f"{deployment}-local",
        "metadata.namespace": namespace,
        "spec.nodeName": socket.gethostname(),
        "spec.serviceAccountName": str(spec.get("serviceAccountName") or "default"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    for kind in ("labels", "annotations"):
        for key, value in (meta.get(kind) or {}).items():
            fields[f"metadata.{kind}['{key}']"] = str(value)
    return fields


def _serves(container: Mapping[str, Any], target: int | str) -> bool:
    for port in container.get("ports") or ():
        if target in (port.get("containerPort"), port.get("name")):
            return True
    return False


def _references(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The ConfigMap and Secret names the container's env and envFrom refer to."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for item in container.get("env") or ():
        ref = item.get("valueFrom") or {}
        if "configMapKeyRef" in ref:
            config_maps.add(str(ref["configMapKeyRef"].get("name", "")))
        if "secretKeyRef" in ref:
            secrets.add(str(ref["secretKeyRef"].get("name", "")))
    for item in container.get("envFrom") or ():
        if "configMapRef" in item:
            config_maps.add(str(item["configMapRef"].get("name", "")))
        if "secretRef" in item:
            secrets.add(str(item["secretRef"].get("name", "")))
    return config_maps, secrets


def _decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue  # binary data cannot be an environment variable's text
    return out


class KubeEnvSource:
    """EnvSource over the official client (``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client: Any = api_client
        self.core: Any = client.CoreV1Api(api_client)
        self.apps: Any = client.AppsV1Api(api_client)

    async def read(
        self, namespace: str, service: str, *, container: str | None = None
    ) -> EnvInputs:
        return await asyncio.to_thread(self._read, namespace, service, container)

    def _read(self, namespace: str, service: str, container_name: str | None) -> EnvInputs:
        where = f"in namespace '{namespace}'"
        try:
            svc = self.core.read_namespaced_service(service, namespace, _request_timeout=15)
        except Exception as exc:
            raise map_api_error(exc, f"service '{service}' {where}") from exc
        deployment = self._deployment(namespace, service, dict(svc.spec.selector or {}))
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        containers = template["spec"]["containers"]
        container = self._container(containers, container_name, svc, name)
        config_names, secret_names = _references(container)
        config_maps: dict[str, Mapping[str, str]] = {}
        for cm in sorted(config_names):
            obj = self._optional(self.core.read_namespaced_config_map, cm, namespace, "configMap")
            if obj is not None:
                config_maps[cm] = {str(k): str(v) for k, v in (obj.data or {}).items()}
        secrets: dict[str, Mapping[str, str]] = {}
        for sec in sorted(secret_names):
            obj = self._optional(self.core.read_namespaced_secret, sec, namespace, "secret")
            if obj is not None:
                secrets[sec] = _decode_secret(obj.data)
        return EnvInputs(
            container=container,
            config_maps=config_maps,
            secrets=secrets,
            fields=local_fields(name, namespace, template),
            resources={c["name"]: c.get("resources") or {} for c in containers},
            what=f"container '{container['name']}' of deployment '{name}'",
        )

    def _optional(self, read: Any, name: str, namespace: str, kind: str) -> Any:
        try:
            return read(name, namespace, _request_timeout=15)
        except Exception as exc:
            error = map_api_error(exc, f"{kind} '{name}' in namespace '{namespace}'")
            if isinstance(error, NotFoundError):
                return None  # the import decides: fine when optional, an error when not
            raise error from exc

    def _deployment(self, namespace: str, service: str, selector: dict[str, str]) -> Any:
        """The Deployment named like the service, else the one its selector picks."""
        try:
            obj = self.apps.read_namespaced_deployment(service, namespace, _request_timeout=15)
            return self.api_client.sanitize_for_serialization(obj)
        except Exception as exc:
            if not isinstance(map_api_error(exc, ""), NotFoundError):
                raise map_api_error(exc, f"deployment '{service}'") from exc
        try:
            listed = self.apps.list_namespaced_deployment(namespace, _request_timeout=15)
        except Exception as exc:
            raise map_api_error(exc, f"deployments of namespace '{namespace}'") from exc
        matching = sorted(
            (
                d
                for d in listed.items
                if selector and selector.items() <= (d.spec.template.metadata.labels or {}).items()
            ),
            key=lambda d: d.metadata.name,
        )
        if not matching:
            raise NotFoundError(
                f"no deployment runs service '{service}' in namespace '{namespace}' "
                f"(none is called '{service}' and none matches its selector)"
            )
        if len(matching) > 1:
            names = ", ".join(d.metadata.name for d in matching)
            raise UsageError(f"service '{service}' selects several deployments: {names}")
        return self.api_client.sanitize_for_serialization(matching[0])

    @staticmethod
    def _container(
        containers: list[dict[str, Any]], wanted: str | None, svc: Any, deployment: str
    ) -> dict[str, Any]:
        names = [c["name"] for c in containers]
        if wanted is not None:
            for c in containers:
                if c["name"] == wanted:
                    return c
            raise UsageError(
                f"deployment '{deployment}' has no container '{wanted}' (it has {', '.join(names)})"
            )
        targets = [p.target_port or p.port for p in svc.spec.ports or ()]
        for c in containers:
            if any(_serves(c, t) for t in targets):
                return c
        return containers[0]


def write_private_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600, whatever the umask),
    atomically: a reader sees the old file or the new one, never half of one."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as exc:
        raise CockpitError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CockpitError(f"cannot write {target}: {exc.strerror}") from exc
    return target
