"""Hot reload of the session's local service: a debounced batch of file changes restarts the
process (or runs the configured reload command), with its progress as ``SyncChanged`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cockpit.core.config import WatchSettings
from cockpit.core.events import Level, ProcessStatus, SyncChanged
from cockpit.core.watchrules import ChangeKind, FileChange, WatchRules, summarize
from cockpit.engine.filewatch import ChangeBatch, FileWatcher
from cockpit.engine.supervisor import LocalSupervisor, SessionBus, command_text, describe_exit
from cockpit.errors import CockpitError

# A restarted process without a port that is still running after this long has started.
START_SETTLE_SECONDS = 1.0

Failure = tuple[str, str, bool]
"""Why a reload failed: (one-line reason, detail with the last output lines, raise an alert)."""


def reload_name(service: str) -> str:
    """The sync pane's row of a service's hot reload."""
    return f"{service} (reload)"


def _changed_bytes(batch: ChangeBatch) -> int:
    """The size of the files a batch added or changed (what a reload picks up)."""
    total = 0
    for change in batch.changes:
        if change.kind is ChangeKind.DELETED:
            continue
        with contextlib.suppress(OSError):  # gone again since
            total += os.stat(batch.absolute(change)).st_size
    return total


def drop_stale_bytecode(batch: ChangeBatch) -> int:
    """Delete the cached bytecode of the changed Python files; how many files went.

    Python trusts a ``__pycache__`` entry whose source has the same size and the same mtime in
    whole seconds, so an edit that keeps the size within a second of the last import would
    restart into the old code.
    """
    dropped = 0
    for change in batch.changes:
        source = Path(batch.absolute(change))
        if source.suffix != ".py":
            continue
        for cached in (source.parent / "__pycache__").glob(f"{glob.escape(source.stem)}.*.pyc"):
            with contextlib.suppress(OSError):
                cached.unlink()
                dropped += 1
    return dropped


class LocalReloader:
    """Watches the local service's files; each batch of changes reloads it once.

    Changes that arrive during a reload are merged by the watcher into the next batch, so a
    burst of saves costs one reload (two at most when the burst straddles a reload). A reload
    that fails (the command exits non-zero, the process cannot start or exits before it is
    ready) is an alert with its last output lines; watching goes on and the next save retries.
    """

    def __init__(
        self,
        supervisor: LocalSupervisor,
        settings: WatchSettings,
        *,
        cwd: str,
        bus: SessionBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = reload_name(supervisor.name)
        self._supervisor = supervisor
        self._settings = settings
        self._bus = bus
        self._clock = clock
        self._paths = tuple(settings.paths)
        self._watcher = FileWatcher(
            cwd,
            self._paths,
            rules=WatchRules.of(settings.ignore),
            quiet=settings.debounce,
            on_change=self._changes_arrived,
            leading=settings.immediate,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()  # one reload at a time
        self._busy = False
        # The early stop of the old process, begun at the first change (see _changes_arrived).
        self._halt: asyncio.Task[None] | None = None
        self._revive: asyncio.Task[None] | None = None
        self._last: SyncChanged = SyncChanged(self.name, "watching", paths=self._paths)

    @property
    def last(self) -> SyncChanged:
        """The last state published."""
        return self._last

    async def start(self) -> None:
        """Start watching. A path that cannot be watched is a failed state and an alert (the
        session goes on without hot reload), never an exception."""
        try:
            await self._watcher.start()
        except CockpitError as exc:
            self._fail(exc.one_line(), exc.one_line(), files=0, took=None)
            return
        self._publish("watching")
        self._task = asyncio.create_task(self._run(), name=f"{self.name}")

    async def stop(self) -> None:
        """Stop watching; a reload in progress is cancelled (the supervisor's stop ends it)."""
        self._stopping = True  # changes still arriving start no halt or revive
        tasks = [self._task, self._revive, self._halt]
        self._task = self._revive = self._halt = None
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, CockpitError):
                    await task
        await self._watcher.stop()

    async def _run(self) -> None:
        try:
            while (batch := await self._watcher.next_batch()) is not None:
                await self._reload(batch)
        except CockpitError as exc:  # watching itself broke (e.g. the inotify limit)
            self._fail(exc.one_line(), exc.one_line(), files=0, took=None)
        except Exception as exc:  # a bug must not end hot reload without a word
            reason = f"hot reload stopped: {type(exc).__name__}: {exc}"
            self._fail(reason, reason, files=0, took=None)

    def _changes_arrived(self, pending: int) -> None:
        """New changes merged in the watcher, not yet a batch (the debounce is running)."""
        if self._stopping:
            return
        if self._busy:  # they wait for the reload in progress; the pane shows the queue
            self._publish(self._last.state, pending=pending)
            return
        if pending and (self._last.state, self._last.pending) != ("pending", pending):
            self._publish("pending", pending=pending)
        if pending and self._settings.reload is None and self._halt is None:
            # The running code is stale from the first change on: stopping it while the
            # debounce waits leaves the restart only the start to do.
            self._halt = asyncio.create_task(self._supervisor.halt(), name=f"{self.name} halt")
        elif not pending and self._halt is not None and self._revive is None:
            # The change was undone before the debounce ended (a temporary file came and
            # went): no batch follows, but the process was stopped; start it again.
            undone = ChangeBatch(self._watcher.root, (), time.time())
            self._revive = asyncio.create_task(self._reload(undone), name=f"{self.name} revive")

    async def _reload(self, batch: ChangeBatch) -> None:
        async with self._lock:
            self._busy = True
            try:
                await self._reload_now(batch)
            finally:
                self._busy = False
                if self._revive is asyncio.current_task():
                    self._revive = None

    async def _reload_now(self, batch: ChangeBatch) -> None:
        started = self._clock()
        files = len(batch.changes)
        self._publish("syncing", files=files)
        service = self._supervisor.name
        if batch.changes:
            self._bus.say(f"{service}: {summarize(batch.changes)} changed; reloading")
        else:
            self._bus.say(f"{service}: the changes were undone; starting it again")
        halt, self._halt = self._halt, None
        reload_command = self._settings.reload
        # Meanwhile the old process stops: the stale bytecode goes while it does.
        dropping = None
        if reload_command is None:
            dropping = asyncio.create_task(asyncio.to_thread(drop_stale_bytecode, batch))
        try:
            if halt is not None:
                await halt  # the early stop ends before the start
            if reload_command is not None:
                failure = await self._run_reload_command(reload_command)
            else:
                assert dropping is not None
                await dropping
                failure = await self._restart()
        except CockpitError as exc:  # e.g. a before_start hook failed, the port is taken
            failure = (exc.one_line(), exc.one_line(), True)
        finally:
            if dropping is not None and not dropping.done():
                dropping.cancel()
        took = self._clock() - started
        if failure is not None:
            reason, detail, alert = failure
            self._fail(reason, detail, files=files, took=took, changes=batch.changes, alert=alert)
            return
        self._publish(
            "in-sync",
            last_sync=time.time(),
            duration=took,
            files=files,
            size=await asyncio.to_thread(_changed_bytes, batch),
        )

    async def _restart(self) -> Failure | None:
        supervisor = self._supervisor
        await supervisor.restart()
        service = supervisor.service
        within = service.ready_timeout if service.port is not None else START_SETTLE_SECONDS
        status = await supervisor.wait_settled(within)
        code = supervisor.last_exit
        if status is ProcessStatus.STOPPED or (
            status in (ProcessStatus.EXITED, ProcessStatus.BACKOFF) and code != 0
        ):
            what = describe_exit(code) if code is not None else "was stopped"
            # The supervisor's exit alert already carries the last lines: no second alert.
            return f"{supervisor.name} {what} after the reload", _tail(supervisor.tail), False
        if service.port is not None and status is not ProcessStatus.READY:
            # Still starting: the supervisor's own alert says so; the reload itself worked.
            self._bus.say(
                f"{supervisor.name}: restarted, port {service.port} not answering yet",
                Level.WARNING,
            )
        return None

    async def _run_reload_command(self, command: str | list[str]) -> Failure | None:
        supervisor = self._supervisor
        pid = supervisor.pid
        code, last = await supervisor.run_command(
            "reload",
            command,
            what="reload command",
            within=supervisor.service.hooks.timeout,
            # so that `kill -HUP $COCKPIT_PID` can tell the running process to reload
            env={"COCKPIT_PID": str(pid)} if pid is not None else None,
        )
        if code == 0:
            return None
        reason = f"reload command `{command_text(command)}` {describe_exit(code)}"
        return reason, _tail(last), True

    def _fail(
        self,
        reason: str,
        detail: str,
        *,
        files: int,
        took: float | None,
        changes: Sequence[FileChange] = (),
        alert: bool = True,
    ) -> None:
        service = self._supervisor.name
        what = f" ({summarize(changes)} changed)" if changes else ""
        seq = self._bus.say(f"{service}: reload failed{what}: {reason}", Level.ERROR)
        if alert:
            self._bus.alert(
                f"reload:{service}",
                service,
                f"{service}: reload failed: {reason}",
                detail,
                Level.ERROR,
                seq,
            )
        self._publish("failed", reason=reason, duration=took, files=files)

    def _publish(
        self,
        state: str,
        *,
        pending: int | None = None,
        last_sync: float | None = None,
        duration: float | None = None,
        files: int | None = None,
        size: int | None = None,
        reason: str = "",
    ) -> None:
        last = self._last
        event = SyncChanged(
            self.name,
            state,
            pending=self._watcher.pending if pending is None else pending,
            last_sync=last.last_sync if last_sync is None else last_sync,
            duration=last.duration if duration is None else duration,
            files=last.files if files is None else files,
            bytes=last.bytes if size is None else size,
            reason=reason,
            paths=self._paths,
        )
        self._last = event
        self._bus.publish(event)


def _tail(lines: Sequence[str]) -> str:
    if not lines:
        return "it wrote no output"
    return f"last {len(lines)} lines:\n" + "\n".join(lines)
