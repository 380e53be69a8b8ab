"""Engine events: the one vocabulary shared by the engine, the UI and headless JSON output.

Plain frozen dataclasses, no behaviour beyond ``to_json``. The engine publishes them on its
event stream; the reducer in ``cockpit.core.state`` folds them into ``SessionState``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Level(enum.IntEnum):
    """Severity of a log line (parsed from its text, or set by its producer)."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    FATAL = 50


class SourceKind(enum.StrEnum):
    LOCAL = "local"  # the service's local process
    POD = "pod"  # a container of a remote pod
    EVENT = "event"  # a Kubernetes event
    COCKPIT = "cockpit"  # cockpit's own messages


class ServiceMode(enum.StrEnum):
    REMOTE = "remote"
    LOCAL = "local"
    INTERCEPT_GLOBAL = "intercepted-global"
    INTERCEPT_PERSONAL = "intercepted-personal"


class ProcessStatus(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"  # started, port not yet answering (or no port configured)
    READY = "ready"  # port answers
    STOPPING = "stopping"
    EXITED = "exited"
    BACKOFF = "backoff"  # waiting before an automatic restart


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of output from any source. ``seq`` is assigned by the LogRing (0 = not yet)."""

    source: str  # "api" (local), "store-7d9f-abc/app" (pod/container), "events", "cockpit"
    service: str  # the service it belongs to ("" for cockpit's own lines)
    kind: SourceKind
    text: str
    ts: float  # unix time
    stream: str = "stdout"
    level: Level = Level.INFO
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every engine event."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = type(self).__name__
        out: dict[str, Any] = _jsonable(data)
        return out


@dataclass(frozen=True, slots=True)
class LogBatch(Event):
    """Lines flushed together (every ~50 ms or N lines) so consumers never pay per line."""

    lines: tuple[LogLine, ...]
    dropped_total: int = 0  # lines the ring dropped so far (shown, never silent)


@dataclass(frozen=True, slots=True)
class Alert(Event):
    """A de-duplicated problem: same ``key`` raises ``count`` instead of a new alert."""

    key: str
    service: str
    title: str  # one line
    detail: str  # e.g. the whole traceback, or the last lines of a dead process
    level: Level
    count: int
    first_seen: float
    last_seen: float
    log_seq: int = 0  # the LogLine.seq this alert points at (0 = none)


@dataclass(frozen=True, slots=True)
class ProcessChanged(Event):
    service: str
    status: ProcessStatus
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class ServiceChanged(Event):
    """Remote view of a service (from the cluster watch)."""

    service: str
    mode: ServiceMode = ServiceMode.REMOTE
    ready: int = 0
    total: int = 0
    restarts: int = 0
    reasons: tuple[str, ...] = ()
    forward: str = ""  # local address of its port-forward, "" if none


@dataclass(frozen=True, slots=True)
class ServiceRemoved(Event):
    service: str


@dataclass(frozen=True, slots=True)
class ForwardChanged(Event):
    """A forward of a cluster service: where it listens, the route new connections take
    ("tunnel": the agent's SSH connection to the Service; "port-forward": the API server to
    one pod), and counters of both routes together and of the tunnel alone."""

    name: str  # "store:8080"
    local: str  # "127.0.0.2:8080"
    remote: str  # "store-7d9f-abc:8080" (port-forward) or "store.shop.svc:8080" (tunnel)
    state: str  # "listening" | "connecting" | "stopped" | "failed: <reason>"
    connections: int = 0  # open now, both routes
    bytes_in: int = 0
    bytes_out: int = 0
    route: str = "port-forward"  # | "tunnel"
    tunnel_connections: int = 0  # open now through the tunnel
    tunnel_bytes_in: int = 0
    tunnel_bytes_out: int = 0


@dataclass(frozen=True, slots=True)
class SyncChanged(Event):
    name: str  # "api (reload)" or "web: ./static -> /app/static"
    state: str  # "watching" | "pending" | "syncing" | "in-sync" | "failed"
    pending: int = 0
    last_sync: float | None = None
    duration: float | None = None
    files: int = 0
    bytes: int = 0
    reason: str = ""
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionChanged(Event):
    """State of a connection the status bar shows: 'api', 'agent', 'tunnel'."""

    name: str
    state: str  # "connected" | "connecting" | "disconnected" | "failed: <reason>"


@dataclass(frozen=True, slots=True)
class SessionInfo(Event):
    session_id: str
    context: str
    namespace: str
    service: str


@dataclass(frozen=True, slots=True)
class CommandResult(Event):
    """The answer to ``Engine.submit(command)``; ``ok=False`` carries a one-line reason."""

    command: str
    ok: bool
    message: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """A progress or status message (e.g. cleanup steps). Same ``key`` supersedes the last."""

    key: str
    text: str
    level: Level = Level.INFO


def _jsonable(value: Any) -> Any:
    if isinstance(value, Level):
        return value.name.lower()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
