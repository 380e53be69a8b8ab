"""What the screen shows about the session, folded from engine events.

Applying an event only updates a dict and marks a part dirty; the app redraws dirty parts
on its next tick, so a burst of superseding updates (forward byte counters, sync progress,
pod readiness) costs one redraw, not one per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cockpit.core.events import (
    Alert,
    CommandResult,
    ConnectionChanged,
    Event,
    ForwardChanged,
    Level,
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

MAX_ALERTS = 500
NOTICE_SECONDS = 15.0  # how long the status bar shows a notice

# Parts of the screen; each is redrawn when its name is in SessionView.dirty.
SERVICES = "services"
FORWARDS = "forwards"
SYNC = "sync"
STATUS = "status"
ALERTS = "alerts"


@dataclass(slots=True)
class ServiceRow:
    """A service as the services pane shows it: the cluster's view plus the local process."""

    name: str
    mode: ServiceMode = ServiceMode.REMOTE
    ready: int = 0
    total: int = 0
    restarts: int = 0
    forward: str = ""
    reasons: tuple[str, ...] = ()
    process: ProcessStatus | None = None  # only for a service running locally
    pid: int | None = None
    exit_code: int | None = None
    process_restarts: int = 0
    in_cluster: bool = False  # a ServiceChanged was seen for it

    @property
    def is_local(self) -> bool:
        return self.process is not None or self.mode is not ServiceMode.REMOTE


@dataclass(slots=True)
class SessionView:
    info: SessionInfo | None = None
    services: dict[str, ServiceRow] = field(default_factory=dict)
    forwards: dict[str, ForwardChanged] = field(default_factory=dict)
    syncs: dict[str, SyncChanged] = field(default_factory=dict)
    connections: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    notices: dict[str, Notice] = field(default_factory=dict)
    # Notices not yet shown; same key supersedes (only the newest text is shown).
    fresh_notices: dict[str, Notice] = field(default_factory=dict)
    notice_times: dict[str, float] = field(default_factory=dict)  # when each key last spoke
    dirty: set[str] = field(default_factory=set)
    now: Callable[[], float] = time.monotonic

    def current_notice(self, max_age: float = NOTICE_SECONDS) -> Notice | None:
        """The newest notice, while it is fresh enough to be news."""
        if not self.notices:
            return None
        key, notice = next(reversed(self.notices.items()))
        if self.now() - self.notice_times.get(key, 0.0) > max_age:
            return None
        return notice

    def apply(self, event: Event) -> None:
        """Fold one event in (log batches are the log pane's business, not this view's)."""
        if isinstance(event, ServiceChanged):
            row = self._row(event.service)
            # the cluster only knows "remote": it must not undo local or intercepted
            if row.process is None or event.mode is not ServiceMode.REMOTE:
                row.mode = event.mode
            row.ready = event.ready
            row.total = event.total
            row.restarts = event.restarts
            row.reasons = event.reasons
            if event.forward:
                row.forward = event.forward
            row.in_cluster = True
            self.dirty.add(SERVICES)
        elif isinstance(event, ProcessChanged):
            row = self._row(event.service)
            row.process = event.status
            row.pid = event.pid
            row.exit_code = event.exit_code
            row.process_restarts = event.restarts
            if row.mode is ServiceMode.REMOTE:
                row.mode = ServiceMode.LOCAL
            self.dirty.add(SERVICES)
        elif isinstance(event, ServiceRemoved):
            if self.services.pop(event.service, None) is not None:
                self.dirty.add(SERVICES)
        elif isinstance(event, ForwardChanged):
            self.forwards[event.name] = event
            self.dirty.add(FORWARDS)
            service = event.name.rsplit(":", 1)[0]
            if service in self.services:
                down = event.state.startswith("failed") or event.state == "stopped"
                self.services[service].forward = "" if down else event.local
                self.dirty.add(SERVICES)
        elif isinstance(event, SyncChanged):
            self.syncs[event.name] = event
            self.dirty.add(SYNC)
        elif isinstance(event, ConnectionChanged):
            self.connections[event.name] = event.state
            self.dirty.add(STATUS)
        elif isinstance(event, SessionInfo):
            self.info = event
            if event.service:
                self._row(event.service)
            self.dirty.update((STATUS, SERVICES))
        elif isinstance(event, Alert):
            self.add_alert(event)
        elif isinstance(event, Notice):
            self.notices.pop(event.key, None)  # re-insert: the newest notice is the last
            self.notices[event.key] = event
            self.notice_times[event.key] = self.now()
            self.fresh_notices[event.key] = event
            self.dirty.add(STATUS)
        elif isinstance(event, LogBatch | CommandResult):
            pass  # logs go to the log pane; results are answered to submit()

    def add_alert(self, alert: Alert) -> None:
        self.alerts.pop(alert.key, None)  # re-insert: dict order is "last seen" order
        self.alerts[alert.key] = alert
        while len(self.alerts) > MAX_ALERTS:
            del self.alerts[next(iter(self.alerts))]
        self.dirty.update((ALERTS, SERVICES))

    def add_failure(self, key: str, service: str, title: str, now: float) -> Alert:
        """Record a refused action as an alert (same action again counts up)."""
        previous = self.alerts.get(key)
        if previous is None:
            alert = Alert(
                key=key,
                service=service,
                title=title,
                detail=title,
                level=Level.ERROR,
                count=1,
                first_seen=now,
                last_seen=now,
            )
        else:
            alert = replace(
                previous, title=title, detail=title, count=previous.count + 1, last_seen=now
            )
        self.add_alert(alert)
        return alert

    def alerts_newest_first(self) -> list[Alert]:
        return sorted(self.alerts.values(), key=lambda alert: alert.last_seen, reverse=True)

    def alert_count(self, service: str) -> int:
        return sum(1 for alert in self.alerts.values() if alert.service == service)

    def service_rows(self) -> list[ServiceRow]:
        """The session's own (local) service first, then the rest by name."""
        local = self.info.service if self.info else ""
        return sorted(self.services.values(), key=lambda row: (row.name != local, row.name))

    def take_notices(self) -> list[Notice]:
        fresh = list(self.fresh_notices.values())
        self.fresh_notices.clear()
        return fresh

    def _row(self, name: str) -> ServiceRow:
        row = self.services.get(name)
        if row is None:
            row = self.services[name] = ServiceRow(name)
        return row
