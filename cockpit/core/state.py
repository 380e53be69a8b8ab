"""The session as one value: every engine event folded in by a pure reducer.

``reduce`` mutates the given state in place and returns it: the engine owns the only
copy, and copying dicts of services on every log batch would be wasted work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cockpit.core.events import (
    Alert,
    ConnectionChanged,
    Event,
    ForwardChanged,
    LogBatch,
    Notice,
    ProcessChanged,
    ProcessStatus,
    ServiceChanged,
    ServiceMode,
    ServiceRemoved,
    SessionInfo,
    SyncChanged,
)

# Distinct alerts kept, as many as AlertRules keeps: a long session must not grow forever.
MAX_ALERTS = 500


@dataclass
class ServiceView:
    """What the services pane shows for one service."""

    name: str
    mode: ServiceMode = ServiceMode.REMOTE
    ready: int = 0
    total: int = 0
    restarts: int = 0
    reasons: tuple[str, ...] = ()
    forward: str = ""
    process: ProcessStatus | None = None  # only for the local one
    pid: int | None = None
    exit_code: int | None = None
    local_restarts: int = 0
    alert_count: int = 0


@dataclass
class SessionState:
    session: SessionInfo | None = None
    services: dict[str, ServiceView] = field(default_factory=dict)
    forwards: dict[str, ForwardChanged] = field(default_factory=dict)
    syncs: dict[str, SyncChanged] = field(default_factory=dict)
    connections: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    notices: dict[str, Notice] = field(default_factory=dict)
    dropped_lines: int = 0
    last_seq: int = 0

    def service(self, name: str) -> ServiceView:
        view = self.services.get(name)
        if view is None:
            view = self.services[name] = ServiceView(name)
        return view


def reduce(state: SessionState, event: Event) -> SessionState:
    """Fold ``event`` into ``state`` (in place) and return it."""
    match event:
        case LogBatch(lines=lines, dropped_total=dropped):
            if lines:
                state.last_seq = max(state.last_seq, lines[-1].seq)
            state.dropped_lines = dropped
        case Alert(key=key, service=service):
            # Re-inserted, so the first key is always the least recently updated one.
            known = state.alerts.pop(key, None) is not None
            state.alerts[key] = event
            if service and not known:
                state.service(service).alert_count += 1
            while len(state.alerts) > MAX_ALERTS:
                stale = state.alerts.pop(next(iter(state.alerts)))
                view = state.services.get(stale.service)
                if view is not None and view.alert_count > 0:
                    view.alert_count -= 1
        case ServiceChanged():
            view = state.service(event.service)
            # a local service keeps its mode from the session; the cluster only knows remote
            if view.process is None or event.mode != ServiceMode.REMOTE:
                view.mode = event.mode
            view.ready, view.total, view.restarts = event.ready, event.total, event.restarts
            view.reasons = event.reasons
            if event.forward:
                view.forward = event.forward
        case ServiceRemoved(service=name):
            state.services.pop(name, None)
        case ProcessChanged():
            view = state.service(event.service)
            if view.mode == ServiceMode.REMOTE:
                view.mode = ServiceMode.LOCAL
            view.process, view.pid, view.exit_code = event.status, event.pid, event.exit_code
            view.local_restarts = event.restarts
        case ForwardChanged(name=name):
            state.forwards[name] = event
            # "store:8080" forwarded on 127.0.0.2:8080: the services pane shows where
            service = name.rsplit(":", 1)[0]
            if service in state.services or not event.state.startswith("failed"):
                state.service(service).forward = (
                    "" if event.state.startswith("failed") else event.local
                )
        case SyncChanged(name=name):
            state.syncs[name] = event
        case ConnectionChanged(name=name, state=conn):
            state.connections[name] = conn
        case Notice(key=key):
            state.notices[key] = event
        case SessionInfo():
            state.session = event
        case _:
            pass
    return state
