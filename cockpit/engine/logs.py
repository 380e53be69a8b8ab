"""Follows the logs of every container of the session's pods into the one log stream.

New pods are attached and gone pods dropped as the cluster model changes; a stream that
breaks resumes where it stopped (``LogCursor``: no gap, no duplicate); a restarted
container's previous instance is shown when it was missed (``previous=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cockpit.adapters.kube import ClusterSource, LogChunks
from cockpit.core.backoff import Backoff
from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.kubemodel import ContainerView, PodView
from cockpit.core.podlog import LogCursor, LogSplitter
from cockpit.errors import CockpitError, NotFoundError

log = logging.getLogger(__name__)

LineSink = Callable[[Sequence[LogLine]], None]
"""Receives lines in the order read, a chunk at a time; must not block."""

DEFAULT_TAIL = 20
"""Lines shown of a container that was already running when the session started."""
PREVIOUS_TAIL = 20
"""Lines shown of a restarted container's previous instance when it was not followed."""
GONE_GRACE = 15.0
"""How long a deleted pod's stream may keep draining before it is cut."""


@dataclass(eq=False)
class _Container:
    """One followed container: what the model last said about it, and the follow task."""

    pod: str
    name: str
    service: str
    existed_at_start: bool
    view: ContainerView | None = None
    deleting: bool = False  # the pod is being deleted: its containers are stopping
    gone: bool = False
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stream: LogChunks | None = None
    streamed: set[str] = field(default_factory=set)  # instances whose output was read
    finished: set[str] = field(default_factory=set)  # instances read to their end
    restarts_seen: int | None = None

    @property
    def source(self) -> str:
        return f"{self.pod}/{self.name}"

    def touch(self) -> None:
        self.version += 1
        self.changed.set()

    async def wait_change(self, version: int, within: float | None = None) -> None:
        """Wait until the model says something new about this container (or ``within`` s)."""
        while self.version == version:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), within)
            except TimeoutError:
                return


class PodLogs:
    """The log follower: ``update()`` with the pods of each service after every model change;
    lines go to ``on_lines``."""

    def __init__(
        self,
        source: ClusterSource,
        namespace: str,
        on_lines: LineSink,
        *,
        tail_lines: int = DEFAULT_TAIL,
        previous_lines: int = PREVIOUS_TAIL,
        gone_grace: float = GONE_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._namespace = namespace
        self._on_lines = on_lines
        self._tail = tail_lines
        self._previous = previous_lines
        self._gone_grace = gone_grace
        self._clock = clock
        self._containers: dict[tuple[str, str], _Container] = {}
        self._started = False
        self._stopped = False
        self.lines_received = 0

    @property
    def following(self) -> list[str]:
        """``pod/container`` of every stream being followed."""
        return sorted(c.source for c in self._containers.values() if c.task and not c.task.done())

    def update(self, pods_by_service: Mapping[str, Sequence[PodView]]) -> None:
        """The pods of each session service as the model sees them now."""
        if self._stopped:
            return
        initial = not self._started
        self._started = True
        present: set[tuple[str, str]] = set()
        for service in sorted(pods_by_service):
            for pod in pods_by_service[service]:
                for name in pod.spec_containers:
                    key = (pod.name, name)
                    if key in present:
                        continue  # a pod two services select: followed once
                    present.add(key)
                    entry = self._containers.get(key)
                    if entry is None:
                        entry = _Container(pod.name, name, service, existed_at_start=initial)
                        self._containers[key] = entry
                        entry.view = pod.container(name)
                        entry.task = asyncio.create_task(
                            self._follow(entry), name=f"logs {entry.source}"
                        )
                    else:
                        entry.view = pod.container(name)
                        entry.gone = False
                    entry.deleting = pod.deleting
                    entry.touch()
        for key, entry in list(self._containers.items()):
            if key not in present and not entry.gone:
                entry.gone = True
                entry.touch()
                asyncio.get_running_loop().call_later(self._gone_grace, self._cut, entry)

    def _cut(self, entry: _Container) -> None:
        if entry.gone and entry.task is not None and not entry.task.done():
            entry.task.cancel()

    async def stop(self) -> None:
        self._stopped = True
        tasks = [c.task for c in self._containers.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._containers.clear()

    # -- one container ------------------------------------------------------------------------

    def _emit(self, lines: list[LogLine]) -> None:
        if lines:
            self.lines_received += len(lines)
            self._on_lines(lines)

    def _note(self, entry: _Container, text: str, level: Level = Level.WARNING) -> None:
        line = LogLine(
            entry.source, entry.service, SourceKind.COCKPIT, text, self._clock(), level=level
        )
        self._on_lines([line])

    async def _follow(self, entry: _Container) -> None:
        try:
            await self._follow_loop(entry)
        except asyncio.CancelledError:
            pass
        except Exception:  # one container's follower failing must not take others down
            log.exception("log follower %s failed", entry.source)
        finally:
            # A container that is still there keeps its (finished) entry, so a later update
            # does not attach it again from the start.
            if entry.gone:
                self._containers.pop((entry.pod, entry.name), None)

    async def _follow_loop(self, entry: _Container) -> None:
        cursor = LogCursor()
        splitter = LogSplitter(entry.source, entry.service, cursor)
        backoff = Backoff(initial=0.2, maximum=5.0, factor=2.0, jitter=0.2, reset_after=10.0)
        tail: int | None = self._tail if entry.existed_at_start else None
        # Where a stream that broke before its first line resumes: when the server first
        # answered (a tail start skipped what was before; a retried tail would skip more).
        attached = ""
        first = True
        while True:
            version = entry.version
            view = entry.view
            if view is None or not view.has_output:
                if entry.gone:
                    return
                await entry.wait_change(version)
                continue
            self._note_restart(entry, view)
            missed = view.last_container_id
            if missed and missed not in entry.streamed and missed != view.log_instance:
                await self._show_previous(entry, view, cursor, first)
            first = False
            instance = view.log_instance
            if instance in entry.finished:
                if entry.gone:
                    return
                await entry.wait_change(version)
                continue
            try:
                since = cursor.resume() or attached
                stream = await self._source.follow_log(
                    self._namespace,
                    entry.pod,
                    entry.name,
                    since_time=since,
                    tail_lines=None if since else tail,
                )
            except NotFoundError:
                return  # the pod is gone for good
            except CockpitError as exc:
                # Not startable yet (ContainerCreating), or the API server is away.
                log.debug("log %s: %s", entry.source, exc.message)
                if entry.gone:
                    return
                await entry.wait_change(version, backoff.next_delay(time.monotonic()))
                continue
            entry.streamed.add(instance)
            entry.stream = stream
            if tail is not None and not attached:
                attached = stream.server_time
            broke = False
            try:
                async for chunks in stream:
                    lines: list[LogLine] = []
                    for chunk in chunks:
                        lines.extend(splitter.feed(chunk))
                    self._emit(lines)
            except CockpitError as exc:
                log.debug("log %s broke: %s", entry.source, exc.message)
                broke = True
            finally:
                entry.stream = None
                await stream.aclose()
            if broke:
                splitter.reset()  # a partial last line comes again, whole, on resume
                if entry.gone:
                    return
                await asyncio.sleep(backoff.next_delay(time.monotonic()))
                continue
            backoff.reset()
            self._emit(splitter.finish())
            self._drop_foreign(entry, splitter)
            latest = entry.view
            if (
                latest is None
                or latest.log_instance != instance
                or latest.state != "running"
                or entry.deleting
            ):
                entry.finished.add(instance)
            elif entry.gone:
                return
            else:
                # The stream ended while the pod status still says running: the status lags
                # the container's exit. Look again when it changes, or soon.
                await entry.wait_change(entry.version, 1.0)

    @staticmethod
    def _drop_foreign(entry: _Container, splitter: LogSplitter) -> None:
        for text in splitter.foreign:
            log.debug("log %s: from the kubelet: %s", entry.source, text)
        splitter.foreign.clear()

    def _note_restart(self, entry: _Container, view: ContainerView) -> None:
        if entry.restarts_seen is not None and view.restarts > entry.restarts_seen:
            why = view.last_reason or "exited"
            code = f", exit code {view.last_exit_code}" if view.last_exit_code is not None else ""
            self._note(
                entry, f"container {entry.name} restarted ({why}{code}), restart #{view.restarts}"
            )
        entry.restarts_seen = view.restarts

    async def _show_previous(
        self, entry: _Container, view: ContainerView, cursor: LogCursor, first: bool
    ) -> None:
        """The last lines of an instance that ended without being followed."""
        entry.streamed.add(view.last_container_id)
        if first or not cursor.started:
            # At attach: a separate cursor, the previous instance's tail, then the current one.
            splitter = LogSplitter(entry.source, entry.service, LogCursor(), stream="previous")
            since, tail = "", self._previous
        else:
            splitter = LogSplitter(entry.source, entry.service, cursor, stream="previous")
            since, tail = cursor.resume(), None
        try:
            stream = await self._source.follow_log(
                self._namespace,
                entry.pod,
                entry.name,
                follow=False,
                previous=True,
                since_time=since,
                tail_lines=tail,
            )
        except CockpitError as exc:
            log.debug("previous log %s: %s", entry.source, exc.message)
            return
        why = view.last_reason or "exited"
        self._note(entry, f"last lines of the previous {entry.name} container ({why}):", Level.INFO)
        try:
            async for chunks in stream:
                lines: list[LogLine] = []
                for chunk in chunks:
                    lines.extend(splitter.feed(chunk))
                self._emit(lines)
            self._emit(splitter.finish())
            self._drop_foreign(entry, splitter)
        except CockpitError as exc:
            log.debug("previous log %s broke: %s", entry.source, exc.message)
        finally:
            await stream.aclose()
