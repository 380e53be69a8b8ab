"""The Engine: one hybrid session behind the EngineFacade (for now, its local service)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from cockpit.adapters.protocols import ProcessFactory
from cockpit.core.alerts import AlertRules
from cockpit.core.commands import (
    Command,
    InterceptMode,
    Quit,
    Restart,
    SetFilter,
    ToggleForward,
    ToggleIntercept,
)
from cockpit.core.config import CockpitConfig
from cockpit.core.events import (
    CommandResult,
    ConnectionChanged,
    Event,
    Level,
    LogBatch,
    LogLine,
    Notice,
    ServiceChanged,
    ServiceMode,
    SessionInfo,
    SourceKind,
)
from cockpit.core.logring import LogRing
from cockpit.core.pipeline import LogPipeline
from cockpit.core.query import Query, QueryError, parse_query
from cockpit.core.state import SessionState, reduce
from cockpit.engine.batcher import FLUSH_INTERVAL_SECONDS, MAX_BATCH_LINES, LogBatcher
from cockpit.engine.bus import EventBus, Subscription
from cockpit.engine.forwards import TunnelSource
from cockpit.engine.hooks import InterceptHooks
from cockpit.engine.intercept import InterceptSession
from cockpit.engine.reloader import LocalReloader
from cockpit.engine.supervisor import LocalSupervisor
from cockpit.errors import CockpitError


class ClusterLink(Protocol):
    """What a session holds open in the cluster while it runs: forwards, watches, log
    follows. ``env`` is the local process's environment imported from its Deployment."""

    @property
    def env(self) -> Mapping[str, str]: ...

    async def restart(self, service: str) -> str:
        """Rollout-restart a cluster service, publishing progress Notices (key
        ``restart:<service>``) until it is done; the final message, or a CockpitError."""
        ...

    async def delete_pod(self, service: str, pod: str) -> str:
        """Replace one pod of ``service`` and report until the service is whole again."""
        ...

    async def stop(self) -> None: ...

    async def toggle_forward(self, service: str) -> str:
        """Stop ``service``'s port-forward listeners, or (all stopped) listen again at the
        same addresses; a one-line summary. NotFoundError when it has no forward."""
        ...

    def use_tunnel(self, tunnel: TunnelSource | None) -> None:
        """Send new outbound connections through ``tunnel`` while it is up (else, and with
        None, through port-forwards); the local process's addresses stay the same."""
        ...


ClusterStarter = Callable[["Engine"], Awaitable[ClusterLink]]
"""Connects a session to the cluster (raises a CockpitError, having undone its part, if it
cannot); the engine passes itself so the link can publish events and ingest log lines."""

COCKPIT_SOURCE = "cockpit"
CLEANUP_NOTICE = "cleanup"  # Notice key of each teardown step
NO_CLUSTER_YET = "cockpit does not connect to the cluster yet; only the local service runs"


def session_environment(
    base: Mapping[str, str], service_env: Mapping[str, str], *, session_id: str, service: str
) -> dict[str, str]:
    """The local process's environment: cockpit's own, its session markers, then cockpit.yaml's."""
    env = dict(base)
    # Output reaches cockpit through a pipe; an unbuffered Python shows each line as it happens.
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(COCKPIT_SESSION=session_id, COCKPIT_SERVICE=service, COCKPIT_LOCAL="1")
    env.update(service_env)
    return env


class Engine:
    """A running session: supervises the local service and publishes what happens.

    Everything a consumer sees comes through ``events()``; ``state`` is the same stream
    folded by ``cockpit.core.state.reduce``, for a consumer that starts late. Commands go
    through ``submit`` and are answered with a ``CommandResult`` (also published).
    """

    def __init__(
        self,
        config: CockpitConfig,
        service: str,
        *,
        process_factory: ProcessFactory,
        base_env: Mapping[str, str],
        context: str = "",
        namespace: str = "",
        session_id: str | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
        batch_lines: int = MAX_BATCH_LINES,
        ring: LogRing | None = None,
        subscriber_max_events: int = 1_000,
        subscriber_max_lines: int = 20_000,
        intercept: Callable[[str, Callable[[Event], None]], InterceptSession] | None = None,
        intercept_mode: InterceptMode | None = None,
        cluster: ClusterStarter | None = None,
        hot_reload: bool = False,
    ) -> None:
        local = config.local_service(service)  # a ConfigError names the file and line
        self.config = config
        self.service = service
        self.session_id = session_id or secrets.token_hex(4)
        self.context = context
        self.namespace = namespace or config.namespace or "default"
        self._clock = clock
        self._ring = ring if ring is not None else LogRing()  # an empty ring is falsy
        self._pipeline = LogPipeline(self._ring, AlertRules())
        self._bus = EventBus(
            max_events=subscriber_max_events,
            max_lines=subscriber_max_lines,
            max_batch_lines=batch_lines,
        )
        self._batcher = LogBatcher(
            self._publish_now,
            lambda: self._ring.dropped,
            interval=flush_interval,
            max_lines=batch_lines,
        )
        self._state = SessionState()
        self._filter = Query("")  # matches every line
        self._commands: set[asyncio.Task[CommandResult]] = set()
        self._started = False
        self._stopping: asyncio.Task[None] | None = None
        self.quit_requested = asyncio.Event()
        # (session id, publish) -> the intercept of this service, built when first needed
        # (blocking: it reads the kubeconfig); started with the session when a mode is given.
        self._intercept_factory = intercept
        self._intercept_mode = intercept_mode
        self._intercept: InterceptSession | None = None
        self._intercept_lock = asyncio.Lock()
        self._cluster_starter = cluster
        self._cluster: ClusterLink | None = None
        self._base_env = dict(base_env)
        self._local_env = dict(local.env)
        cwd = os.path.join(config.base_dir, local.cwd)
        env = session_environment(base_env, local.env, session_id=self.session_id, service=service)
        self._supervisor = LocalSupervisor(
            service, local, cwd=cwd, env=env, factory=process_factory, bus=self
        )
        self._hooks = InterceptHooks(service, local.hooks, self._supervisor, self)
        # Hot reload watches real files: on for `cockpit up` (cockpit.yaml's watch.enabled).
        self._reloader = (
            LocalReloader(self._supervisor, local.watch, cwd=cwd, bus=self)
            if hot_reload and local.watch.enabled
            else None
        )

    # -- the facade ---------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def ring(self) -> LogRing:
        """Every line kept so far (a consumer that fell behind re-reads from here)."""
        return self._ring

    @property
    def filter(self) -> Query:
        """The log filter last set with ``SetFilter``."""
        return self._filter

    def events(self) -> Subscription:
        """Every event published from now on, until the engine stops."""
        return self._bus.subscribe()

    async def start(self) -> None:
        """Start the session; raises a CockpitError (after cleaning up) if the local service
        cannot be started."""
        if self._started:
            return
        self._started = True
        self.publish(SessionInfo(self.session_id, self.context, self.namespace, self.service))
        if self._cluster_starter is None:  # a session without a cluster: say so
            self.publish(ConnectionChanged("api", "disconnected"))
        self.publish(ConnectionChanged("agent", "disconnected"))
        self._batcher.start()
        try:
            if self._cluster_starter is not None:
                await self._connect_cluster(self._cluster_starter)
            else:
                self.say(
                    f"no kubeconfig context: {self.service} runs here without the cluster "
                    "(set KUBECONFIG, or context: in cockpit.yaml)",
                    Level.WARNING,
                )
            await self._supervisor.start()
            if self._reloader is not None:
                await self._reloader.start()
            if self._intercept_mode is not None:
                await self._start_intercept(self._intercept_mode)
        except BaseException:
            await self.stop()
            raise

    async def _connect_cluster(self, starter: ClusterStarter) -> None:
        """Forwards and the imported environment come before the local process starts."""
        self.publish(ConnectionChanged("api", "connecting"))
        self.publish(Notice("cluster", f"connecting to namespace {self.namespace}"))
        try:
            self._cluster = await starter(self)
        except BaseException:
            self.publish(ConnectionChanged("api", "disconnected"))
            raise
        self.publish(ConnectionChanged("api", "connected"))
        imported = dict(self._cluster.env)
        # cockpit.yaml's own env wins over what the Deployment says
        env = session_environment(
            {**self._base_env, **imported},
            self._local_env,
            session_id=self.session_id,
            service=self.service,
        )
        self._supervisor.set_env(env)
        self.say(f"{self.service}: {len(imported)} variables imported from the cluster")

    async def stop(self) -> None:
        """Stop everything the session started; safe to call twice, shielded from cancellation."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._teardown())
        await asyncio.shield(self._stopping)

    async def submit(self, command: Command) -> CommandResult:
        if self._stopping is not None or not self._started:
            result = self._result(command, False, "the session is not running")
        else:
            task = asyncio.create_task(self._execute(command), name=f"command {command.name}")
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # the caller was cancelled: the command goes on
                result = self._result(command, False, "cancelled: the session is stopping")
        self.publish(result)
        return result

    # -- SessionBus (what the supervisor uses) ------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def publish(self, event: Event) -> None:
        if not isinstance(event, LogBatch):
            self._batcher.flush()  # lines written before an event are seen before it
        self._publish_now(event)

    def _publish_now(self, event: Event) -> None:
        self._state = reduce(self._state, event)
        self._bus.publish(event)

    def ingest(self, lines: Sequence[LogLine]) -> None:
        stored, alerts = self._pipeline.ingest(lines)
        self._batcher.add(stored)
        for alert in alerts:
            self.publish(alert)  # after its line (publish flushes the batch first)

    def end_of_stream(self) -> None:
        for alert in self._pipeline.flush():
            self.publish(alert)

    def say(self, text: str, level: Level = Level.INFO) -> int:
        line = LogLine(COCKPIT_SOURCE, "", SourceKind.COCKPIT, text, self._clock(), level=level)
        # Straight into the ring: cockpit raises its own alerts, the rules must not add more.
        stored = self._ring.append(line)
        self._batcher.add([stored])
        return stored.seq

    def alert(
        self, key: str, service: str, title: str, detail: str, level: Level, log_seq: int
    ) -> None:
        rules = self._pipeline.rules
        self.publish(rules.raise_alert(key, service, title, detail, level, self._clock(), log_seq))

    # -- internals --------------------------------------------------------------------------

    async def _execute(self, command: Command) -> CommandResult:
        try:
            return await self._dispatch(command)
        except CockpitError as exc:
            return self._result(command, False, exc.one_line())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the session down with it
            self.say(f"{command.name} failed: {type(exc).__name__}: {exc}", Level.ERROR)
            return self._result(command, False, f"{command.name} failed: {exc}")

    async def _dispatch(self, command: Command) -> CommandResult:
        if isinstance(command, Restart):
            return await self._restart(command)
        if isinstance(command, SetFilter):
            parsed = parse_query(command.query)
            if isinstance(parsed, QueryError):
                return self._result(command, False, f"filter: {parsed.message}")
            self._filter = parsed
            message = f"filter: {command.query}" if command.query.strip() else "filter cleared"
            return self._result(command, True, message)
        if isinstance(command, ToggleIntercept):
            return await self._toggle_intercept(command)
        if isinstance(command, ToggleForward):
            return await self._toggle_forward(command)
        if isinstance(command, Quit):
            self.quit_requested.set()
            return self._result(command, True, "quitting")
        return self._result(command, False, f"unknown command {command.name}")

    async def _restart(self, command: Restart) -> CommandResult:
        target = command.service or self.service
        if target != self.service:
            if self._cluster is not None:  # it runs in the cluster: restart it there
                self.say(f"restarting {target} in the cluster (asked for)")
                if command.pod:
                    message = await self._cluster.delete_pod(target, command.pod)
                else:
                    message = await self._cluster.restart(target)
                self.say(message)
                return self._result(command, True, message)
            if target in self.config.services:
                message = (
                    f"cannot restart {target}: it runs in the cluster and this session "
                    "is not connected to one"
                )
            else:
                message = (
                    f"no service {target!r} (known: {', '.join(sorted(self.config.services))})"
                )
            return self._result(command, False, message)
        if command.pod:
            message = f"{target} runs here: restart it without a pod"
            return self._result(command, False, message)
        self.say(f"restarting {target} (asked for)")
        pid = await self._supervisor.restart()
        return self._result(command, True, f"restarted {target} (pid {pid})")

    async def _toggle_forward(self, command: ToggleForward) -> CommandResult:
        if self._cluster is None:
            message = "port-forwards are not available: this session has no cluster connection"
            return self._result(command, False, message)
        if command.service in ("", self.service):
            message = f"{self.service} runs here: select a cluster service to toggle its forward"
            return self._result(command, False, message)
        message = await self._cluster.toggle_forward(command.service)
        self.say(message)
        return self._result(command, True, message)

    async def _toggle_intercept(self, command: ToggleIntercept) -> CommandResult:
        if self._intercept_factory is None:
            return self._result(command, False, f"intercept is not available: {NO_CLUSTER_YET}")
        if command.service not in ("", self.service):
            message = f"only {self.service}, the service running here, can be intercepted"
            return self._result(command, False, message)
        async with self._intercept_lock:
            if self._intercept is None:
                if command.on is False:
                    return self._result(command, True, f"{self.service}: intercept off")
                # The first intercept deploys the agent and points the Service at it.
                intercept = await self._start_intercept(command.mode)
                return self._result(command, True, f"{self.service}: {intercept.describe()}")
        was_on = self._intercept.mode is not None
        result = await self._intercept.toggle(command.mode, command.on)
        self._publish_mode()
        if (self._intercept.mode is not None) != was_on:
            self._hooks.changed(not was_on)
        return self._result(command, result.ok, result.message)

    def _publish_mode(self) -> None:
        """The services pane shows whether the cluster's traffic for the service comes here."""
        current = self._intercept.mode if self._intercept is not None else None
        mode = {
            "global": ServiceMode.INTERCEPT_GLOBAL,
            "personal": ServiceMode.INTERCEPT_PERSONAL,
        }.get(current or "", ServiceMode.LOCAL)
        view = self._state.services.get(self.service)
        if view is None:
            self.publish(ServiceChanged(self.service, mode=mode))
            return
        self.publish(
            ServiceChanged(
                self.service,
                mode=mode,
                ready=view.ready,
                total=view.total,
                restarts=view.restarts,
                reasons=view.reasons,
                forward=view.forward,
            )
        )

    async def _start_intercept(self, mode: InterceptMode) -> InterceptSession:
        assert self._intercept_factory is not None
        intercept = await asyncio.to_thread(self._intercept_factory, self.session_id, self.publish)
        await intercept.start(mode)  # a CockpitError leaves the cluster as it was
        self._intercept = intercept
        if self._cluster is not None:
            # Outbound calls take the intercept's SSH connection while it is up.
            self._cluster.use_tunnel(lambda: intercept.link)
        self._publish_mode()
        self._hooks.changed(True)
        return intercept

    def _result(self, command: Command, ok: bool, message: str) -> CommandResult:
        return CommandResult(command.name, ok, message, command.request_id)

    async def _teardown(self) -> None:
        for task in list(self._commands):
            task.cancel()
        for task in list(self._commands):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            if self._intercept is not None:
                # Traffic back to the cluster before the local process goes away.
                self._cleanup_step(
                    f"removing the intercept of {self.service}, giving the Service back"
                )
                was_on = self._intercept.mode is not None
                if self._cluster is not None:
                    self._cluster.use_tunnel(None)
                await self._intercept.stop()
                if was_on:
                    self._hooks.changed(False)
            await self._hooks.wait()
            if self._reloader is not None:
                await self._reloader.stop()  # no reload may restart what is being stopped
            self._cleanup_step(f"stopping the local process {self.service}")
            await self._supervisor.stop()
            if self._cluster is not None:
                self._cleanup_step("closing port-forwards and watches")
                await self._cluster.stop()
                self.publish(ConnectionChanged("api", "disconnected"))
            self.say(f"session {self.session_id} stopped")
            self._cleanup_step(f"done: session {self.session_id} stopped")
        finally:
            await self._batcher.stop()
            self._bus.close()

    def _cleanup_step(self, text: str) -> None:
        """Teardown progress: the UI's quit screen and headless output show each step."""
        self.publish(Notice(CLEANUP_NOTICE, text))
