"""Runs the session's local service: hooks, start, readiness, restart, exit alerts, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from cockpit.adapters.protocols import ChildProcess, OutputLine, ProcessFactory, ProcessSpec
from cockpit.core.backoff import Backoff
from cockpit.core.config import ServiceConfig
from cockpit.core.events import Event, Level, LogLine, ProcessChanged, ProcessStatus, SourceKind
from cockpit.errors import CockpitError, ProcessError

EXIT_TAIL_LINES = 20
HOOK_STOP_GRACE = 2.0
OLD_SUFFIX = "·old"
"""Appended to the service's name as the source of an old process's last lines: it drains
while its successor already runs."""


class SessionBus(Protocol):
    """What a supervisor needs from its session (the Engine implements it)."""

    def now(self) -> float: ...

    def publish(self, event: Event) -> None: ...

    def ingest(self, lines: Sequence[LogLine]) -> None:
        """Into the log pipeline (ring, levels, alert rules) and out in the next batch."""
        ...

    def end_of_stream(self) -> None:
        """A producer's output ended (a traceback cut off by it still raises its alert)."""
        ...

    def say(self, text: str, level: Level = Level.INFO) -> int:
        """A line of cockpit's own in the log stream (alert rules skip it); its seq."""
        ...

    def alert(
        self, key: str, service: str, title: str, detail: str, level: Level, log_seq: int
    ) -> None: ...


def describe_exit(code: int) -> str:
    """'exited with code 1' / 'was killed by SIGKILL'."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def command_text(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else " ".join(command)


class LocalSupervisor:
    """Keeps one local service running as configured.

    ``start`` raises when the first start fails (the CLI reports it); after that every
    failure becomes an alert. Start, restart and stop are serialised; ``stop`` cancels
    whatever is in flight and always leaves no process behind.
    """

    def __init__(
        self,
        name: str,
        service: ServiceConfig,
        *,
        cwd: str,
        env: Mapping[str, str],
        factory: ProcessFactory,
        bus: SessionBus,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        if service.command is None:
            raise ProcessError(f"{name}: no command to run it locally")
        self.name = name
        self.service = service
        self._spec = ProcessSpec(name, service.command, cwd, dict(env), service.port)
        self._factory = factory
        self._bus = bus
        self._sleep = sleep or asyncio.sleep
        policy = service.restart
        self._backoff = Backoff(
            initial=policy.backoff_initial,
            maximum=policy.backoff_max,
            factor=2.0,
            jitter=0.1,
            # A process that ran this long before dying starts the backoff over.
            reset_after=max(10.0, policy.backoff_max * 2),
        )
        self._lock = asyncio.Lock()
        self._process: ChildProcess | None = None
        self._life: asyncio.Task[None] | None = None
        self._status = ProcessStatus.STOPPED
        self._restarts = 0
        self._last_exit: int | None = None
        self._tail: deque[str] = deque(maxlen=EXIT_TAIL_LINES)
        self._closing = False
        self._status_changed = asyncio.Event()
        # Old processes finishing their requests after their successor started: each one's
        # stop (SIGTERM, then SIGKILL after stop_timeout), awaited by ``stop``.
        self._retiring: set[asyncio.Task[None]] = set()
        self._output: _ProcessOutput | None = None  # the current process's sink

    def set_env(self, env: Mapping[str, str]) -> None:
        """The environment of every start from now on (the cluster's, once imported)."""
        self._spec = dataclasses.replace(self._spec, env=dict(env))

    @property
    def status(self) -> ProcessStatus:
        return self._status

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def last_exit(self) -> int | None:
        """The exit code of the last process that exited (None before any exit)."""
        return self._last_exit

    @property
    def tail(self) -> list[str]:
        """The last lines the current (or last) process wrote."""
        return list(self._tail)

    async def wait_settled(self, within: float) -> ProcessStatus:
        """After a (re)start, wait until the process is ready (its port answers), has exited,
        or ``within`` seconds pass; the status then. Without a port, a process still running
        after ``within`` seconds counts as started."""
        settled = {ProcessStatus.EXITED, ProcessStatus.BACKOFF, ProcessStatus.STOPPED}
        if self.service.port is not None:
            settled.add(ProcessStatus.READY)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._status not in settled:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_changed.wait(), remaining)
        return self._status

    async def start(self) -> None:
        """Run the before_start hooks and start the process; raise if either fails."""
        async with self._lock:
            try:
                process = await self._spawn()
            except BaseException:
                self._set_status(ProcessStatus.STOPPED)
                raise
            self._life = asyncio.create_task(self._live(process), name=f"{self.name} life")

    async def restart(self) -> int | None:
        """Stop (gracefully) and start again, now; the new pid. The new process starts as
        soon as the old one no longer listens on the port, while it finishes its requests."""
        async with self._lock:
            if self._closing:
                return None  # stopped: nothing may start again
            await self._end_life(early=True)
            self._restarts += 1
            self._backoff.reset()
            try:
                process = await self._spawn()
            except BaseException:
                self._set_status(ProcessStatus.STOPPED)
                raise
            self._life = asyncio.create_task(self._live(process), name=f"{self.name} life")
            return process.pid

    async def halt(self) -> None:
        """Stop the process (gracefully, no exit alert) and leave it stopped until
        ``restart``: a hot reload stops stale code while it waits for the edits to settle.
        Returns once the port is free; the old process may still be finishing its requests."""
        async with self._lock:
            if self._closing:
                return
            await self._end_life(early=True)
            self._set_status(ProcessStatus.STOPPED)

    async def stop(self) -> None:
        """Stop everything; safe to call twice, and cancelling it still kills the process."""
        self._closing = True
        try:
            await self._end_life()
            while self._retiring:
                await asyncio.wait(set(self._retiring))
        except asyncio.CancelledError:
            retiring = set(self._retiring)
            for task in retiring:
                task.cancel()  # a cancelled stop kills the group at once
            if retiring:
                await asyncio.wait(retiring)
            raise
        self._set_status(ProcessStatus.STOPPED)

    async def _end_life(self, *, early: bool = False) -> None:
        life, self._life = self._life, None
        if life is not None and not life.done():
            life.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await life
        process = self._process
        if process is not None:
            if process.returncode is None:
                self._set_status(ProcessStatus.STOPPING)
            if early and process.pid is not None:  # one that never started holds no port
                await self._retire(process)
            else:
                await process.stop(self.service.stop_timeout)
            self._process = None

    async def _retire(self, process: ChildProcess) -> None:
        """Stop ``process``; return once it has exited or no longer listens on the port (a
        graceful server closes its listener first), its stop going on in the background."""
        released = asyncio.create_task(process.wait_released(), name=f"{self.name} released")
        await asyncio.sleep(0)  # its first look, whether the port is listened on, before SIGTERM
        stopping = asyncio.create_task(self._finish(process), name=f"{self.name} old stop")
        try:
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            raise
        finally:
            released.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await released
        if stopping.done():
            stopping.result()  # raises what the stop raised
            return
        self._retiring.add(stopping)
        stopping.add_done_callback(self._retiring.discard)
        if self._output is not None:
            self._output.retire()
        self._bus.say(
            f"{self.name}: the old process (pid {process.pid}) closed port {self.service.port}; "
            "starting the new one while it finishes"
        )

    async def _finish(self, process: ChildProcess) -> None:
        await process.stop(self.service.stop_timeout)
        self._bus.end_of_stream()  # a traceback cut off by its exit still raises its alert

    async def _spawn(self) -> ChildProcess:
        self._set_status(ProcessStatus.STARTING)
        await self._run_hooks("before_start", self.service.hooks.before_start)
        self._tail.clear()
        self._output = _ProcessOutput(self.name, self._bus, self._tail)
        process = self._factory(self._spec, self._output)
        self._process = process  # before start: a stop() during it must find the process
        await process.start()
        self._bus.say(
            f"started {self.name} (pid {process.pid}): {command_text(self._spec.command)}"
        )
        self._set_status(ProcessStatus.RUNNING)
        return process

    async def _live(self, process: ChildProcess) -> None:
        """Watch ``process`` until it exits; then alert and, if configured, restart with backoff."""
        while True:
            ready = asyncio.create_task(self._become_ready(process), name=f"{self.name} ready")
            try:
                code = await process.wait()
            finally:
                ready.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ready
            # Whatever the leader left behind in its group goes with it.
            await process.stop(self.service.stop_timeout)
            self._bus.end_of_stream()
            self._process = None
            self._report_exit(code)
            if not self.service.restart.on_exit or self._closing:
                return
            process = await self._respawn()

    async def _respawn(self) -> ChildProcess:
        while True:
            delay = self._backoff.next_delay(self._bus.now())
            self._set_status(ProcessStatus.BACKOFF)
            self._bus.say(f"restarting {self.name} in {delay:.1f} s", Level.WARNING)
            await self._sleep(delay)
            self._restarts += 1
            try:
                return await self._spawn()
            except CockpitError as exc:
                self._set_status(ProcessStatus.EXITED)
                seq = self._bus.say(exc.one_line(), Level.ERROR)
                self._bus.alert(
                    f"process-start:{self.name}",
                    self.name,
                    f"{self.name} could not be restarted",
                    exc.one_line(),
                    Level.ERROR,
                    seq,
                )

    async def _become_ready(self, process: ChildProcess) -> None:
        port = self.service.port
        if port is None:
            return
        ready = await process.wait_ready(within=self.service.ready_timeout)
        if not ready and process.returncode is None:
            seq = self._bus.say(
                f"{self.name}: port {port} not answering after {self.service.ready_timeout:g} s",
                Level.WARNING,
            )
            self._bus.alert(
                f"process-not-ready:{self.name}",
                self.name,
                f"{self.name}: port {port} not answering after {self.service.ready_timeout:g} s",
                "the process runs but nothing accepts connections on its port yet",
                Level.WARNING,
                seq,
            )
            ready = await process.wait_ready()
        if not ready:
            return
        self._set_status(ProcessStatus.READY)
        self._bus.say(f"{self.name} is ready on port {port}")
        try:
            await self._run_hooks("after_start", self.service.hooks.after_start)
        except CockpitError as exc:
            seq = self._bus.say(exc.one_line(), Level.ERROR)
            self._bus.alert(
                f"hook:{self.name}:after_start",
                self.name,
                f"{self.name}: after_start hook failed",
                exc.one_line(),
                Level.ERROR,
                seq,
            )

    def _report_exit(self, code: int) -> None:
        what = describe_exit(code)
        self._last_exit = code
        self._set_status(ProcessStatus.EXITED)
        level = Level.WARNING if code == 0 else Level.ERROR
        seq = self._bus.say(f"{self.name} {what}", level)
        tail = "\n".join(self._tail)
        self._bus.alert(
            f"process-exit:{self.name}",
            self.name,
            f"{self.name} {what}",
            f"last {len(self._tail)} lines:\n{tail}" if self._tail else "it wrote no output",
            level,
            seq,
        )

    async def _run_hooks(self, kind: str, commands: Sequence[str | list[str]]) -> None:
        for command in commands:
            await self._run_hook(kind, command)

    async def _run_hook(self, kind: str, command: str | list[str]) -> None:
        code, last = await self.run_command(
            kind, command, what=f"{kind} hook", within=self.service.hooks.timeout
        )
        if code != 0:
            raise ProcessError(
                f"{self.name}: {kind} hook `{command_text(command)}` {describe_exit(code)}",
                hint=last[-1][:200] if last else None,
            )

    async def run_command(
        self,
        kind: str,
        command: str | list[str],
        *,
        what: str,
        within: float,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, list[str]]:
        """Run ``command`` (``what`` it is, for messages) in the service's cwd and environment
        (plus ``env``), its output in the log stream as ``NAME:KIND``; its exit code and last
        lines. Raises ProcessError when it cannot start or runs longer than ``within`` s."""
        text = command_text(command)
        source = f"{self.name}:{kind}"
        last: deque[str] = deque(maxlen=EXIT_TAIL_LINES)

        def on_output(lines: Sequence[OutputLine]) -> None:
            last.extend(line.text for line in lines[-EXIT_TAIL_LINES:])
            self._bus.ingest(
                [
                    LogLine(source, self.name, SourceKind.LOCAL, line.text, line.ts, line.stream)
                    for line in lines
                ]
            )

        spec = ProcessSpec(
            f"{self.name} {what}", command, self._spec.cwd, {**self._spec.env, **(env or {})}
        )
        runner = self._factory(spec, on_output)
        self._bus.say(f"{self.name}: running {what}: {text}")
        try:
            await runner.start()
            try:
                code = await asyncio.wait_for(runner.wait(), within)
            except TimeoutError:
                raise ProcessError(
                    f"{self.name}: {what} `{text}` did not finish within {within:g} s"
                ) from None
        finally:
            await runner.stop(HOOK_STOP_GRACE)
        return code, list(last)

    def _set_status(self, status: ProcessStatus) -> None:
        self._status = status
        changed, self._status_changed = self._status_changed, asyncio.Event()
        changed.set()
        running = status in (ProcessStatus.RUNNING, ProcessStatus.READY, ProcessStatus.STOPPING)
        pid = self._process.pid if running and self._process is not None else None
        # The last exit code stays visible while waiting to restart.
        exit_code = (
            self._last_exit if status in (ProcessStatus.EXITED, ProcessStatus.BACKOFF) else None
        )
        self._bus.publish(ProcessChanged(self.name, status, pid, exit_code, self._restarts))


class _ProcessOutput:
    """The output sink of one process of the service: its lines into the log pipeline under
    the service's name and into the supervisor's tail, until it is retired (its successor
    runs): then under ``NAME·old``, and the tail is the successor's."""

    def __init__(self, name: str, bus: SessionBus, tail: deque[str]) -> None:
        self._name = name
        self._source = name
        self._bus = bus
        self._tail: deque[str] | None = tail

    def retire(self) -> None:
        self._source = self._name + OLD_SUFFIX
        self._tail = None

    def __call__(self, lines: Sequence[OutputLine]) -> None:
        source, name = self._source, self._name
        self._bus.ingest(
            [
                LogLine(source, name, SourceKind.LOCAL, line.text, line.ts, line.stream)
                for line in lines
            ]
        )
        if self._tail is not None:
            self._tail.extend(line.text for line in lines[-EXIT_TAIL_LINES:])
