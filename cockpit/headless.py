"""Headless mode: the engine without a UI; JSON lines out, JSON commands in, stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TextIO

from cockpit.core.commands import Command, CommandParseError, parse_command
from cockpit.core.events import CommandResult, Event, Level, LogBatch, LogLine
from cockpit.core.query import Query
from cockpit.engine.facade import EngineFacade

MAX_COMMAND_BYTES = 1024 * 1024


class HeadlessEngine(EngineFacade, Protocol):
    """The facade plus what headless mode reads: the quit flag and the log filter."""

    quit_requested: asyncio.Event

    @property
    def filter(self) -> Query: ...


_LEVEL_NAMES = {level: level.name.lower() for level in Level}
# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def log_line_json(line: LogLine) -> dict[str, Any]:
    # Built by hand: dataclasses.asdict costs more than everything else on the log path.
    return {
        "type": "LogLine",
        "source": line.source,
        "service": line.service,
        "kind": line.kind.value,
        "text": line.text,
        "ts": line.ts,
        "stream": line.stream,
        "level": _LEVEL_NAMES[line.level],
        "seq": line.seq,
    }


def event_json(event: Event, query: Query | None = None) -> list[dict[str, Any]]:
    """One JSON object per log line (those ``query`` matches), one per other event."""
    if isinstance(event, LogBatch):
        if query is None or query.is_empty:
            return [log_line_json(line) for line in event.lines]
        matches = query.predicate()
        return [log_line_json(line) for line in event.lines if matches(line)]
    return [event.to_json()]


class JsonLinesWriter:
    """Writes JSON objects one per line; notes a closed stdout instead of raising."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.closed = asyncio.Event()

    def write(self, objects: list[dict[str, Any]]) -> None:
        if self.closed.is_set():
            return
        encode = _encode
        try:
            self.out.write("".join([encode(obj) + "\n" for obj in objects]))
            self.out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away (e.g. `| head`)
            self.closed.set()


async def run_headless(
    engine: HeadlessEngine,
    *,
    out: TextIO,
    stdin_fd: int | None = None,
    handle_signals: bool = True,
) -> int:
    """Run ``engine`` until a signal, a quit command or a closed stdout; 0 after a clean stop.

    Log lines are printed when they match the filter last set (``{"cmd": "filter"}``).

    A failed start raises its CockpitError once everything is cleaned up.
    """
    loop = asyncio.get_running_loop()
    writer = JsonLinesWriter(out)
    stop = asyncio.Event()
    # SIGHUP too: closing the terminal of a headless run must clean up like Ctrl-C.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    events = engine.events()
    printer = asyncio.create_task(
        _print_events(events, writer, lambda: engine.filter), name="headless printer"
    )
    commands: asyncio.Task[None] | None = None
    starting = asyncio.create_task(engine.start(), name="engine start")
    try:
        await _first(starting, stop, writer.closed)
        if starting.done():
            starting.result()  # a failed start raises here
            if stdin_fd is not None:
                commands = asyncio.create_task(
                    _serve_commands(engine, stdin_fd, writer), name="headless commands"
                )
            await _first(stop, writer.closed, engine.quit_requested)
    finally:
        for task in (starting, commands):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await engine.stop()
        await printer
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0


async def _first(*waitables: asyncio.Event | asyncio.Task[Any]) -> None:
    """Wait until any event is set or any task is done."""
    waiters = [
        asyncio.ensure_future(w.wait()) if isinstance(w, asyncio.Event) else w for w in waitables
    ]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waitable, waiter in zip(waitables, waiters, strict=True):
            if isinstance(waitable, asyncio.Event):
                waiter.cancel()


async def _print_events(
    events: AsyncIterator[Event], writer: JsonLinesWriter, query: Callable[[], Query]
) -> None:
    async for event in events:
        writer.write(event_json(event, query()))


async def _serve_commands(engine: EngineFacade, fd: int, writer: JsonLinesWriter) -> None:
    """One JSON command per stdin line; the engine publishes each result, bad lines are
    answered here. Commands run side by side (a quit need not wait for a slow restart).
    End of input only ends the commands, not the session."""
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    _read_lines_in_thread(fd, asyncio.get_running_loop(), lines.put_nowait)
    running: set[asyncio.Task[CommandResult]] = set()
    try:
        while (raw := await lines.get()) is not None:
            command = _parse_line(raw, writer)
            if command is not None:
                task = asyncio.create_task(engine.submit(command), name=f"command {command.name}")
                running.add(task)
                task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()


def _parse_line(raw: bytes, writer: JsonLinesWriter) -> Command | None:
    """The command on one stdin line, or None after answering a bad line."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        writer.write([CommandResult("", False, f"not a JSON object: {exc.msg}").to_json()])
        return None
    try:
        return parse_command(obj)
    except (CommandParseError, TypeError) as exc:  # TypeError: a field of the wrong kind
        name = obj.get("cmd") if isinstance(obj, dict) else None
        request_id = obj.get("id") if isinstance(obj, dict) else None
        result = CommandResult(
            name if isinstance(name, str) else "",
            False,
            str(exc),
            "" if request_id is None else str(request_id),
        )
        writer.write([result.to_json()])
        return None


def _read_lines_in_thread(
    fd: int, loop: asyncio.AbstractEventLoop, put: Callable[[bytes | None], None]
) -> None:
    """Read ``fd`` line by line in a daemon thread (works for pipes, ttys, files, /dev/null).

    Reads a duplicate of the fd with os.read: the thread never holds sys.stdin's lock,
    which would stall interpreter shutdown while it blocks.
    """
    own = os.dup(fd)

    def deliver(item: bytes | None) -> bool:
        try:
            loop.call_soon_threadsafe(put, item)
        except RuntimeError:  # the loop is closed: cockpit is exiting
            return False
        return True

    def read() -> None:
        buffer = b""
        try:
            while chunk := os.read(own, 65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    if not deliver(line):
                        return
                if len(buffer) > MAX_COMMAND_BYTES:
                    buffer = b""  # a runaway line: drop it rather than grow
            if buffer:
                deliver(buffer)
            deliver(None)
        except OSError:
            deliver(None)
        finally:
            with contextlib.suppress(OSError):
                os.close(own)

    threading.Thread(target=read, name="headless stdin", daemon=True).start()
