"""What the agent does to the cluster: publish its host key, read client keys, find the Services
it owns, restore a Service, delete itself. Each call is one line of the agent's Role."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from cockpit.agent.kubeapi import KubeAPI, KubeError
from cockpit.core.agent_spec import CLIENT_KEY_PREFIX, HOST_KEY_PREFIX
from cockpit.core.intercept import (
    AGENT_NAME,
    ANNOTATION,
    is_shadow_of,
    restore_patch,
    shadow_name,
)

log = logging.getLogger("cockpit.agent")


class ClusterOps(Protocol):
    """The agent's view of the cluster (a fake one serves the agent's local tests)."""

    async def client_key(self, session: str) -> str | None:
        """The OpenSSH public key registered for ``session``, if any."""
        ...

    async def publish_host_key(self, pod: str, public_key: str) -> None: ...

    async def owned_services(self) -> list[dict[str, Any]]:
        """Services carrying the intercept annotation (pointing at this agent)."""
        ...

    async def services(self) -> list[dict[str, Any]]:
        """Every Service of the namespace (where sessions' outbound channels may go)."""
        ...

    async def restore(self, service: str) -> None:
        """Give ``service`` back its selector and targetPorts."""
        ...

    async def delete_shadow(self, service: str) -> None:
        """Delete ``service``'s shadow Service (once nothing is routed to it any more)."""
        ...

    async def forget_client_keys(self, sessions: Iterable[str]) -> None: ...

    async def delete_self(self) -> None: ...


class KubeCluster:
    """ClusterOps over the API server, with the agent's ServiceAccount."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self._cm = f"/api/v1/namespaces/{namespace}/configmaps/{AGENT_NAME}"

    def _svc(self, name: str = "") -> str:
        return f"/api/v1/namespaces/{self.ns}/services" + (f"/{name}" if name else "")

    async def client_key(self, session: str) -> str | None:
        data = (await self.api.get(self._cm)).get("data") or {}
        key = data.get(CLIENT_KEY_PREFIX + session)
        return key if isinstance(key, str) else None

    async def publish_host_key(self, pod: str, public_key: str) -> None:
        # The Role, RoleBinding and ConfigMap may land a moment after the pod starts.
        delay = 0.05
        for attempt in range(60):
            try:
                data = (await self.api.get(self._cm)).get("data") or {}
                patch: dict[str, str | None] = {
                    k: None for k in data if k.startswith(HOST_KEY_PREFIX)
                }
                patch[HOST_KEY_PREFIX + pod] = public_key
                await self.api.merge_patch(self._cm, {"data": patch})
                return
            except KubeError as exc:
                if attempt == 59:
                    raise
                log.info("cannot publish host key yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def owned_services(self) -> list[dict[str, Any]]:
        return [
            s
            for s in await self.services()
            if ANNOTATION in ((s.get("metadata") or {}).get("annotations") or {})
        ]

    async def services(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.api.get(self._svc())).get("items") or []
        return items

    async def restore(self, service: str) -> None:
        for _ in range(5):
            try:
                svc = await self.api.get(self._svc(service))
            except KubeError as exc:
                if exc.status != 404:
                    raise
                break
            ops = restore_patch(svc)
            if ops is None:
                break
            try:
                await self.api.json_patch(self._svc(service), ops)
                log.info("restored service %s", service)
                break
            except KubeError as exc:
                # 422: the annotation changed under us (another restore won): look again.
                if exc.status not in (409, 422):
                    raise

    async def delete_shadow(self, service: str) -> None:
        name = shadow_name(service)
        try:
            shadow = await self.api.get(self._svc(name))
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        if is_shadow_of(shadow, service):
            uid = shadow["metadata"]["uid"]
            try:
                await self.api.delete(self._svc(name), {"preconditions": {"uid": uid}})
                log.info("deleted shadow service %s", name)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise

    async def forget_client_keys(self, sessions: Iterable[str]) -> None:
        patch = {CLIENT_KEY_PREFIX + s: None for s in sessions}
        if patch:
            await self.api.merge_patch(self._cm, {"data": patch})

    async def delete_self(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.ns}/deployments/{AGENT_NAME}"
        # Background propagation: the garbage collector removes the ReplicaSet, this pod and
        # every object the Deployment owns (ServiceAccount, Role, RoleBinding, ConfigMap).
        await self.api.delete(path, {"propagationPolicy": "Background"})
