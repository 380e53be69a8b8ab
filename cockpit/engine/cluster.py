"""The session's live view of its namespace: watches folded into ServiceChanged/ServiceRemoved,
the API connection state, Warning events and pod logs into the log stream, and the actions
on remote services (restart, delete a pod) with their rollout reported as it goes.

Wiring (engine or CLI)::

    kube = await asyncio.to_thread(Kube.load, kubeconfig, context)
    watcher = ClusterWatcher(kube, namespace, services, engine.publish, on_lines=engine.ingest)
    await watcher.start()      # raises NotFoundError / AccessDeniedError / ClusterError
    ...
    await watcher.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from cockpit.adapters.kube import ClusterSource, Listed, WatchHandle, WatchUpdate, suggest
from cockpit.core.events import ConnectionChanged, Event, Level, LogLine, Notice
from cockpit.core.kubemodel import (
    KINDS,
    EventOccurrences,
    NamespaceModel,
    PodView,
    ServiceView,
    diff_views,
    event_line,
    event_time,
    rollout_status,
)
from cockpit.core.rbac import NEEDED, DoctorReport, Permission
from cockpit.engine.logs import DEFAULT_TAIL, LineSink, PodLogs
from cockpit.errors import ClusterError, CockpitError, NotFoundError, UsageError

Publish = Callable[[Event], None]
PodsListener = Callable[[Mapping[str, Sequence[PodView]]], None]

API = "api"
EVENT_HISTORY = 600.0
"""Warning events at most this old when the session starts are shown; older ones are not."""
ROLLOUT_TIMEOUT = 300.0


class ClusterWatcher:
    """Watches one namespace for the session's services (None: every Service in it).

    Publishes ``ServiceChanged`` when a service's view changes, ``ServiceRemoved`` when its
    Service goes, and ``ConnectionChanged("api", "connected" | "disconnected")``. With
    ``on_lines`` it also follows the pods' logs and turns Warning events into log lines.
    """

    def __init__(
        self,
        source: ClusterSource,
        namespace: str,
        services: Collection[str] | None,
        publish: Publish,
        *,
        on_lines: LineSink | None = None,
        tail_lines: int = DEFAULT_TAIL,
        clock: Callable[[], float] = time.time,
        event_history: float = EVENT_HISTORY,
    ) -> None:
        self.source = source
        self.namespace = namespace
        self.model = NamespaceModel(services)
        self._publish = publish
        self._on_lines = on_lines
        self._clock = clock
        self._event_history = event_history
        self._views: dict[str, ServiceView] = {}
        self._occurrences = EventOccurrences()
        self._logs = (
            PodLogs(source, namespace, on_lines, tail_lines=tail_lines, clock=clock)
            if on_lines is not None
            else None
        )
        self._watch: WatchHandle | None = None
        self._kind_state: dict[str, str] = {}
        self._api_state = ""
        self._refresh_pending = False
        self._tick = asyncio.Event()
        self._pod_listeners: list[PodsListener] = []
        self._stopped = False

    # -- life --------------------------------------------------------------------------------

    @property
    def views(self) -> dict[str, ServiceView]:
        """The current view of each session service."""
        return dict(self._views)

    @property
    def api_state(self) -> str:
        return self._api_state

    @property
    def logs(self) -> PodLogs | None:
        return self._logs

    async def start(self) -> None:
        """List the namespace and start watching; raises NotFoundError for an unknown
        namespace or service, AccessDeniedError, or ClusterError when the API is away."""
        self._set_api("connecting")
        try:
            self._watch = await self.source.watch_namespace(
                self.namespace, self._on_updates, self._on_state, KINDS
            )
            await self._check_names()
        except CockpitError as exc:
            self._set_api(f"failed: {exc.message}")
            if self._watch is not None:
                await self._watch.stop()
                self._watch = None
            raise
        for kind in KINDS:
            self.model.replace(kind, self._watch.initial.get(kind, ()))
        self._set_api("connected")
        self._emit_events(self._watch.initial.get("events", ()), initial=True)
        self._refresh()

    async def _check_names(self) -> None:
        assert self._watch is not None
        names = {(s.get("metadata") or {}).get("name", "") for s in self._watch.initial["services"]}
        wanted = self.model.services or frozenset()
        missing = sorted(n for n in wanted if n not in names)
        if not names or missing:
            # An unknown namespace lists as empty: tell the two apart.
            exists = await self.source.call(self.source.namespace_exists, self.namespace)
            if exists is False:
                raise NotFoundError(
                    f"namespace '{self.namespace}' not found in context '{self.source.context}'"
                )
        if missing:
            raise NotFoundError(
                f"service '{missing[0]}' not found in namespace '{self.namespace}'",
                hint=suggest(missing[0], sorted(names)),
            )

    async def stop(self) -> None:
        """Stop watching and following; safe to call twice."""
        self._stopped = True
        if self._logs is not None:
            await self._logs.stop()
        if self._watch is not None:
            watch, self._watch = self._watch, None
            await watch.stop()

    def on_pods(self, listener: PodsListener) -> None:
        """Call ``listener`` with the pods of every session service, now (once started) and
        after each change: the one way to learn about new pods without another watch."""
        self._pod_listeners.append(listener)
        if self._watch is not None and not self._stopped:
            listener(self.model.pods_by_service(self._clock()))

    # -- folding -------------------------------------------------------------------------------

    def _on_updates(self, updates: Sequence[WatchUpdate]) -> None:
        if self._stopped:
            return
        events: list[dict[str, Any]] = []
        for update in updates:
            if isinstance(update, Listed):
                self.model.replace(update.kind, update.items)
                if update.kind == "events":
                    events.extend(update.items)
            else:
                self.model.apply(update.kind, update.change, update.obj)
                if update.kind == "events" and update.change != "DELETED":
                    events.append(update.obj)
        self._emit_events(events, initial=False)
        self._schedule_refresh()

    def _on_state(self, kind: str, state: str) -> None:
        if self._stopped:
            return
        self._kind_state[kind] = state
        down = [s for s in self._kind_state.values() if s != "connected"]
        if down:
            if self._api_state != "disconnected":
                reason = down[0].partition(": ")[2] or "connection lost"
                self._publish(
                    Notice(API, f"Kubernetes API unreachable ({reason}); retrying", Level.WARNING)
                )
            self._set_api("disconnected")
        else:
            if self._api_state == "disconnected":
                self._publish(Notice(API, "Kubernetes API reachable again"))
            self._set_api("connected")
            self._schedule_refresh()

    def _set_api(self, state: str) -> None:
        if state != self._api_state:
            self._api_state = state
            self._publish(ConnectionChanged(API, state))

    def _schedule_refresh(self) -> None:
        # Coalesce: a burst of watch events (a rollout) folds into one diff.
        if not self._refresh_pending:
            self._refresh_pending = True
            asyncio.get_running_loop().call_soon(self._refresh)

    def _refresh(self) -> None:
        self._refresh_pending = False
        if self._stopped:
            return
        now = self._clock()
        views = self.model.views(now)
        for event in diff_views(self._views, views):
            self._publish(event)
        self._views = views
        pods = self.model.pods_by_service(now)
        if self._logs is not None:
            self._logs.update(pods)
        for listener in self._pod_listeners:
            listener(pods)
        self._tick.set()

    def _emit_events(self, events: Sequence[Any], *, initial: bool) -> None:
        if self._on_lines is None:
            for event in events:
                self._occurrences.is_new(event)
            return
        now = self._clock()
        lines: list[LogLine] = []
        for event in sorted(events, key=lambda e: event_time(e) or 0.0):
            if event.get("type") != "Warning" or not self._occurrences.is_new(event):
                continue
            when = event_time(event)
            if initial and when is not None and now - when > self._event_history:
                continue
            for service in self.model.services_of_event(event)[:1]:
                lines.append(event_line(event, service, now))
        if lines:
            self._on_lines(lines)

    # -- queries -------------------------------------------------------------------------------

    def pods_of(self, service: str) -> list[PodView]:
        svc = self.model.service(service)
        if svc is None:
            raise NotFoundError(f"service '{service}' not found in namespace '{self.namespace}'")
        now = self._clock()
        return [self.model.pod_view(p, now) for p in self.model.selected_pods(svc)]

    async def wait_for(self, condition: Callable[[], bool], within: float) -> bool:
        """Wait until ``condition()`` holds after a model change; False after ``within`` s."""
        deadline = time.monotonic() + within
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._tick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), min(left, 1.0))
        return True

    # -- actions -------------------------------------------------------------------------------

    async def restart(self, service: str, *, within: float = ROLLOUT_TIMEOUT) -> str:
        """Rollout-restart the Deployments behind ``service`` and report progress as Notices
        (key ``restart:<service>``) until the rollout is complete; the final message."""
        view = self._views.get(service)
        if view is None:
            raise NotFoundError(
                f"service '{service}' not found in namespace '{self.namespace}'",
                hint=suggest(service, sorted(self._views)),
            )
        if not view.deployments:
            raise UsageError(
                f"service '{service}' is not backed by a Deployment: restart a pod instead"
            )
        key = f"restart:{service}"
        targets: dict[str, int] = {}
        for name in view.deployments:
            patched = await self.source.call(self.source.restart_deployment, self.namespace, name)
            targets[name] = int((patched.get("metadata") or {}).get("generation") or 0)
        self._publish(Notice(key, f"restarting {service}: rollout started"))
        started = time.monotonic()
        last_text = ""

        def progress() -> bool:
            nonlocal last_text
            texts, done, failed = [], True, False
            for name, generation in targets.items():
                deploy = self.model.objects["deployments"].get(name)
                if deploy is None:
                    texts.append(f"{name}: deleted")
                    failed = True
                    continue
                if int((deploy.get("metadata") or {}).get("generation") or 0) < generation:
                    texts.append(f"{name}: waiting for the rollout to start")
                    done = False
                    continue
                status = rollout_status(deploy)
                # "store: 1 of 2 new pods available" reads "restarting store: 1 of 2 ..."
                texts.append(status.text.removeprefix(f"{service}: "))
                done = done and status.done
                failed = failed or status.failed
            text = "; ".join(texts)
            if text != last_text and not done:
                last_text = text
                self._publish(Notice(key, f"restarting {service}: {text}"))
            if failed:
                raise ClusterError(f"restart of {service} failed: {text}")
            return done

        try:
            finished = await self.wait_for(progress, within)
        except ClusterError as exc:
            self._publish(Notice(key, exc.message, Level.ERROR))
            raise
        if not finished:
            message = f"restart of {service} not done after {within:.0f} s: {last_text}"
            self._publish(Notice(key, message, Level.ERROR))
            raise ClusterError(message)
        view = self._views.get(service)
        ready = f" ({view.ready}/{view.total} ready)" if view is not None else ""
        message = f"restarted {service} in {time.monotonic() - started:.1f} s{ready}"
        self._publish(Notice(key, message))
        return message

    async def delete_pod(
        self, pod: str, *, service: str | None = None, within: float = ROLLOUT_TIMEOUT
    ) -> str:
        """Delete one pod of a session service (of ``service`` when given) and report until
        its service is whole again."""
        owner = next((s for s, v in self._views.items() if pod in v.pods), None)
        if owner is None:
            raise NotFoundError(f"pod '{pod}' is not a pod of this session's services")
        if service is not None and owner != service:
            raise NotFoundError(f"pod '{pod}' is a pod of {owner}, not of {service}")
        key = f"restart:{owner}"
        await self.source.call(self.source.delete_pod, self.namespace, pod)
        self._publish(Notice(key, f"deleted pod {pod}; waiting for {owner} to be ready"))
        started = time.monotonic()

        def whole() -> bool:
            view = self._views.get(owner)
            return view is not None and pod not in view.pods and 0 < view.ready == view.total

        if not await self.wait_for(whole, within):
            message = f"{owner} not ready {within:.0f} s after deleting pod {pod}"
            self._publish(Notice(key, message, Level.ERROR))
            raise ClusterError(message)
        view = self._views[owner]
        message = (
            f"replaced pod {pod} of {owner} in {time.monotonic() - started:.1f} s "
            f"({view.ready}/{view.total} ready)"
        )
        self._publish(Notice(key, message))
        return message


async def doctor(
    source: ClusterSource, namespace: str, permissions: Sequence[Permission] = NEEDED
) -> DoctorReport:
    """Check the API is reachable, the namespace exists and every permission cockpit needs
    (SelfSubjectAccessReview each). Raises ClusterError when the API cannot be reached."""
    version = await source.call(source.server_version)
    exists, checks = await asyncio.gather(
        source.call(source.namespace_exists, namespace),
        source.call(source.review_access, namespace, permissions),
    )
    return DoctorReport(
        context=source.context,
        server=source.server,
        namespace=namespace,
        version=version,
        namespace_exists=exists,
        checks=tuple(checks),
        user=getattr(source, "identity", ""),
    )
