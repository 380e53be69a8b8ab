"""The adapter protocols the engine depends on (real ones in this package, fakes in tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run: a string command runs through ``/bin/sh -c``, a sequence runs as is."""

    name: str  # shown in errors: "api", "api before_start hook"
    command: str | Sequence[str]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)  # the complete environment
    port: int | None = None  # must be free at start; probed for readiness


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a child process wrote, without its newline."""

    stream: str  # "stdout" | "stderr"
    text: str
    ts: float


OutputSink = Callable[[Sequence[OutputLine]], None]
"""Receives lines in the order read, a chunk at a time; must not block."""


class ChildProcess(Protocol):
    """A command running in its own process group."""

    @property
    def pid(self) -> int | None:
        """The group leader's pid once started."""
        ...

    @property
    def returncode(self) -> int | None:
        """The exit code once exited; ``-N`` when killed by signal N."""
        ...

    async def start(self) -> None:
        """Start the command; raise ProcessError (one line) when it cannot be started."""
        ...

    async def wait(self) -> int:
        """Wait for the leader to exit and its last output to be delivered; its exit code."""
        ...

    async def wait_ready(self, within: float | None = None) -> bool:
        """True once the spec's port accepts a connection (at once if it has none); False
        if the process exits, or ``within`` seconds pass, first."""
        ...

    async def wait_released(self) -> None:
        """Return once the process has stopped listening on the spec's port (a graceful server
        closes its listener first, then finishes the requests in flight), or has exited: from
        then on a new instance can bind the port. Only when it was seen listening at the first
        look (taken when it starts running: start it before ``stop``); otherwise (no port, it
        cannot be told, not listening yet) at its exit."""
        ...

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the whole group, SIGKILL what is left after ``grace`` seconds, reap; the exit
        code. Safe to call at any time and more than once; cancelling it still kills."""
        ...


class ProcessFactory(Protocol):
    def __call__(self, spec: ProcessSpec, on_output: OutputSink) -> ChildProcess: ...
