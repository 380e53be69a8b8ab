"""LocalProcess against real processes: signals, forks, floods, instant exits, port readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cockpit.adapters.process import LocalProcess, group_members, listening, port_in_use
from cockpit.adapters.protocols import OutputLine, ProcessSpec
from cockpit.errors import ProcessError

PY = sys.executable
IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up')\n"
    "time.sleep(300)\n"
)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Collector:
    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.calls = 0

    def __call__(self, lines: Sequence[OutputLine]) -> None:
        self.calls += 1
        self.lines.extend(lines)

    def texts(self, stream: str = "stdout") -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]

    async def until(self, text: str) -> None:
        await eventually(lambda: any(line.text == text for line in self.lines))


def python(code: str, tmp_path: Path, *, port: int | None = None, name: str = "svc") -> ProcessSpec:
    return ProcessSpec(
        name=name,
        command=[PY, "-u", "-c", code],
        cwd=str(tmp_path),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        port=port,
    )


@pytest.fixture
def started() -> Iterator[list[LocalProcess]]:
    """Processes a test started; whatever a failing test leaves behind is killed by group."""
    procs: list[LocalProcess] = []
    yield procs
    for proc in procs:
        if proc.pid is not None:
            for pid in group_members(proc.pid) or []:
                os.kill(pid, 9)


async def launch(spec: ProcessSpec, started: list[LocalProcess]) -> tuple[LocalProcess, Collector]:
    out = Collector()
    proc = LocalProcess(spec, out)
    started.append(proc)
    await proc.start()
    return proc, out


async def test_streams_stdout_and_stderr_line_by_line(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = "import sys\nfor i in range(3):\n print(f'out {i}')\n print(f'err {i}', file=sys.stderr)"
    proc, out = await launch(python(code, tmp_path), started)
    assert await proc.wait() == 0
    assert out.texts("stdout") == ["out 0", "out 1", "out 2"]
    assert out.texts("stderr") == ["err 0", "err 1", "err 2"]
    assert all(line.ts > 0 for line in out.lines)


async def test_a_string_command_runs_through_the_shell_in_its_cwd_and_env(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    spec = ProcessSpec(
        "svc", 'echo "$GREETING from $(pwd)" | tr a-z A-Z', str(tmp_path), {"GREETING": "hi"}
    )
    proc, out = await launch(spec, started)
    assert await proc.wait() == 0
    assert out.texts() == [f"HI FROM {str(tmp_path).upper()}"]


async def test_exits_at_once_with_its_code_and_last_words(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    proc, out = await launch(
        python("import sys; print('cannot connect to db', file=sys.stderr); sys.exit(3)", tmp_path),
        started,
    )
    assert await proc.wait() == 3
    assert proc.returncode == 3
    assert out.texts("stderr") == ["cannot connect to db"]
    assert await proc.stop(grace=1) == 3  # stopping an exited process is harmless


async def test_sigterm_ignored_means_sigkill_after_grace(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = IGNORES_SIGTERM
    proc, out = await launch(python(code, tmp_path), started)
    await out.until("up")
    assert proc.pid is not None
    began = time.monotonic()
    assert await proc.stop(grace=0.5) == -9
    assert time.monotonic() - began >= 0.5
    assert not alive(proc.pid)


async def test_a_graceful_process_gets_sigterm_and_its_shutdown_output_is_kept(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n print('shutting down'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('up')\ntime.sleep(300)"
    )
    proc, out = await launch(python(code, tmp_path), started)
    await out.until("up")
    began = time.monotonic()
    assert await proc.stop(grace=5) == 0
    assert time.monotonic() - began < 3
    assert out.texts()[-1] == "shutting down"


async def test_stop_kills_forked_children_and_grandchildren(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    # The parent forks two children; one of them ignores SIGTERM and forks a grandchild.
    code = (
        "import os, signal, time\n"
        "def say_pid():\n"  # one write each, so lines of the four never interleave
        "    os.write(1, f'pid {os.getpid()}\\n'.encode())\n"
        "def child(ignore):\n"
        "    if ignore: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    if ignore and os.fork() == 0:\n"
        "        say_pid(); time.sleep(300)\n"
        "    say_pid(); time.sleep(300)\n"
        "for ignore in (False, True):\n"
        "    if os.fork() == 0:\n"
        "        child(ignore)\n"
        "say_pid()\n"
        "time.sleep(300)\n"
    )
    proc, out = await launch(python(code, tmp_path), started)
    await eventually(lambda: len(out.texts()) >= 4)
    pids = [int(text.split()[1]) for text in out.texts()]
    assert len(set(pids)) == 4
    assert proc.pid in pids
    assert all(alive(pid) for pid in pids)
    assert sorted(group_members(proc.pid) or []) == sorted(pids)
    await proc.stop(grace=0.5)
    assert [pid for pid in pids if alive(pid)] == []
    assert group_members(proc.pid) == []


async def test_leader_exit_does_not_wait_for_a_child_holding_the_pipes(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n    os.write(1, f'child {os.getpid()}\\n'.encode()); time.sleep(300)\n"
        "time.sleep(0.2); sys.exit(7)\n"
    )
    proc, out = await launch(python(code, tmp_path), started)
    began = time.monotonic()
    assert await proc.wait() == 7
    assert time.monotonic() - began < 3
    child = int(out.texts()[0].split()[1])
    assert alive(child)
    await proc.stop(grace=1)
    assert not alive(child)


async def test_a_flood_of_lines_arrives_complete_in_chunks(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    count = 200_000
    code = f"import sys\nw = sys.stdout.write\nfor i in range({count}):\n    w(f'line {{i}}\\n')"
    proc, out = await launch(python(code, tmp_path), started)
    assert await proc.wait() == 0
    texts = out.texts()
    assert len(texts) == count
    assert texts[0] == "line 0"
    assert texts[-1] == f"line {count - 1}"
    # Delivered a chunk at a time, not line by line (how big a chunk is depends on how fast
    # the reader wakes up on a busy machine: ~40 lines seen under load, hundreds when quiet).
    assert out.calls < count / 10


async def test_very_long_lines_are_cut_with_the_cut_counted(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = (
        "import sys\n"
        "sys.stdout.write('x' * 5_000_000 + '\\n')\n"
        "sys.stdout.write('short\\n')\n"
        "sys.stdout.write('y' * 3_000_000)\n"  # no final newline
    )
    out = Collector()
    proc = LocalProcess(python(code, tmp_path), out, max_line_bytes=1000)
    started.append(proc)
    await proc.start()
    assert await proc.wait() == 0
    texts = out.texts()
    assert texts == [
        "x" * 1000 + " … [4999000 more bytes]",
        "short",
        "y" * 1000 + " … [2999000 more bytes]",
    ]


async def test_invalid_utf8_is_replaced_not_fatal(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = "import sys\nsys.stdout.buffer.write(b'caf\\xe9 ok\\r\\n')"
    proc, out = await launch(python(code, tmp_path), started)
    assert await proc.wait() == 0
    assert out.texts() == ["caf\ufffd ok"]


async def test_a_line_split_across_reads_is_joined_even_inside_a_character(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = (
        "import sys, time\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'one\\r\\ntwo caf\\xc3'); out.flush(); time.sleep(0.3)\n"
        "out.write(b'\\xa9\\r\\nthree\\n'); out.flush()\n"
    )
    proc, out = await launch(python(code, tmp_path), started)
    assert await proc.wait() == 0
    assert out.texts() == ["one", "two café", "three"]
    assert out.calls == 2  # two reads: the line was held over between them


async def test_ready_once_the_port_accepts_connections(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    port = free_port()
    code = (
        "import socket, time\n"
        "time.sleep(0.4)\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('listening')\n"
        "while True:\n    c, _ = s.accept(); c.close()\n"
    )
    proc, out = await launch(python(code, tmp_path, port=port), started)
    began = time.monotonic()
    assert await proc.wait_ready(within=10)
    assert time.monotonic() - began >= 0.3
    assert "listening" in out.texts()
    await proc.stop(grace=1)


async def test_not_ready_when_it_exits_before_listening(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    proc, _ = await launch(
        python("import time; time.sleep(0.2)", tmp_path, port=free_port()), started
    )
    assert not await proc.wait_ready(within=10)


async def test_not_ready_within_the_time_given(tmp_path: Path, started: list[LocalProcess]) -> None:
    proc, _ = await launch(
        python("import time; time.sleep(30)", tmp_path, port=free_port()), started
    )
    began = time.monotonic()
    assert not await proc.wait_ready(within=0.3)
    assert time.monotonic() - began < 2
    await proc.stop(grace=1)


async def test_a_port_already_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
        proc = LocalProcess(python("print('never')", tmp_path, port=port), Collector())
        with pytest.raises(ProcessError, match=f"port {port} is already in use"):
            await proc.start()
        assert proc.pid is None
    assert not port_in_use(port)


async def test_a_missing_cwd_or_program_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = LocalProcess(ProcessSpec("api", "true", str(missing)), Collector())
    with pytest.raises(ProcessError, match=f"api: working directory {missing} does not exist"):
        await proc.start()
    proc = LocalProcess(ProcessSpec("api", ["no-such-program-x"], str(tmp_path)), Collector())
    with pytest.raises(ProcessError, match="api: command not found: no-such-program-x"):
        await proc.start()


async def test_cancelling_a_stop_still_kills_the_group(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    code = IGNORES_SIGTERM
    proc, out = await launch(python(code, tmp_path), started)
    await out.until("up")
    assert proc.pid is not None
    stopping = asyncio.create_task(proc.stop(grace=30))
    await asyncio.sleep(0.2)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    pid = proc.pid
    await eventually(lambda: not alive(pid))


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_listening_sees_a_listener_and_not_a_bound_or_connected_socket(
    family: socket.AddressFamily, host: str
) -> None:
    with socket.socket(family) as bound:
        bound.bind((host, 0))
        port = bound.getsockname()[1]
        assert listening(port) is False  # bound, not listening
        bound.listen()
        assert listening(port) is True
        with socket.create_connection((host, port)) as client:
            assert listening(client.getsockname()[1]) is False  # a connection's own port
    assert listening(port) is False


# Closes its listener on SIGTERM, then stays until a file appears (a server draining its
# requests): the port is free while the process still runs.
DRAINS = """import os, signal, socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def closed(*_):
    listener.close()
    print("closed", flush=True)
    while not os.path.exists("let-go"):
        time.sleep(0.01)
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, closed)
print("up", flush=True)
while True:
    time.sleep(1)
"""


async def test_released_once_the_listener_is_closed_while_the_process_still_runs(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    port = free_port()
    spec = dataclasses.replace(
        python(DRAINS, tmp_path, port=port), command=[PY, "-u", "-c", DRAINS, str(port)]
    )
    proc, out = await launch(spec, started)
    assert await proc.wait_ready(within=10)
    released = asyncio.create_task(proc.wait_released())
    await asyncio.sleep(0.1)
    assert not released.done()  # still listening: not released
    stopping = asyncio.create_task(proc.stop(30))
    await asyncio.wait_for(released, 10)
    assert proc.returncode is None and not port_in_use(port)
    await out.until("closed")
    (tmp_path / "let-go").touch()
    assert await asyncio.wait_for(stopping, 10) == 0
    assert out.texts() == ["up", "closed", "bye"]


async def test_released_only_at_exit_when_it_listened_until_then(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    port = free_port()
    code = (
        "import signal, socket, sys, time\n"
        f"listener = socket.create_server(('127.0.0.1', {port}))\n"
        "def down(*_):\n"
        "    time.sleep(0.3)\n"
        "    open('exiting', 'w').close()\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, down)\n"
        "print('up', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc, _ = await launch(python(code, tmp_path, port=port), started)
    assert await proc.wait_ready(within=10)
    stopping = asyncio.create_task(proc.stop(30))
    await asyncio.wait_for(proc.wait_released(), 10)
    assert (tmp_path / "exiting").exists()  # its exit released it, nothing before
    assert await stopping == 3


async def test_a_process_not_listening_yet_is_released_only_at_exit(
    tmp_path: Path, started: list[LocalProcess]
) -> None:
    # It might bind the port later: only its exit frees the port for sure.
    proc, out = await launch(python(IGNORES_SIGTERM, tmp_path, port=free_port()), started)
    await out.until("up")
    stopping = asyncio.create_task(proc.stop(0.5))
    await asyncio.wait_for(proc.wait_released(), 10)
    assert proc.returncode == -9
    assert await stopping == -9


async def test_a_process_never_started_holds_no_port_and_stops_at_once(tmp_path: Path) -> None:
    # A reload can cancel a restart's start before the process exists: stopping what it
    # left must not fail (it stopped hot reload for good).
    proc = LocalProcess(python("print('never')", tmp_path, port=free_port()), Collector())
    await asyncio.wait_for(proc.wait_released(), 1)
    assert await proc.stop(1) is None
