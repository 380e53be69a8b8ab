"""A scripted stand-in for the process adapter, for engine unit tests (real processes are
tested in tests/adapters/test_process.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cockpit.adapters.protocols import OutputLine, OutputSink, ProcessSpec
from cockpit.errors import ProcessError


@dataclass
class Behaviour:
    """How a fake process with a given command behaves."""

    start_error: str | None = None  # start() raises ProcessError(start_error)
    exit_at_once: int | None = None  # exits with this code right after start (else: runs on)
    output: Sequence[str] = ()  # written to stdout right after start
    ready: bool = True  # wait_ready() answers True (else it waits until exit or `within`)
    ignores_stop: bool = False  # stop() has to "SIGKILL" it


class FakeProcess:
    _pids = itertools.count(1000)

    def __init__(self, spec: ProcessSpec, on_output: OutputSink, behaviour: Behaviour) -> None:
        self.spec = spec
        self.on_output = on_output
        self.behaviour = behaviour
        self._pid: int | None = None
        self._code: int | None = None
        self._exited = asyncio.Event()
        self.stop_graces: list[float] = []
        self.started = False

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._code

    @property
    def running(self) -> bool:
        return self.started and self._code is None

    async def start(self) -> None:
        await asyncio.sleep(0)
        if self.behaviour.start_error is not None:
            raise ProcessError(self.behaviour.start_error)
        self._pid = next(self._pids)
        self.started = True
        if self.behaviour.output:
            self.write(*self.behaviour.output)
        if self.behaviour.exit_at_once is not None:
            self.exit(self.behaviour.exit_at_once)

    def write(self, *texts: str, stream: str = "stdout") -> None:
        assert self.running, "a process that is not running cannot write"
        self.on_output([OutputLine(stream, text, time.time()) for text in texts])

    def exit(self, code: int) -> None:
        if self._code is None:
            self._code = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._code is not None
        return self._code

    async def wait_ready(self, within: float | None = None) -> bool:
        if self.behaviour.ready:
            await asyncio.sleep(0)
            return self.running
        try:
            await asyncio.wait_for(self._exited.wait(), within)
        except TimeoutError:
            return False
        return False

    async def wait_released(self) -> None:
        await self._exited.wait()

    async def stop(self, grace: float) -> int | None:
        self.stop_graces.append(grace)
        if not self.started:
            return None
        await asyncio.sleep(0)
        self.exit(-9 if self.behaviour.ignores_stop else -15)
        return self._code


@dataclass
class FakeFactory:
    """Makes FakeProcesses; ``behaviours`` by command text (the rest: default Behaviour)."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    made: list[FakeProcess] = field(default_factory=list)
    on_make: Callable[[FakeProcess], None] | None = None

    def __call__(self, spec: ProcessSpec, on_output: OutputSink) -> FakeProcess:
        key = spec.command if isinstance(spec.command, str) else " ".join(spec.command)
        process = FakeProcess(spec, on_output, self.behaviours.get(key, Behaviour()))
        self.made.append(process)
        if self.on_make is not None:
            self.on_make(process)
        return process

    def of(self, command: str) -> list[FakeProcess]:
        return [p for p in self.made if _text(p.spec.command) == command]

    def running(self) -> list[FakeProcess]:
        return [p for p in self.made if p.running]


def _text(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else " ".join(command)
