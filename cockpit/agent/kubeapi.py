"""The few Kubernetes API calls the agent makes, over HTTPS with its ServiceAccount token.

A small client on asyncio + h11 instead of the kubernetes library: the agent image stays small
and starts fast, and the agent's calls (a GET, a JSON patch, a DELETE) need nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """An API call failed: ``status`` is the HTTP status (0 = no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class KubeAPI:
    """In-cluster API access: ``KubeAPI.in_cluster()`` inside a pod."""

    host: str
    port: int
    token_file: Path
    ssl_context: ssl.SSLContext
    timeout: float = 10.0

    @classmethod
    def in_cluster(cls) -> KubeAPI:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError(0, "not running in a pod: KUBERNETES_SERVICE_HOST is not set")
        ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return cls(host, int(port), SA_DIR / "token", ctx)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; the decoded JSON answer. KubeError for any status >= 400."""
        try:
            return await asyncio.wait_for(
                self._request(method, path, body, content_type), self.timeout
            )
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            raise KubeError(0, f"{method} {path}: {exc or type(exc).__name__}") from exc

    async def _request(self, method: str, path: str, body: Any, content_type: str) -> Any:
        payload = b"" if body is None else json.dumps(body).encode()
        # The token is re-read on each call: projected tokens are rotated by the kubelet.
        token = (await asyncio.to_thread(self.token_file.read_text)).strip()
        headers = [
            ("Host", self.host),
            ("Authorization", f"Bearer {token}"),
            ("Accept", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            ("User-Agent", "cockpit-agent"),
        ]
        if body is not None:
            headers.append(("Content-Type", content_type))
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context, server_hostname=self.host
        )
        try:
            conn = h11.Connection(h11.CLIENT)
            data = conn.send(h11.Request(method=method, target=path, headers=headers))
            data += conn.send(h11.Data(data=payload)) if payload else b""
            data += conn.send(h11.EndOfMessage())
            writer.write(data)
            status, chunks = 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            writer.close()
        raw = b"".join(chunks)
        answer = json.loads(raw) if raw else {}
        if status >= 400:
            message = answer.get("message", raw[:200].decode(errors="replace"))
            raise KubeError(status, message)
        return answer

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return await self.request("PATCH", path, ops, "application/json-patch+json")

    async def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", path, body, "application/merge-patch+json")

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, body)
