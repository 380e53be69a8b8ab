"""Local child processes: each in its own process group, read line by line, stopped as a group."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cockpit.adapters.protocols import OutputLine, OutputSink, ProcessSpec
from cockpit.errors import ProcessError

DEFAULT_MAX_LINE_BYTES = 16 * 1024
# After the leader exits, how long its pipes may stay open before wait() returns anyway
# (a forked child can hold them open for as long as it lives).
OUTPUT_DRAIN_SECONDS = 0.5
GROUP_POLL_SECONDS = 0.02
PROBE_INTERVAL_SECONDS = 0.1
PROBE_HOSTS = ("127.0.0.1", "::1")
# While a stopping process still listens on its port, look again this often: a few ms at
# first (a graceful server closes its listener at once), then more slowly for one that keeps
# it until exit (it may take the whole stop timeout).
RELEASE_POLL_SECONDS = (0.001, 0.05)
RELEASE_FAST_SECONDS = 0.1


class LocalProcess:
    """A command started with ``start_new_session`` so that the whole tree can be signalled.

    Output is split into lines as it is read (no reader tasks, no buffering beyond one
    line); a line longer than ``max_line_bytes`` is cut and the cut counted in the line, so
    a flood or a newline-less stream never grows memory.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        on_output: OutputSink,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._on_output = on_output
        self._max_line_bytes = max_line_bytes
        self._clock = clock
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _ChildProtocol | None = None

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode() if self._transport is not None else None

    def argv(self) -> list[str]:
        command = self.spec.command
        return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)

    async def start(self) -> None:
        if self._transport is not None:
            raise RuntimeError(f"{self.spec.name} was already started")
        if not _is_dir(self.spec.cwd):
            raise ProcessError(
                f"{self.spec.name}: working directory {self.spec.cwd} does not exist"
            )
        if self.spec.port is not None and port_in_use(self.spec.port):
            raise ProcessError(
                f"{self.spec.name}: port {self.spec.port} is already in use",
                hint="stop whatever listens there, or change the service's port in cockpit.yaml",
            )
        argv = self.argv()
        loop = asyncio.get_running_loop()
        protocol = _ChildProtocol(loop, self._on_output, self._max_line_bytes, self._clock)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.spec.cwd,
                env=dict(self.spec.env),
                # Its own session (and so process group): cockpit signals the whole tree,
                # and a Ctrl-C in cockpit's terminal does not reach it directly.
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ProcessError(f"{self.spec.name}: command not found: {argv[0]}") from exc
        except PermissionError as exc:
            raise ProcessError(
                f"{self.spec.name}: cannot run {argv[0]}: permission denied"
            ) from exc
        except OSError as exc:
            raise ProcessError(f"{self.spec.name}: cannot start {argv[0]}: {exc.strerror}") from exc
        except ValueError as exc:  # e.g. an embedded NUL byte
            raise ProcessError(f"{self.spec.name}: cannot start {argv[0]}: {exc}") from exc
        self._transport = transport
        self._protocol = protocol

    async def wait(self) -> int:
        transport, protocol = self._started()
        await asyncio.shield(protocol.exited)
        await self._drain(OUTPUT_DRAIN_SECONDS)
        if protocol.pipes_closed.done():
            transport.close()  # nothing left to read; a held pipe is closed by stop()
        code = transport.get_returncode()
        assert code is not None
        return code

    async def wait_ready(self, within: float | None = None) -> bool:
        _, protocol = self._started()
        port = self.spec.port
        if port is None:
            return not protocol.exited.done()
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while not protocol.exited.done():
            if await _accepts_connection(port):
                return not protocol.exited.done()
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.wait({protocol.exited}, timeout=PROBE_INTERVAL_SECONDS)
        return False

    async def wait_released(self) -> None:
        if self._protocol is None:
            return  # never started (a start cancelled by a reload): nothing holds the port
        protocol = self._protocol
        port = self.spec.port
        # Nothing listening at the first look: the process never got as far as listening (or
        # it cannot be told), and a process still starting may bind the port later.
        if port is None or listening(port) is not True:
            await asyncio.shield(protocol.exited)
            return
        loop = asyncio.get_running_loop()
        fast_until = loop.time() + RELEASE_FAST_SECONDS
        while not protocol.exited.done() and listening(port):
            fast, slow = RELEASE_POLL_SECONDS
            interval = fast if loop.time() < fast_until else slow
            await asyncio.wait({protocol.exited}, timeout=interval)

    async def stop(self, grace: float) -> int | None:
        if self._transport is None or self._protocol is None:
            return None
        transport, protocol = self._transport, self._protocol
        pgid = transport.get_pid()  # start_new_session: the leader's pid is the group id
        try:
            # A running leader needs no /proc scan (~10 ms on a busy machine) before SIGTERM:
            # a hot reload waits on this stop.
            if not protocol.exited.done() or _group_alive(pgid):
                _signal_group(pgid, signal.SIGTERM)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + grace
                # The leader's exit is an event: no polling delay on the usual path (a hot
                # reload waits on this stop), then the group for whatever it left behind.
                await asyncio.wait({protocol.exited}, timeout=grace)
                if not await _group_gone(pgid, max(0.0, deadline - loop.time())):
                    _signal_group(pgid, signal.SIGKILL)
                    await _group_gone(pgid, grace=5.0)
            await asyncio.shield(protocol.exited)
            await self._drain(OUTPUT_DRAIN_SECONDS)
        except asyncio.CancelledError:
            # Quitting mid-stop must still leave nothing running.
            _signal_group(pgid, signal.SIGKILL)
            transport.close()
            raise
        transport.close()
        return transport.get_returncode()

    def _started(self) -> tuple[asyncio.SubprocessTransport, _ChildProtocol]:
        if self._transport is None or self._protocol is None:
            raise RuntimeError(f"{self.spec.name} was not started")
        return self._transport, self._protocol

    async def _drain(self, grace: float) -> None:
        """Let the last output arrive; a pipe held open by a live child is left to stop()."""
        _, protocol = self._started()
        await asyncio.wait({protocol.pipes_closed}, timeout=grace)
        if protocol.sink_error is not None:
            raise protocol.sink_error  # a failing output sink is a bug: let it surface


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Splits the child's output into lines as it arrives and notes its exit.

    asyncio's own Process.wait() (3.11) waits for the pipes to close as well, which never
    happens while a forked child holds them; this protocol reports the exit on its own.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_output: OutputSink,
        max_line_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self.sink_error: Exception | None = None
        self._on_output = on_output
        self._clock = clock
        self._splitters = {
            1: _LineSplitter("stdout", max_line_bytes),
            2: _LineSplitter("stderr", max_line_bytes),
        }

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._deliver(self._splitters[fd].feed(data, self._clock()))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        splitter = self._splitters.pop(fd, None)
        if splitter is not None:
            self._deliver(splitter.finish(self._clock()))
        if not self._splitters and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _deliver(self, lines: list[OutputLine]) -> None:
        if not lines:
            return
        try:
            self._on_output(lines)
        except Exception as exc:
            self.sink_error = self.sink_error or exc


class _LineSplitter:
    """Bytes in, whole lines out; keeps at most ``limit`` bytes of an unfinished line."""

    def __init__(self, stream: str, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.partial = bytearray()
        self.cut = 0  # bytes of the current line dropped past the limit

    def feed(self, chunk: bytes, ts: float) -> list[OutputLine]:
        pieces = chunk.split(b"\n")
        rest = pieces.pop()  # after the last newline: the start of an unfinished line
        lines: list[OutputLine] = []
        if pieces and (self.partial or self.cut):
            self._keep(pieces.pop(0))
            lines.append(self._line(ts))
        if pieces:
            stream = self.stream
            if max(map(len, pieces)) <= self.limit:
                # The common case: one decode and one split for the whole chunk, in C.
                texts = b"\n".join(pieces).decode("utf-8", "replace").split("\n")
                if b"\r" in chunk:
                    texts = [text.rstrip("\r") for text in texts]
                lines.extend([OutputLine(stream, text, ts) for text in texts])
            else:
                for piece in pieces:
                    self._keep(piece)
                    lines.append(self._line(ts))
        self._keep(rest)
        return lines

    def finish(self, ts: float) -> list[OutputLine]:
        return [self._line(ts)] if self.partial or self.cut else []

    def _keep(self, piece: bytes) -> None:
        room = self.limit - len(self.partial)
        if room > 0:
            self.partial += piece[:room]
        self.cut += max(0, len(piece) - max(room, 0))

    def _line(self, ts: float) -> OutputLine:
        text = bytes(self.partial).decode("utf-8", "replace").rstrip("\r")
        if self.cut:
            text = f"{text} … [{self.cut} more bytes]"
        self.partial.clear()
        self.cut = 0
        return OutputLine(self.stream, text, ts)


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def own_output_files() -> tuple[str, ...]:
    """The regular files this process's stdout and stderr write to (``cockpit up --headless >
    session.jsonl``), as real paths; empty for a terminal or a pipe, or where the kernel does
    not say which file an open descriptor is (not Linux)."""
    found: list[str] = []
    for fd in (1, 2):
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.isabs(path) and path not in found:
            found.append(os.path.realpath(path))
    return tuple(found)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on ``host:port`` (a bind test, so a TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise ProcessError(f"cannot check port {port}: {exc.strerror}") from exc
    return False


# sock_diag (Linux): the kernel lists the listening TCP sockets only, in ~0.1 ms; reading
# /proc/net/tcp walks every socket on the machine (~30 ms with a cluster's connections).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_DIAG_SPORT_OFFSET = 16 + 4  # nlmsghdr, then inet_diag_msg: family, state, timer, retrans


def listening(port: int) -> bool | None:
    """True if a TCP socket of this network namespace listens on ``port`` (any address,
    IPv4 or IPv6); None where the kernel cannot be asked (not Linux). No side effects: it
    neither binds nor connects."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        return any(port in _listening_ports(family) for family in (socket.AF_INET, socket.AF_INET6))
    except OSError:
        return None


def _listening_ports(family: int) -> set[int]:
    # struct inet_diag_req_v2: family, protocol, ext, pad, states; a zeroed inet_diag_sockid
    request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN) + bytes(48)
    header = struct.pack(
        "=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
    )
    ports: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as diag:
        diag.send(header + request)
        while True:
            data = diag.recv(65536)
            if not data:
                return ports
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return ports
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    raise OSError(-code, os.strerror(-code))
                ports.add(struct.unpack_from("!H", data, offset + _DIAG_SPORT_OFFSET)[0])
                offset += max(16, (length + 3) & ~3)


async def _accepts_connection(port: int) -> bool:
    for host in PROBE_HOSTS:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group is running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)  # cheap and certain when the group is empty: no /proc scan
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a member we may not signal is still a member; /proc tells
    # Something is in the group: a zombie nobody reaps yet does not count.
    members = group_members(pgid)
    return bool(members) if members is not None else True


def group_members(pgid: int) -> list[int] | None:
    """Pids of the live (non-zombie) processes in group ``pgid``; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


async def _group_gone(pgid: int, grace: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while _group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(GROUP_POLL_SECONDS)
    return True


def process_factory(spec: ProcessSpec, on_output: OutputSink) -> LocalProcess:
    """The real ProcessFactory."""
    return LocalProcess(spec, on_output)
