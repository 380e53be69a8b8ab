"""The Kubernetes API through the official client: list/watch a namespace, follow pod logs,
restart workloads, access reviews and an interactive shell — library errors mapped to ours.

Blocking client calls run in threads; long streams (watches, log follows) each get a daemon
thread of their own that hands data to the event loop in batches (``Handoff``), so the loop
never waits on the network and a fast stream costs one wakeup per batch, not per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from cockpit.core.backoff import Backoff
from cockpit.core.kubemodel import KINDS, Obj
from cockpit.core.rbac import AccessCheck, Permission
from cockpit.errors import (
    AccessDeniedError,
    ClusterError,
    CockpitError,
    ConfigError,
    NotFoundError,
    UsageError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Where each watched kind lives in the API.
_PATHS = {
    "services": "/api/v1/namespaces/{ns}/services",
    "pods": "/api/v1/namespaces/{ns}/pods",
    "endpoints": "/api/v1/namespaces/{ns}/endpoints",
    "events": "/api/v1/namespaces/{ns}/events",
    "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
}
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
# The API server ends a watch after this long (a little jitter so watches do not all
# reconnect together); the client gives up on a silent connection somewhat later.
WATCH_SECONDS = 290
WATCH_READ_TIMEOUT = WATCH_SECONDS + 40
# A followed log can be quiet for hours; TCP keepalive finds a dead peer instead.
LOG_READ_TIMEOUT = 3600.0
READ_SIZE = 256 * 1024
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


# -- errors ----------------------------------------------------------------------------------


def _status_message(body: bytes | str | None) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return " ".join(text.split())[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or "")
    return ""


class ResourceGone(ClusterError):
    """HTTP 410: a watch's resourceVersion is older than the server keeps (relist)."""


def api_error(status: int, body: bytes | str | None, what: str) -> CockpitError:
    """The CockpitError for an API answer with HTTP ``status`` to the request ``what``."""
    message = _status_message(body)
    if status == 401:
        return AccessDeniedError(
            f"the API server rejected the credentials ({what})",
            hint="log in again or check the kubeconfig's user",
        )
    if status == 403:
        return AccessDeniedError(
            message or f"not allowed to {what}", hint="'cockpit doctor' lists what is missing"
        )
    if status == 404:
        return NotFoundError(f"{what}: {message or 'not found'}")
    if status == 410:
        return ResourceGone(f"{what}: {message or 'gone'}")
    return ClusterError(f"{what}: {message or f'HTTP {status}'}")


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while seen < 10:
        seen += 1
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException) and inner is not exc:
            exc = inner
            continue
        if exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        if exc.__context__ is not None and not exc.__suppress_context__:
            exc = exc.__context__
            continue
        break
    return exc


def short_reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``, ``TLS: certificate verify failed``..."""
    root = _root_cause(exc)
    text = str(root)
    if isinstance(root, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused"
    if isinstance(root, ConnectionResetError) or "Connection reset" in text:
        return "connection reset"
    if isinstance(root, TimeoutError | socket.timeout | urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(root, ssl.SSLError | urllib3.exceptions.SSLError):
        return f"TLS: {getattr(root, 'reason', None) or text}"
    if isinstance(root, socket.gaierror):
        return f"cannot resolve host ({root.strerror})"
    if isinstance(root, urllib3.exceptions.ProtocolError | EOFError):
        return "connection closed"
    text = " ".join(text.split())
    return text[:200] or type(root).__name__


def unreachable(server: str, exc: BaseException) -> ClusterError:
    return ClusterError(f"cannot reach the Kubernetes API at {server}: {short_reason(exc)}")


# What a broken watch can raise: ours, the network's, a truncated JSON line.
_WATCH_ERRORS: tuple[type[BaseException], ...] = (
    CockpitError,
    urllib3.exceptions.HTTPError,
    OSError,
    EOFError,
    ValueError,
    client.ApiException,
)


# -- the connection --------------------------------------------------------------------------


def _keepalive_options() -> list[tuple[int, int, int]]:
    opts = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    # A peer that vanished (laptop sleep, cut network) is noticed in ~60 s, not hours.
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return opts


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete (re)list of one kind: the model replaces what it had."""

    kind: str
    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ``change`` is ADDED, MODIFIED or DELETED."""

    kind: str
    change: str
    obj: dict[str, Any]


WatchUpdate = Listed | Changed
UpdateSink = Callable[[Sequence[WatchUpdate]], None]
StateSink = Callable[[str, str], None]
"""``(kind, state)``: "connected", or "disconnected: <reason>" when its watch is down."""


class Kube:
    """One kubeconfig context: an ApiClient plus the raw requests cockpit makes with it.

    Requests return plain JSON (dicts), not the client's model classes: a watch event or a
    pod list is folded by ``cockpit.core.kubemodel`` as is, and decoding into dicts is
    several times faster than building model objects.
    """

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        context: str = "",
        namespace: str = "default",
        user: str = "",
        kubeconfig: str = "",
    ) -> None:
        configuration.connection_pool_maxsize = max(64, configuration.connection_pool_maxsize or 0)
        configuration.socket_options = _keepalive_options()
        self.configuration = configuration
        self.context = context
        self.namespace = namespace
        self.user = user  # the kubeconfig's name for the user entry
        self.kubeconfig = kubeconfig
        self.server = str(configuration.host)
        self._api = client.ApiClient(configuration)
        # kubernetes.stream swaps call_api on the ApiClient it is given for the duration of
        # the call: exec gets a client of its own so it never hijacks a concurrent request.
        self._ws_api: client.ApiClient | None = None

    @classmethod
    def load(
        cls,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> Kube:
        """Read a kubeconfig (``$KUBECONFIG`` or ``~/.kube/config`` when None). Blocking (an
        exec credential plugin may run): call it off the event loop in async code."""
        path = str(kubeconfig) if kubeconfig else None
        shown = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        if path is not None and not Path(path).expanduser().exists():
            raise ConfigError(f"kubeconfig {path} does not exist")
        list_contexts: Any = config.list_kube_config_contexts
        try:
            contexts, active = list_contexts(config_file=path)
        except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read kubeconfig {shown}: {exc}") from exc
        names = [c.get("name", "") for c in contexts or ()]
        if context is not None and context not in names:
            known = ", ".join(names) or "none"
            raise NotFoundError(
                f"context '{context}' not found in kubeconfig {shown}", hint=f"contexts: {known}"
            )
        chosen = next((c for c in contexts if c.get("name") == context), active) or {}
        details = chosen.get("context") or {}
        cfg = client.Configuration()
        load_config: Any = config.load_kube_config
        try:
            load_config(
                config_file=path, context=context, client_configuration=cfg, persist_config=False
            )
        except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot use kubeconfig {shown}: {exc}") from exc
        return cls(
            cfg,
            context=str(chosen.get("name") or ""),
            namespace=namespace or details.get("namespace") or "default",
            user=str(details.get("user") or ""),
            kubeconfig=shown,
        )

    @property
    def identity(self) -> str:
        """Who the API server sees, when the credentials say so without asking it (1.20 has
        no SelfSubjectReview): a ServiceAccount token's subject; "" otherwise."""
        keys = self.configuration.api_key or {}
        token = str(keys.get("BearerToken") or keys.get("authorization") or "")
        parts = token.removeprefix("Bearer ").split(".")
        if len(parts) != 3:
            return ""
        import base64

        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return ""
        return str(payload.get("sub", "")) if isinstance(payload, dict) else ""

    def close(self) -> None:
        self._api.rest_client.close()
        if self._ws_api is not None:
            self._ws_api.rest_client.close()

    # -- raw requests (blocking) --------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: float | tuple[float, float] | None = (CONNECT_TIMEOUT, REQUEST_TIMEOUT),
        what: str = "",
    ) -> urllib3.BaseHTTPResponse:
        """Send one request; the response unread (a 2xx one), or a mapped CockpitError."""
        headers: dict[str, str] = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        url_path = path + ("?" + urlencode(list(query)) if query else "")
        try:
            _method, url, header_params, body_out, _post = self._api.param_serialize(
                method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            rest: Any = self._api.rest_client  # untyped
            response: urllib3.BaseHTTPResponse = rest.request(
                method, url, headers=header_params, body=body_out, _request_timeout=timeout
            ).response
        except client.ApiException as exc:  # the client turns TLS failures into these
            raise unreachable(self.server, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(self.server, exc) from exc
        if not 200 <= response.status < 300:
            try:
                data = response.read()
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            finally:
                response.release_conn()
            raise api_error(response.status, data, what or f"{method} {path}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise unreachable(self.server, exc) from exc
        finally:
            response.release_conn()
        return json.loads(data) if data else None

    # -- reads --------------------------------------------------------------------------------

    def list_objects(self, kind: str, namespace: str) -> tuple[list[dict[str, Any]], str]:
        """Every ``kind`` object in ``namespace`` and the list's resourceVersion."""
        data = self.json(
            "GET",
            _PATHS[kind].format(ns=quote(namespace)),
            what=f"list {kind} in namespace '{namespace}'",
        )
        return list(data.get("items") or ()), str(data["metadata"].get("resourceVersion", ""))

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        singular = kind.rstrip("s") if kind != "endpoints" else kind
        path = _PATHS[kind].format(ns=quote(namespace)) + "/" + quote(name)
        try:
            data: dict[str, Any] = self.json("GET", path, what=f"get {singular} '{name}'")
        except NotFoundError as exc:
            raise NotFoundError(
                f"{singular} '{name}' not found in namespace '{namespace}'"
            ) from exc
        return data

    def namespace_exists(self, namespace: str) -> bool | None:
        """True/False, or None when the user may not read namespaces (a namespaced user)."""
        try:
            self.json("GET", f"/api/v1/namespaces/{quote(namespace)}", what="get namespace")
        except NotFoundError:
            return False
        except AccessDeniedError:
            return None
        return True

    def require_namespace(self, namespace: str) -> None:
        if self.namespace_exists(namespace) is False:
            raise NotFoundError(
                f"namespace '{namespace}' not found in context '{self.context}'",
                hint="kubectl get namespaces lists them",
            )

    def server_version(self) -> str:
        data = self.json("GET", "/version", what="read the server version")
        return str(data.get("gitVersion", ""))

    def review_access(self, namespace: str, permissions: Sequence[Permission]) -> list[AccessCheck]:
        """One SelfSubjectAccessReview per permission, a few at a time."""

        def review(perm: Permission) -> AccessCheck:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": perm.review_attributes(namespace)},
            }
            data = self.json(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body=body,
                content_type="application/json",
                what="review access",
            )
            status = data.get("status") or {}
            reason = status.get("reason") or status.get("evaluationError") or ""
            return AccessCheck(perm, bool(status.get("allowed")), reason)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="access-review") as pool:
            return list(pool.map(review, permissions))

    # -- writes -------------------------------------------------------------------------------

    def restart_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """``kubectl rollout restart``: stamp the pod template so every pod is replaced; the
        patched Deployment."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        patched: dict[str, Any] = self.json(
            "PATCH",
            _PATHS["deployments"].format(ns=quote(namespace)) + "/" + quote(name),
            body=patch,
            content_type="application/strategic-merge-patch+json",
            what=f"restart deployment '{name}'",
        )
        return patched

    def delete_pod(self, namespace: str, name: str) -> None:
        self.json(
            "DELETE",
            _PATHS["pods"].format(ns=quote(namespace)) + "/" + quote(name),
            what=f"delete pod '{name}'",
        )

    # -- streams ------------------------------------------------------------------------------

    def open_watch(
        self, kind: str, namespace: str, resource_version: str
    ) -> urllib3.BaseHTTPResponse:
        query = [
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS + int.from_bytes(os.urandom(1)) % 20)),
        ]
        return self.request(
            "GET",
            _PATHS[kind].format(ns=quote(namespace)),
            query=query,
            timeout=(CONNECT_TIMEOUT, WATCH_READ_TIMEOUT),
            what=f"watch {kind} in namespace '{namespace}'",
        )

    def open_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool = True,
        since_time: str = "",
        tail_lines: int | None = None,
        previous: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """A pod log stream with RFC 3339 timestamps (``sinceTime`` is not exposed by the
        generated client, hence the raw request)."""
        query: list[tuple[str, Any]] = [("container", container), ("timestamps", "true")]
        if follow:
            query.append(("follow", "true"))
        if previous:
            query.append(("previous", "true"))
        if since_time:
            query.append(("sinceTime", since_time))
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        return self.request(
            "GET",
            f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log",
            query=query,
            timeout=(CONNECT_TIMEOUT, LOG_READ_TIMEOUT if follow else REQUEST_TIMEOUT),
            what=f"read the log of {pod}/{container}",
        )

    def exec_websocket(
        self, namespace: str, pod: str, container: str, command: Sequence[str], *, tty: bool
    ) -> Any:
        """An exec session (kubernetes.stream WSClient, binary channels)."""
        from kubernetes.stream import stream

        if self._ws_api is None:
            self._ws_api = client.ApiClient(self.configuration)
        core = client.CoreV1Api(self._ws_api)
        try:
            return stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                container=container,
                command=list(command),
                stdin=True,
                stdout=True,
                stderr=not tty,
                tty=tty,
                binary=True,
                _preload_content=False,
            )
        except client.ApiException as exc:
            text = str(exc.reason or exc)
            if "403" in text:
                raise AccessDeniedError(
                    f"not allowed to exec into pod '{pod}' (create pods/exec)",
                    hint="'cockpit doctor' lists what is missing",
                ) from exc
            if "404" in text:
                raise NotFoundError(f"pod '{pod}' not found in namespace '{namespace}'") from exc
            raise ClusterError(
                f"cannot open a shell in {pod}/{container}: {short_reason(exc)}"
            ) from exc

    # -- async ---------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking method off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def watch_namespace(
        self,
        namespace: str,
        on_updates: UpdateSink,
        on_state: StateSink,
        kinds: Sequence[str] = KINDS,
    ) -> NamespaceWatch:
        watch = NamespaceWatch(self, namespace, kinds, on_updates, on_state)
        await watch.start()
        return watch

    async def follow_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool = True,
        since_time: str = "",
        tail_lines: int | None = None,
        previous: bool = False,
    ) -> LogStream:
        response = await asyncio.to_thread(
            self.open_log,
            namespace,
            pod,
            container,
            follow=follow,
            since_time=since_time,
            tail_lines=tail_lines,
            previous=previous,
        )
        return LogStream(response, asyncio.get_running_loop(), name=f"log {pod}/{container}")


# -- thread -> event loop --------------------------------------------------------------------


class Handoff(Generic[T]):
    """Items from a worker thread to the event loop: the loop is woken once per batch, and
    the thread blocks when ``limit`` items wait (backpressure instead of unbounded memory)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 1024) -> None:
        self._loop = loop
        self._limit = limit
        self._cond = threading.Condition()
        self._items: list[T] = []
        self._ended = False
        self._error: BaseException | None = None
        self._closed = False
        self._ready = asyncio.Event()

    # worker thread side
    def put(self, item: T) -> bool:
        """Queue an item; False once the consumer closed (the worker should stop)."""
        with self._cond:
            while len(self._items) >= self._limit and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                return False
            self._items.append(item)
            wake = len(self._items) == 1
        if wake:
            self._wake()
        return True

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended = True
            self._error = error
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(self._ready.set)

    # event loop side
    async def get(self) -> list[T]:
        """The items queued so far (waits for at least one); [] once the worker ended."""
        while True:
            self._ready.clear()
            with self._cond:
                if self._items:
                    batch, self._items = self._items, []
                    self._cond.notify_all()
                    return batch
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return []
            await self._ready.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    """Unblock a thread reading ``response`` (closing alone would not wake a blocked recv)."""
    with contextlib.suppress(Exception):
        shutdown = getattr(response, "shutdown", None)
        if shutdown is not None:
            shutdown()
    with contextlib.suppress(Exception):
        response.close()


def _rfc3339_date(header: str | None) -> str:
    """An HTTP Date header (``Mon, 23 Nov 2026 10:09:05 GMT``) as ``2026-11-23T10:09:05Z``."""
    import email.utils

    if not header:
        return ""
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return ""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LogStream:
    """The chunks of one log response, read by a thread of its own.

    ``async for chunks in stream`` yields lists of raw byte chunks as they arrive and ends
    when the server ends the stream; a broken connection raises ClusterError.
    ``server_time`` is the API server's clock when it answered (its Date header), as an RFC
    3339 second: where a stream that broke before its first line resumes from.
    """

    def __init__(
        self, response: urllib3.BaseHTTPResponse, loop: asyncio.AbstractEventLoop, *, name: str
    ) -> None:
        self._response = response
        self.server_time = _rfc3339_date(response.headers.get("Date"))
        self._handoff: Handoff[bytes] = Handoff(loop, limit=512)
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        response, handoff = self._response, self._handoff
        error: BaseException | None = None
        try:
            read = response.read1
            while True:
                data = read(READ_SIZE)
                if not data or not handoff.put(data):
                    break
        except Exception as exc:
            if not handoff.closed:
                error = ClusterError(f"log stream broke: {short_reason(exc)}")
                error.__cause__ = exc
        finally:
            with contextlib.suppress(Exception):
                response.release_conn()
            handoff.end(error)

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[list[bytes]]:
        while True:
            batch = await self._handoff.get()
            if not batch:
                return
            yield batch

    async def aclose(self) -> None:
        self._handoff.close()
        _shutdown(self._response)


# -- list + watch ----------------------------------------------------------------------------


class NamespaceWatch:
    """List then watch some kinds of one namespace, for as long as it runs.

    Each kind has a thread that resumes its watch from the last resourceVersion seen,
    relists when the server says that version is gone (410), and reconnects with backoff
    when the API server goes away, reporting its state through ``on_state``. Updates reach
    ``on_updates`` on the event loop, in order, in batches.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        kinds: Sequence[str],
        on_updates: UpdateSink,
        on_state: StateSink,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.kinds = tuple(kinds)
        self.initial: dict[str, list[dict[str, Any]]] = {}
        self._on_updates = on_updates
        self._on_state = on_state
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str, urllib3.BaseHTTPResponse] = {}
        self._lock = threading.Lock()
        self._handoff: Handoff[WatchUpdate | tuple[str, str]] | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """List every kind (raising a CockpitError if that fails), then start watching."""
        loop = asyncio.get_running_loop()
        lists = await asyncio.gather(
            *(
                asyncio.to_thread(self.kube.list_objects, kind, self.namespace)
                for kind in self.kinds
            )
        )
        versions = {}
        for kind, (items, version) in zip(self.kinds, lists, strict=True):
            self.initial[kind] = items
            versions[kind] = version
        self._handoff = Handoff(loop, limit=4096)
        self._pump = asyncio.create_task(self._deliver(), name=f"watch {self.namespace}")
        for kind in self.kinds:
            thread = threading.Thread(
                target=self._run,
                args=(kind, versions[kind]),
                name=f"watch {kind} {self.namespace}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    async def stop(self) -> None:
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for response in responses:
            _shutdown(response)
        if self._handoff is not None:
            self._handoff.close()
            self._handoff.end()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)

    async def _deliver(self) -> None:
        assert self._handoff is not None
        while True:
            batch = await self._handoff.get()
            if not batch:
                return
            updates: list[WatchUpdate] = []
            for item in batch:
                if isinstance(item, tuple):
                    if updates:
                        self._safe(self._on_updates, updates)
                        updates = []
                    self._safe(self._on_state, *item)
                else:
                    updates.append(item)
            if updates:
                self._safe(self._on_updates, updates)

    @staticmethod
    def _safe(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a consumer bug must not end the watch
            log.exception("watch consumer failed")

    # -- the watch thread ----------------------------------------------------------------------

    def _put(self, item: WatchUpdate | tuple[str, str]) -> bool:
        assert self._handoff is not None
        return self._handoff.put(item)

    def _run(self, kind: str, version: str) -> None:
        backoff = Backoff(initial=0.2, maximum=10.0, factor=2.0, jitter=0.2, reset_after=30.0)
        connected = True  # the initial list just succeeded
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self.kube.list_objects(kind, self.namespace)
                    if not self._put(Listed(kind, items, version)):
                        return
                response = self.kube.open_watch(kind, self.namespace, version)
                with self._lock:
                    self._responses[kind] = response
                if self._stop.is_set():
                    _shutdown(response)
                    return
                if not connected:
                    connected = True
                    self._put((kind, "connected"))
                backoff.reset()
                version = self._read_events(kind, response, version)
            except ResourceGone:
                version = ""  # relist at once: the API server is there
            except Exception as exc:
                if self._stop.is_set():
                    return  # stop() cut the connection under the read
                reason = exc.message if isinstance(exc, CockpitError) else short_reason(exc)
                if not isinstance(exc, _WATCH_ERRORS):
                    log.exception("watch %s/%s failed unexpectedly", self.namespace, kind)
                log.debug("watch %s/%s: %s", self.namespace, kind, reason)
                if connected:
                    connected = False
                    self._put((kind, f"disconnected: {reason}"))
                self._stop.wait(backoff.next_delay(time.monotonic()))
            finally:
                with self._lock:
                    self._responses.pop(kind, None)

    def _read_events(self, kind: str, response: urllib3.BaseHTTPResponse, version: str) -> str:
        """Read watch events until the server ends the watch; the last resourceVersion."""
        buffer = b""
        try:
            while True:
                data = response.read1(READ_SIZE)
                if not data:
                    if buffer.strip():
                        raise urllib3.exceptions.ProtocolError("watch ended mid-event")
                    return version
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    change, obj = event.get("type"), event.get("object") or {}
                    if change == "ERROR":
                        if obj.get("code") == 410:
                            raise ResourceGone(f"watch {kind}: {obj.get('message', 'gone')}")
                        raise ClusterError(f"watch {kind}: {obj.get('message') or obj}")
                    new_version = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_version:
                        version = str(new_version)
                    if change == "BOOKMARK":
                        continue
                    if not self._put(Changed(kind, str(change), obj)):
                        return version
        finally:
            with contextlib.suppress(Exception):
                response.release_conn()


# -- the protocol the engine depends on ------------------------------------------------------


class WatchHandle(Protocol):
    initial: dict[str, list[dict[str, Any]]]

    async def stop(self) -> None: ...


class LogChunks(Protocol):
    server_time: str  # RFC 3339, the second the server answered ("" if unknown)

    def __aiter__(self) -> AsyncIterator[list[bytes]]: ...

    async def aclose(self) -> None: ...


class ClusterSource(Protocol):
    """What the engine needs from a cluster (``Kube`` is the real one, fakes in tests)."""

    context: str
    namespace: str
    server: str

    async def watch_namespace(
        self,
        namespace: str,
        on_updates: UpdateSink,
        on_state: StateSink,
        kinds: Sequence[str] = KINDS,
    ) -> WatchHandle:
        """List ``kinds`` (raising a CockpitError), then deliver changes until stopped."""
        ...

    async def follow_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool = True,
        since_time: str = "",
        tail_lines: int | None = None,
        previous: bool = False,
    ) -> LogChunks: ...

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    def restart_deployment(self, namespace: str, name: str) -> dict[str, Any]: ...

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def namespace_exists(self, namespace: str) -> bool | None: ...

    def server_version(self) -> str: ...

    def review_access(
        self, namespace: str, permissions: Sequence[Permission]
    ) -> list[AccessCheck]: ...


# -- an interactive shell --------------------------------------------------------------------


DEFAULT_SHELL = ("/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh")


def pick_container(pod: Obj, wanted: str | None) -> str:
    """The container a shell opens in: ``wanted``, else the pod's default-container
    annotation, else its first container."""
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or ()]
    pod_name = (pod.get("metadata") or {}).get("name", "")
    if wanted:
        if wanted not in names:
            raise NotFoundError(
                f"container '{wanted}' not found in pod '{pod_name}'",
                hint=f"containers: {', '.join(names)}",
            )
        return wanted
    annotated = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER)
    if annotated in names:
        return str(annotated)
    if not names:
        raise NotFoundError(f"pod '{pod_name}' has no containers")
    return str(names[0])


def _window_size(fd: int) -> tuple[int, int]:
    import fcntl
    import termios

    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols = struct.unpack("HHHH", packed)[:2]
        if rows and cols:
            return cols, rows
    except OSError:
        pass
    return 80, 24


def exit_status(error_channel: bytes | str) -> tuple[int, str]:
    """The exit code (and message) from an exec's error channel (a metav1 Status)."""
    if not error_channel:
        return 0, ""
    try:
        status = json.loads(error_channel)
    except ValueError:
        return 1, str(error_channel)
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or ():
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), ""
            except (TypeError, ValueError):
                break
    message = str(status.get("message") or "the command failed")
    # As a shell would: 127 for a command that is not there, 126 for one that cannot run.
    if "executable file not found" in message or "no such file or directory" in message:
        return 127, message
    if "permission denied" in message:
        return 126, message
    return 1, message


def _take_channel(ws: Any, channel: int) -> bytes:
    """What ``update()`` buffered for a channel. Not ``read_channel``: for a channel with
    nothing buffered it reads the socket again, which can buffer output for the other
    channel that then waits unseen (select has nothing left to report) — a stalled shell."""
    channels: dict[int, bytes] = ws._channels
    return channels.pop(channel, b"")


def run_shell(
    kube: Kube,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str] = DEFAULT_SHELL,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
) -> int:
    """Run ``command`` in a container with this terminal attached; its exit code.

    With a terminal on stdin it gets a TTY: the local terminal goes raw for the duration
    (restored even on error) and window size changes are sent on the resize channel. With
    a pipe on stdin it runs like ``kubectl exec -i`` and stdin's end ends the input.
    Blocking: the caller hands over the terminal (the UI through App.suspend()).
    """
    import termios
    import tty as ttymod

    from kubernetes.stream.ws_client import ERROR_CHANNEL, RESIZE_CHANNEL

    fd_in = sys.stdin.fileno() if stdin is None else stdin
    fd_out = sys.stdout.fileno() if stdout is None else stdout
    is_tty = os.isatty(fd_in)
    ws = kube.exec_websocket(namespace, pod, container, command, tty=is_tty)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    resized = threading.Event()
    saved = termios.tcgetattr(fd_in) if is_tty else None
    previous_handler: Any = None
    in_main = threading.current_thread() is threading.main_thread()

    def on_winch(_sig: int, _frame: object) -> None:
        resized.set()
        with contextlib.suppress(OSError):
            os.write(wake_w, b"\0")

    def send_size() -> None:
        cols, rows = _window_size(fd_in)
        ws.write_channel(RESIZE_CHANNEL, json.dumps({"Width": cols, "Height": rows}))

    try:
        if is_tty:
            # TCSANOW, not setraw's default TCSAFLUSH: keys typed ahead reach the shell.
            ttymod.setraw(fd_in, termios.TCSANOW)
            if in_main:
                previous_handler = signal.signal(signal.SIGWINCH, on_winch)
            send_size()
        sock = ws.sock.sock
        stdin_open = True
        while ws.is_open():
            readers = [sock, wake_r] + ([fd_in] if stdin_open else [])
            # Decrypted bytes already buffered in the TLS layer are invisible to select().
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            ready = select.select(readers, [], [], 0 if pending else 1.0)[0]
            if pending and sock not in ready:
                ready.append(sock)
            if sock in ready:
                ws.update(timeout=0)
                for channel, fd in ((1, fd_out), (2, 2)):
                    data = _take_channel(ws, channel)
                    if data:
                        os.write(fd, data)
            if wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 512)
            if resized.is_set():
                resized.clear()
                send_size()
            if stdin_open and fd_in in ready:
                data = os.read(fd_in, 4096)
                if data:
                    ws.write_channel(0, data)
                else:
                    stdin_open = False
                    if not is_tty:
                        # v4 has no way to close stdin alone: EOF (^D) tells a shell to exit.
                        ws.write_channel(0, b"\x04")
        code, message = exit_status(ws.read_channel(ERROR_CHANNEL))
        if message and code and not message.startswith("command terminated"):
            os.write(2, f"cockpit: error: {' '.join(message.split())}\r\n".encode())
        return code
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        raise ClusterError(f"shell in {pod}/{container} broke: {short_reason(exc)}") from exc
    except Exception as exc:  # websocket-client errors (no shared base class)
        if isinstance(exc, CockpitError):
            raise
        raise ClusterError(f"shell in {pod}/{container} broke: {short_reason(exc)}") from exc
    finally:
        if saved is not None:
            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if previous_handler is not None:
            signal.signal(signal.SIGWINCH, previous_handler)
        with contextlib.suppress(Exception):
            ws.close()
        os.close(wake_r)
        os.close(wake_w)


def pods_for_service(kube: Kube, namespace: str, service: str) -> tuple[Obj, list[dict[str, Any]]]:
    """A Service and the pods it selects (blocking)."""
    svc = kube.get_object("services", namespace, service)
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        raise UsageError(f"service '{service}' has no selector: it has no pods to open")
    items = (
        kube.json(
            "GET",
            _PATHS["pods"].format(ns=quote(namespace)),
            query=[("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(selector.items())))],
            what=f"list the pods of service '{service}'",
        ).get("items")
        or []
    )
    return svc, list(items)


def shell_target(
    kube: Kube, namespace: str, service: str, container: str | None = None
) -> tuple[str, str]:
    """(pod, container) a shell into ``service`` opens in: a ready pod, newest first (blocking)."""
    from cockpit.core.kubemodel import pod_view, ready_pod

    try:
        _svc, pods = pods_for_service(kube, namespace, service)
    except NotFoundError as exc:
        if not exc.message.startswith("service "):
            raise
        raise NotFoundError(
            exc.message, hint=suggest(service, service_names(kube, namespace))
        ) from exc
    chosen = ready_pod([pod_view(p) for p in pods])
    if chosen is None:
        raise ClusterError(f"service '{service}' has no running pod to open a shell in")
    raw = next(p for p in pods if (p.get("metadata") or {}).get("name") == chosen.name)
    return chosen.name, pick_container(raw, container)


def service_names(kube: Kube, namespace: str) -> list[str]:
    items, _ = kube.list_objects("services", namespace)
    return sorted((i.get("metadata") or {}).get("name", "") for i in items)


def suggest(name: str, known: Iterable[str]) -> str | None:
    """A hint for a mistyped name: "did you mean 'store'?" or the names there are."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    if known:
        return f"services: {', '.join(known[:10])}"
    return None
