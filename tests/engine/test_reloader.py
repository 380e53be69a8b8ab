"""Hot reload end to end in the engine: real files in tmp_path, a real local HTTP server,
real requests; edits, a burst of 1,000 files, a broken edit, a reload command."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cockpit.adapters.process import process_factory
from cockpit.core.config import parse_config
from cockpit.core.events import Alert, Event, LogBatch, LogLine, ProcessChanged, SyncChanged
from cockpit.engine.session import Engine
from tests.adapters.test_process import alive

WITHIN = 30.0  # generous: the machine may be busy
SERVER = """\
import http.server
import os

from message import MESSAGE


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = MESSAGE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("serving", MESSAGE, flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
_HANDLER = SERVER[: SERVER.index('print("serving"')]
# A graceful server: on SIGTERM it closes its listener first, then "finishes its requests"
# until ../let-go appears (the test says when), then exits.
DRAINING_SERVER = (
    _HANDLER
    + """\
import pathlib, signal, socket, threading, time
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
# SIGTERM waits for sigwait (a handler could run on the serving thread and be missed).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
threading.Thread(target=server.serve_forever, daemon=True).start()
print("serving", MESSAGE, flush=True)
signal.sigwait({signal.SIGTERM})
server.socket.shutdown(socket.SHUT_RDWR)
server.shutdown()
server.server_close()
print("draining", flush=True)
deadline = time.monotonic() + 60
while not pathlib.Path("../let-go").exists() and time.monotonic() < deadline:
    time.sleep(0.01)
print("bye", flush=True)
"""
)
# Keeps listening through a slow SIGTERM shutdown: the port is free only at its exit.
SLOW_SERVER = (
    _HANDLER
    + """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))
print("serving", MESSAGE, flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
)
# Ignores SIGTERM: only the SIGKILL after stop_timeout ends it.
STUBBORN_SERVER = (
    _HANDLER
    + """\
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("serving", MESSAGE, flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError, http.client.HTTPException):
        return None  # not listening, or a process going away mid-answer


def server_app(
    root: Path, watch: str = "", server: str = SERVER, stop_timeout: float = 5
) -> tuple[Path, int, str]:
    """The tiny server in ``root/app`` answering "one"; (app dir, port, cockpit.yaml text with
    service api, ``watch`` lines appended)."""
    app = root / "app"
    app.mkdir()
    (app / "server.py").write_text(server)
    (app / "message.py").write_text('MESSAGE = "one"\n')
    port = free_port()
    yaml = (
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, server.py]\n"
        "    cwd: app\n"
        f"    port: {port}\n"
        f"    env: {{PORT: '{port}'}}\n"
        f"    stop_timeout: {stop_timeout:g}\n" + watch
    )
    return app, port, yaml


class Session:
    """An engine running the tiny server from ``tmp_path/app`` with hot reload on."""

    def __init__(self, engine: Engine, app: Path, port: int) -> None:
        self.engine, self.app, self.port = engine, app, port
        self.events: list[Event] = []
        self._task: asyncio.Task[None] | None = None

    async def collect(self) -> None:
        async for event in self.engine.events():
            self.events.append(event)

    def syncs(self) -> list[SyncChanged]:
        return [e for e in self.events if isinstance(e, SyncChanged)]

    def pids(self) -> set[int]:
        return {e.pid for e in self.events if isinstance(e, ProcessChanged) and e.pid}

    def lines(self) -> list[LogLine]:
        return [line for e in self.events if isinstance(e, LogBatch) for line in e.lines]

    def alerts(self) -> list[Alert]:
        return [e for e in self.events if isinstance(e, Alert)]

    async def until(self, condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + WITHIN
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not in time; last: {self.events[-6:]}"
            await asyncio.sleep(0.05)

    async def serves(self, text: str) -> None:
        deadline = time.monotonic() + WITHIN
        while (got := await asyncio.to_thread(get, self.port)) != text:
            assert time.monotonic() < deadline, f"serves {got!r}, not {text!r}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def session(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    param = getattr(request, "param", "")
    # a parameter: the watch lines, or server_app's keyword arguments
    app, port, yaml = server_app(
        tmp_path, **(param if isinstance(param, dict) else {"watch": param})
    )
    config = parse_config(yaml, str(tmp_path / "cockpit.yaml"))
    engine = Engine(
        config, "api", process_factory=process_factory, base_env={"PATH": "/usr/bin:/bin"},
        hot_reload=True,
    )  # fmt: skip
    run = Session(engine, app, port)
    collector = asyncio.create_task(run.collect())
    await asyncio.sleep(0)  # subscribed before the first event
    await engine.start()
    try:
        await run.serves("one")
        await run.until(lambda: any(s.state == "watching" for s in run.syncs()), "watching")
        yield run
    finally:
        await engine.stop()
        await asyncio.wait_for(collector, WITHIN)


async def test_an_edit_is_served_by_the_restarted_process(session: Session) -> None:
    first = session.syncs()[0]
    assert (first.name, first.state, first.paths) == ("api (reload)", "watching", (".",))
    assert list((session.app / "__pycache__").glob("message.*.pyc"))
    # The same size and mtime second as at the import: Python alone would trust the cached
    # bytecode and serve "one" again.
    message = session.app / "message.py"
    before = message.stat()
    message.write_text('MESSAGE = "two"\n')
    os.utime(message, ns=(before.st_atime_ns, before.st_mtime_ns))
    await session.serves("two")
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    done = session.syncs()[-1]
    assert done.files == 1 and done.bytes == len('MESSAGE = "two"\n')
    assert done.duration is not None and done.duration > 0 and done.last_sync is not None
    assert [s.state for s in session.syncs()] == ["watching", "pending", "syncing", "in-sync"]
    assert len(session.pids()) == 2  # the first process and the restarted one


async def burst_reloads(session: Session, files: int) -> list[SyncChanged]:
    """Write ``files`` assets and a new message.py at once; the reloads ("syncing") they made."""

    def burst() -> None:
        for i in range(files):
            (session.app / f"asset{i:04}.txt").write_text(str(i))
        (session.app / "message.py").write_text('MESSAGE = "burst"\n')

    await asyncio.to_thread(burst)
    await session.serves("burst")
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    await asyncio.sleep(1.0)  # a further reload, if any, would have begun by now
    syncs = session.syncs()
    # A reload begins where the state turns to "syncing" (changes arriving during a reload
    # are published with the same state and their pending count).
    pairs = itertools.pairwise(syncs)
    return [now for before, now in pairs if now.state == "syncing" != before.state]


@pytest.mark.parametrize(
    "session", ["    watch: {immediate: false}\n"], indirect=True
)  # a burst whose first files trickle in may cost one leading reload with immediate on
async def test_a_burst_of_a_thousand_changes_is_one_reload(session: Session) -> None:
    reloads = await burst_reloads(session, 1_000)
    assert len(reloads) == 1, [(s.state, s.files, s.pending) for s in session.syncs()]
    assert session.syncs()[-1].files == 1_001
    assert len(session.pids()) == 2


async def test_a_burst_with_the_immediate_reload_is_one_reload_and_at_most_one_more(
    session: Session,
) -> None:
    reloads = await burst_reloads(session, 300)
    assert 1 <= len(reloads) <= 2, [(s.state, s.files, s.pending) for s in session.syncs()]
    assert sum(s.files for s in reloads) == 301  # every change reloaded once
    assert len(session.pids()) == 1 + len(reloads)


@pytest.mark.parametrize(
    "session", [{"server": DRAINING_SERVER, "stop_timeout": 30}], indirect=True
)
async def test_the_new_process_serves_while_the_old_one_finishes_its_requests(
    session: Session,
) -> None:
    (old,) = session.pids()
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.serves("two")
    # The old process closed its listener and still runs: the new one did not wait for it.
    assert alive(old)
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    (new,) = session.pids() - {old}
    said = [line.text for line in session.lines() if line.source == "cockpit"]
    assert f"api: the old process (pid {old}) closed port {session.port}; " in "\n".join(said)
    # One process shown, the restart counted once; the old pid is not shown after the new one.
    changes = [e for e in session.events if isinstance(e, ProcessChanged)]
    first_new = next(i for i, e in enumerate(changes) if e.pid == new)
    assert all(e.pid in (new, None) for e in changes[first_new:])
    assert changes[-1].restarts == 1 and changes[-1].status.value == "ready"

    (session.app.parent / "let-go").touch()
    await session.until(lambda: not alive(old), "the old process exits")
    # Its last words reach the log stream, told apart from the new process's.
    await session.until(
        lambda: any(line.text == "bye" for line in session.lines()), "the old process's output"
    )
    bye = next(line for line in session.lines() if line.text == "bye")
    assert (bye.source, bye.service) == ("api·old", "api")
    assert not session.alerts()  # the old one's exit is no alert
    assert await asyncio.to_thread(get, session.port) == "two"


@pytest.mark.parametrize("session", [{"server": DRAINING_SERVER, "stop_timeout": 2}], indirect=True)
async def test_quitting_while_the_old_process_drains_leaves_nothing_running(
    session: Session,
) -> None:
    (old,) = session.pids()
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.serves("two")
    (new,) = session.pids() - {old}
    assert alive(old)
    await session.engine.stop()  # the old one never gets its let-go: killed after stop_timeout
    assert not alive(old) and not alive(new)


@pytest.mark.parametrize("session", [{"server": SLOW_SERVER}], indirect=True)
async def test_a_server_listening_until_it_exits_is_reloaded_after_its_exit(
    session: Session,
) -> None:
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.serves("two")
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    # The new process was not started into a port still taken (no "port in use" failure).
    assert [s.state for s in session.syncs()] == ["watching", "pending", "syncing", "in-sync"]
    assert not session.alerts()
    assert not any(line.source == "api·old" for line in session.lines())
    assert session.engine.state.services["api"].local_restarts == 1


@pytest.mark.parametrize("session", [{"server": STUBBORN_SERVER, "stop_timeout": 1}], indirect=True)
async def test_an_old_process_ignoring_sigterm_is_killed_and_the_new_one_comes_up(
    session: Session,
) -> None:
    (old,) = session.pids()
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.serves("two")
    assert not alive(old)
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    assert [s.state for s in session.syncs()] == ["watching", "pending", "syncing", "in-sync"]
    assert not session.alerts()


@pytest.mark.parametrize(
    "session", ["    watch: {debounce: 1.0, immediate: false}\n"], indirect=True
)
async def test_a_change_undone_within_the_debounce_starts_the_stopped_process_again(
    session: Session,
) -> None:
    scratch = session.app / "scratch.txt"
    scratch.write_text("x")
    # the first change stops the stale process at once, while the debounce runs
    await session.until(lambda: session.syncs()[-1].state == "pending", "pending")
    await session.until(lambda: session.engine.state.services["api"].process == "stopped", "stop")
    scratch.unlink()
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    await session.serves("one")
    assert session.syncs()[-1].files == 0
    assert [s.state for s in session.syncs()] == ["watching", "pending", "syncing", "in-sync"]
    assert len(session.pids()) == 2


async def test_a_broken_edit_alerts_with_the_last_lines_and_watching_goes_on(
    session: Session,
) -> None:
    (session.app / "message.py").write_text('raise RuntimeError("typo in message.py")\n')
    await session.until(lambda: session.syncs()[-1].state == "failed", "failed")
    failed = session.syncs()[-1]
    assert failed.reason == "api exited with code 1 after the reload"
    alerts = [e for e in session.events if isinstance(e, Alert)]
    exit_alert = next(a for a in alerts if a.key == "process-exit:api")
    assert "RuntimeError: typo in message.py" in exit_alert.detail  # the last lines
    assert await asyncio.to_thread(get, session.port) is None

    (session.app / "message.py").write_text('MESSAGE = "fixed"\n')
    await session.serves("fixed")
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync again")


@pytest.mark.parametrize(
    "session", ["    watch: {reload: 'echo $COCKPIT_PID >> ../reloaded; cat message.py'}\n"],
    indirect=True,
)  # fmt: skip
async def test_a_reload_command_runs_instead_of_a_restart(session: Session) -> None:
    (pid,) = session.pids()
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.until(lambda: session.syncs()[-1].state == "in-sync", "in-sync")
    reloaded = session.app.parent / "reloaded"  # outside the watched directory
    assert reloaded.read_text() == f"{pid}\n"  # the running process's pid, for kill -HUP
    assert session.pids() == {pid}  # not restarted
    assert await asyncio.to_thread(get, session.port) == "one"  # the command chose not to


@pytest.mark.parametrize(
    "session", ["    watch: {reload: 'echo compiling; echo error: bad syntax >&2; exit 3'}\n"],
    indirect=True,
)  # fmt: skip
async def test_a_failing_reload_command_alerts_with_its_output(session: Session) -> None:
    (session.app / "message.py").write_text('MESSAGE = "two"\n')
    await session.until(lambda: session.syncs()[-1].state == "failed", "failed")
    failed = session.syncs()[-1]
    assert (
        failed.reason
        == "reload command `echo compiling; echo error: bad syntax >&2; exit 3` exited with code 3"
    )
    alert = next(e for e in session.events if isinstance(e, Alert) and e.key == "reload:api")
    assert alert.title == f"api: reload failed: {failed.reason}"
    assert alert.detail == "last 2 lines:\ncompiling\nerror: bad syntax"


def sleeper(tmp_path: Path, watch: str) -> Engine:
    (tmp_path / "app").mkdir()
    config = parse_config(
        "services:\n  api:\n"
        f"    command: [{sys.executable!r}, -c, 'import time; time.sleep(60)']\n"
        f"    cwd: app\n    watch: {watch}\n",
        str(tmp_path / "cockpit.yaml"),
    )
    return Engine(config, "api", process_factory=process_factory, base_env={}, hot_reload=True)


async def test_a_missing_watch_path_is_a_failed_row_and_an_alert(tmp_path: Path) -> None:
    engine = sleeper(tmp_path, "{paths: [src]}")
    await engine.start()
    try:
        sync = engine.state.syncs["api (reload)"]
        assert sync.state == "failed"
        assert sync.reason.startswith("cannot watch ")
        assert sync.reason.endswith("/app/src: no such file or directory")
        assert "reload:api" in engine.state.alerts
        assert engine.state.services["api"].process == "running"  # the session goes on
    finally:
        await engine.stop()


async def test_watch_disabled_means_no_reload(tmp_path: Path) -> None:
    engine = sleeper(tmp_path, "{enabled: false}")
    await engine.start()
    try:
        assert engine.state.syncs == {}
    finally:
        await engine.stop()
