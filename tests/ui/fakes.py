"""A scripted engine for UI tests: it implements EngineFacade, emits the events a test gives it
(or a ready-made demo session) and records every command the UI submits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from textual.pilot import Pilot

from cockpit.core.commands import Command, Restart
from cockpit.core.events import (
    Alert,
    CommandResult,
    ConnectionChanged,
    Event,
    ForwardChanged,
    Level,
    LogBatch,
    LogLine,
    Notice,
    ProcessChanged,
    ProcessStatus,
    ServiceChanged,
    ServiceMode,
    SessionInfo,
    SourceKind,
    SyncChanged,
)
from cockpit.ui.app import TICK, CockpitApp

T0 = 1_700_000_000.0  # a fixed clock for stable screenshots

_END = object()


@dataclass
class FakeEngine:
    """``events()`` yields what ``emit`` is given; ``submit`` answers from ``answers``."""

    initial: list[Event] = field(default_factory=list)
    answers: dict[type[Command], CommandResult] = field(default_factory=dict)
    cleanup_steps: list[str] = field(
        default_factory=lambda: [
            "restoring store's selector",
            "deleting store-cockpit-origin",
            "closing the tunnel",
        ]
    )
    cleanup_delay: float = 0.05
    submitted: list[Command] = field(default_factory=list)
    started: int = 0
    stopped: int = 0
    start_error: Exception | None = None
    _queues: list[asyncio.Queue[object]] = field(default_factory=list)

    async def start(self) -> None:
        self.started += 1
        if self.start_error is not None:
            raise self.start_error
        for event in self.initial:
            self.emit(event)

    async def stop(self) -> None:
        self.stopped += 1
        for step in self.cleanup_steps:
            self.emit(Notice(key="cleanup", text=step))
            await asyncio.sleep(self.cleanup_delay)
        self.emit(Notice(key="cleanup", text="session stopped"))
        await asyncio.sleep(self.cleanup_delay)
        for queue in self._queues:
            queue.put_nowait(_END)

    async def submit(self, command: Command) -> CommandResult:
        self.submitted.append(command)
        answer = self.answers.get(type(command))
        if answer is not None:
            return answer
        return CommandResult(command.name, ok=True, request_id=command.request_id)

    async def events(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                assert isinstance(item, Event)
                yield item
        finally:
            self._queues.remove(queue)

    def emit(self, *events: Event) -> None:
        for event in events:
            for queue in self._queues:
                queue.put_nowait(event)


def log_line(
    text: str,
    *,
    service: str = "api",
    source: str | None = None,
    kind: SourceKind = SourceKind.LOCAL,
    level: Level = Level.INFO,
    ts: float = T0,
    seq: int = 0,
) -> LogLine:
    return LogLine(
        source=source or service,
        service=service,
        kind=kind,
        text=text,
        ts=ts,
        level=level,
        seq=seq,
    )


def demo_session(now: float = T0) -> list[Event]:
    """A small shop app: api runs locally, web and store stay in the cluster."""
    seq = itertools.count(1)
    lines = [
        log_line("listening on 127.0.0.1:8081", ts=now - 30),
        log_line(
            "GET /healthz 200 0.4ms",
            service="web",
            source="web-5c9d7b-x2x4k/web",
            kind=SourceKind.POD,
            ts=now - 29,
        ),
        log_line(
            "GET /api/cart 200 12ms",
            service="web",
            source="web-5c9d7b-x2x4k/web",
            kind=SourceKind.POD,
            ts=now - 28,
        ),
        log_line(
            "store: stock query took 480ms",
            service="store",
            source="store-7d9f8c-abcde/app",
            kind=SourceKind.POD,
            level=Level.WARNING,
            ts=now - 27,
        ),
        log_line("Traceback (most recent call last):", level=Level.ERROR, ts=now - 26),
        log_line('  File "app.py", line 42, in checkout', level=Level.ERROR, ts=now - 26),
        log_line("ZeroDivisionError: division by zero", level=Level.ERROR, ts=now - 26),
        log_line(
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
            service="store",
            source="events",
            kind=SourceKind.EVENT,
            level=Level.WARNING,
            ts=now - 20,
        ),
        log_line("POST /api/checkout 201 35ms", ts=now - 10),
    ]
    lines = [
        LogLine(ln.source, ln.service, ln.kind, ln.text, ln.ts, ln.stream, ln.level, next(seq))
        for ln in lines
    ]
    return [
        SessionInfo(session_id="3f2a9c1e", context="kind-dev", namespace="shop", service="api"),
        ConnectionChanged("api", "connected"),
        ConnectionChanged("agent", "connected"),
        ServiceChanged("api", mode=ServiceMode.LOCAL, ready=1, total=1),
        ProcessChanged("api", ProcessStatus.READY, pid=4242),
        ServiceChanged("web", ready=2, total=2, forward="127.0.0.2:8080"),
        ServiceChanged("store", ready=0, total=1, restarts=3, reasons=("CrashLoopBackOff",)),
        ForwardChanged(
            "web:8080", "127.0.0.2:8080", "web-5c9d7b-x2x4k:8080", "listening", 2, 10_240, 88_000
        ),
        ForwardChanged("store:8080", "127.0.0.3:8080", "store-7d9f8c-abcde:8080", "connecting"),
        SyncChanged("api (reload)", "watching", last_sync=now - 12, duration=0.42, paths=("src",)),
        LogBatch(tuple(lines)),
        Alert(
            key="traceback:api:ZeroDivisionError",
            service="api",
            title="ZeroDivisionError: division by zero",
            detail="\n".join(line.text for line in lines[4:7]),
            level=Level.ERROR,
            count=2,
            first_seen=now - 60,
            last_seen=now - 26,
            log_seq=5,
        ),
        Alert(
            key="probe:store",
            service="store",
            title="Readiness probe failed (503)",
            detail="Readiness probe failed: HTTP probe failed with statuscode: 503",
            level=Level.WARNING,
            count=4,
            first_seen=now - 50,
            last_seen=now - 20,
            log_seq=8,
        ),
    ]


def demo_engine(**kwargs: object) -> FakeEngine:
    engine = FakeEngine(initial=demo_session(), **kwargs)  # type: ignore[arg-type]
    engine.answers[Restart] = CommandResult(
        "restart",
        ok=False,
        message="restart denied: deployments.apps 'store' is forbidden for user dev",
    )
    return engine


def lines_of(count: int, *, start: int = 1, service: str = "api") -> tuple[LogLine, ...]:
    return tuple(
        log_line(f"request {n} GET /api/item/{n} 200", service=service, seq=n, ts=T0 + n / 1000)
        for n in range(start, start + count)
    )


def commands_of(engine: FakeEngine, kind: type[Command]) -> list[Command]:
    return [c for c in engine.submitted if isinstance(c, kind)]


def make_app(engine: FakeEngine, **kwargs: Any) -> CockpitApp:
    """The app over ``engine`` with a fixed clock and the demo's session names."""
    kwargs.setdefault("clock", lambda: T0)
    kwargs.setdefault("title_info", {"context": "kind-dev", "namespace": "shop", "service": "api"})
    return CockpitApp(engine, **kwargs)


async def settle(pilot: Pilot[Any], ticks: int = 4) -> None:
    """Let the event pump and a few UI ticks run (the tick hands lines to the log pane)."""
    for _ in range(ticks):
        await pilot.pause(TICK)
    await pilot.pause()


async def until(pilot: Pilot[Any], check: Callable[[], bool], within: float = 5.0) -> None:
    """Run the app until ``check()`` holds (fails the test after ``within`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {within}s: {check}")
        await pilot.pause(TICK)


def notices(app: CockpitApp) -> list[str]:
    """The notifications (toasts) the app raised so far, oldest first."""
    return [notification.message for notification in app._notifications]
