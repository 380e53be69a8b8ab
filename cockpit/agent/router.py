"""The agent's data path: one listener per intercepted Service port, and per connection (raw
TCP) or per HTTP/1.1 request (framed by llhttp) the choice between a session's reverse channel
and the original pods behind the shadow Service. Every choice is a RouteTable lookup, so toggling an
intercept changes the next request, with no Kubernetes write."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import httptools

from cockpit.core.intercept import RouteTable, sniff_http1

log = logging.getLogger("cockpit.agent")

CHUNK = 256 * 1024
RESOLVE_TTL = 5.0
REPLAY_LIMIT = 1 << 20  # request bodies up to this size can be re-sent when a session drops
HEAD_LIMIT = 64 * 1024  # a longer request head is refused (431)
END_OF_HEAD = b"\r\n\r\n"
# A channel to a session opened for one client connection serves the next ones: a channel
# open is a round trip through the port-forward and a connect at the session's end. Idle
# ones are closed before common keep-alive timeouts of local servers (uvicorn: 5 s) run out.
IDLE_TTL = 4.0
IDLE_MAX = 32  # idle channels kept per (service, port, session)
# Channels opened ahead of need for every session ready to take them (intercept on or off):
# a toggle's first requests then find one waiting instead of paying an open's round trip.
# Only once its local process has kept a connection open after an answer: an idle connection
# would stall a server that serves one connection at a time (those close after each answer).
WARM = 4
WARM_AHEAD = 1.0  # seconds before IDLE_TTL at which a warm channel is replaced
WARM_RETRY = 1.0  # seconds before another try when a session could not open one


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...

    def at_eof(self) -> bool: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...


class SessionLinks(Protocol):
    """Opens a reverse channel to a session's local process (SSH forwarded-tcpip)."""

    async def open_reverse(
        self, session: str, service: str, port: int, peer: tuple[str, int], judge: bool = True
    ) -> tuple[Reader, Writer]:
        """A channel to ``session``'s local process; with ``judge``, a session that does not
        confirm it in time is dropped as frozen."""
        ...


Origin = Callable[[str, int], tuple[str, int]]
"""(service, port) -> address of the original pods: the shadow Service by name in-cluster."""


class UpstreamError(Exception):
    """Neither the session nor the original pods could be reached."""


@dataclass(slots=True)
class ServiceListeners:
    service: str
    ports: dict[int, int]  # service port -> agent port
    servers: list[asyncio.Server] = field(default_factory=list)


@dataclass(slots=True)
class Upstream:
    target: str | None  # session id, None = the original pods
    reader: Reader
    writer: Writer
    idle: bool = True  # at a message boundary with nothing in flight: can carry a request
    fresh: bool = True  # opened for this request: a frozen session would have failed the open

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def pipe(src: Reader, dst: Writer) -> bool:
    """Copy until EOF and pass the EOF on; False when either side failed."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
        return True
    except Exception as exc:  # a reset, a closed channel: the splice is over either way
        log.debug("pipe ended: %r", exc)
        return False


def _write_all(writer: Writer, pending: list[bytes]) -> None:
    """One write of everything in ``pending`` (emptied): each write is a send, and through a
    session's channel a packet across the port-forward. A lone chunk goes out uncopied."""
    if len(pending) == 1:
        writer.write(pending[0])
    elif pending:
        writer.write(b"".join(pending))
    pending.clear()


def _close_opened(task: asyncio.Future[tuple[Reader, Writer]]) -> None:
    """A channel whose open completed after nobody wanted it any more."""
    if not task.cancelled() and task.exception() is None:
        task.result()[1].close()


async def splice(a: tuple[Reader, Writer], b: tuple[Reader, Writer]) -> None:
    """Both directions until both end; a failure in one closes both."""
    tasks = [asyncio.ensure_future(pipe(a[0], b[1])), asyncio.ensure_future(pipe(b[0], a[1]))]
    try:
        for done in asyncio.as_completed(tasks):
            if not await done:
                break
    finally:
        for t in tasks:
            t.cancel()
        a[1].close()
        b[1].close()


class Router:
    """Listeners and routing for every Service the agent owns."""

    def __init__(
        self,
        table: RouteTable,
        links: SessionLinks,
        origin: Origin,
        bind: str = "0.0.0.0",
        sniff_timeout: float = 0.3,
        open_timeout: float = 2.0,
    ) -> None:
        self.table = table
        self.links = links
        self.origin = origin
        self.bind = bind
        self.sniff_timeout = sniff_timeout
        self.open_timeout = open_timeout
        self.services: dict[str, ServiceListeners] = {}
        self.served: Counter[tuple[str, str]] = Counter()  # (service, "origin"|session) -> n
        self._conns: set[asyncio.Task[None]] = set()
        self._addresses: dict[str, tuple[str, float]] = {}
        self._idle: dict[tuple[str, int, str], list[tuple[float, Upstream]]] = {}
        self._warm: set[tuple[str, int, str]] = set()
        self._keeps_alive: set[tuple[str, int, str]] = set()
        self._warming: dict[tuple[str, int, str], asyncio.Task[None]] = {}
        self._warm_retry: dict[tuple[str, int, str], float] = {}
        self._checks: dict[str, asyncio.Task[bool]] = {}

    def ports_in_use(self) -> set[int]:
        return {p for s in self.services.values() for p in s.ports.values()}

    async def open(self, service: str, ports: dict[int, int]) -> None:
        """Listen on ``ports`` (service port -> agent port) for ``service``; idempotent."""
        current = self.services.get(service)
        if current is not None:
            if current.ports == ports:
                return
            await self.close(service)
        entry = ServiceListeners(service, dict(ports))
        try:
            for port, agent_port in ports.items():
                server = await asyncio.start_server(
                    functools.partial(self.handle, service, port),
                    self.bind,
                    agent_port,
                    reuse_address=True,
                )
                entry.servers.append(server)
        except OSError:
            for s in entry.servers:
                s.close()
            raise
        self.services[service] = entry
        log.info("listening for %s on %s", service, ports)

    async def close(self, service: str) -> None:
        """Stop listening for ``service`` (connections already open carry on)."""
        entry = self.services.pop(service, None)
        if entry is None:
            return
        for s in entry.servers:
            s.close()
        log.info("stopped listening for %s", service)

    async def aclose(self) -> None:
        for service in list(self.services):
            await self.close(service)
        for t in [*self._conns, *self._warming.values(), *self._checks.values()]:
            t.cancel()
        self._warm.clear()
        self.prune_idle(float("inf"))

    # ------------------------------------------------------------- idle session channels

    def take_idle(self, service: str, port: int, session: str) -> Upstream | None:
        """A kept-alive channel to ``session``'s local process, if one is waiting."""
        stack = self._idle.get((service, port, session))
        now = asyncio.get_running_loop().time()
        while stack:
            since, up = stack.pop()
            if now - since < IDLE_TTL and not up.reader.at_eof():
                return up
            up.close()
        return None

    def park(self, service: str, port: int, up: Upstream) -> bool:
        """Keep ``up`` for the next client connection; False when it cannot serve one."""
        if (
            up.target is None  # the original pods: kube-proxy balances per connection
            or (service, port, up.target) not in self._warm  # released, or the session left
            or not up.idle
            or up.reader.at_eof()
        ):
            return False
        stack = self._idle.setdefault((service, port, up.target), [])
        if len(stack) >= IDLE_MAX:
            return False
        stack.append((asyncio.get_running_loop().time(), up))
        return True

    async def session_answers(self, service: str, port: int, session: str) -> bool:
        """Whether ``session`` still confirms a new channel in time. A session that does not
        is dropped by ``open_reverse``, which ends its channels: requests waiting on kept-alive
        channels then go to the original pods instead of hanging on a frozen laptop."""
        try:
            r, w = await asyncio.wait_for(
                self.links.open_reverse(session, service, port, ("", 0)), self.open_timeout * 2
            )
        except Exception:
            return False
        fresh = Upstream(session, r, w, fresh=False)
        if not self.park(service, port, fresh):
            fresh.close()
        return True

    def idle_count(self, service: str, port: int, session: str) -> int:
        """Open channels to ``session`` waiting for a client connection of ``service:port``."""
        return len(self._idle.get((service, port, session), ()))

    def keep_warm(self, service: str, port: int, session: str) -> None:
        """Keep WARM channels to ``session`` open for ``service:port`` from now on."""
        self._warm.add((service, port, session))

    def kept_alive(self, service: str, port: int, session: str) -> None:
        """A channel to ``session`` answered a request and stayed open: its local process
        keeps idle connections, so warm ones cannot stall it."""
        self._keeps_alive.add((service, port, session))

    def stop_warm(self, session: str, service: str | None = None) -> None:
        """No more warm channels to ``session`` (for ``service``, or any); its idle ones go."""
        for key in [k for k in self._warm | set(self._idle) if k[2] == session]:
            if service is not None and key[0] != service:
                continue
            self._warm.discard(key)
            self._keeps_alive.discard(key)
            self._warm_retry.pop(key, None)
            task = self._warming.pop(key, None)
            if task is not None:
                task.cancel()
            for _, up in self._idle.pop(key, []):
                up.close()

    def warm_up(self, now: float) -> None:
        """Top up the warm channels at loop time ``now`` (in the background)."""
        for key in self._warm & self._keeps_alive:
            if key in self._warming or self._warm_retry.get(key, 0.0) > now:
                continue
            if key[0] not in self.services:
                continue
            stack = self._idle.get(key, ())
            ready = sum(
                1
                for since, up in stack
                if now - since < IDLE_TTL - WARM_AHEAD and not up.reader.at_eof()
            )
            if ready < WARM:
                task = asyncio.create_task(self._open_warm(key, WARM - ready))
                self._warming[key] = task

    async def _open_warm(self, key: tuple[str, int, str], n: int) -> None:
        service, port, session = key
        opens = [
            asyncio.ensure_future(
                asyncio.wait_for(
                    # Not a verdict on the session: keepalives and requests are.
                    self.links.open_reverse(session, service, port, ("", 0), judge=False),
                    self.open_timeout * 2,
                )
            )
            for _ in range(n)
        ]
        try:
            for opened in asyncio.as_completed(opens):
                try:
                    r, w = await opened
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The local process is down, or the session went away: the request path
                    # falls back to the original pods by itself; try again in a while.
                    log.debug("no warm channel to %s for %s: %r", session, service, exc)
                    self._warm_retry[key] = asyncio.get_running_loop().time() + WARM_RETRY
                    continue
                up = Upstream(session, r, w, fresh=False)
                if not self.park(service, port, up):
                    up.close()
        finally:
            for task in opens:
                if not task.done():
                    task.cancel()
                    task.add_done_callback(_close_opened)
            if self._warming.get(key) is asyncio.current_task():
                del self._warming[key]

    def check_session(self, service: str, port: int, session: str) -> None:
        """``session_answers`` in the background, one check per session at a time."""
        if session in self._checks:
            return
        task = asyncio.ensure_future(self.session_answers(service, port, session))
        self._checks[session] = task
        task.add_done_callback(lambda _: self._checks.pop(session, None))

    def prune_idle(self, now: float) -> None:
        """Close idle channels older than IDLE_TTL at loop time ``now``."""
        for key, stack in list(self._idle.items()):
            keep = [(since, up) for since, up in stack if now - since < IDLE_TTL]
            for since, up in stack:
                if now - since >= IDLE_TTL:
                    up.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    # -------------------------------------------------------------------- connections

    async def _connect(self, service: str, port: int, target: str | None,
                       peer: tuple[str, int]) -> Upstream:  # fmt: skip
        """A stream to ``target``; a session that cannot be reached falls back to the origin."""
        if target is not None:
            try:
                r, w = await asyncio.wait_for(
                    self.links.open_reverse(target, service, port, peer), self.open_timeout * 2
                )
                return Upstream(target, r, w)
            except Exception as exc:
                log.info("session %s unreachable for %s (%r): original pods", target, service, exc)
        host, oport = self.origin(service, port)
        for attempt in (1, 2):
            try:
                address = await self._resolve(host, fresh=attempt == 2)
                r2, w2 = await asyncio.wait_for(
                    asyncio.open_connection(address, oport), self.open_timeout
                )
                return Upstream(None, r2, w2)
            except (OSError, TimeoutError) as exc:
                if attempt == 2:
                    raise UpstreamError(f"{host}:{oport}: {exc or type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def _resolve(self, host: str, fresh: bool = False) -> str:
        """``host``'s address, looked up at most every RESOLVE_TTL seconds: a lookup per
        proxied connection would cost a thread-pool hop and a DNS round trip each time."""
        loop = asyncio.get_running_loop()
        cached = self._addresses.get(host)
        if cached is not None and not fresh and cached[1] > loop.time():
            return cached[0]
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        address = str(infos[0][4][0])
        self._addresses[host] = (address, loop.time() + RESOLVE_TTL)
        return address

    async def handle(self, service: str, port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:  # fmt: skip
        task = asyncio.current_task()
        if task is not None:  # cancelled on shutdown
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)
        addr = writer.get_extra_info("peername") or ("", 0)
        peer = (str(addr[0]), int(addr[1]))
        try:
            first = await self._sniff(reader)
            if sniff_http1(first):
                await HttpRouting(self, service, port, peer, reader, writer).run(first)
            else:
                await self._raw(service, port, peer, first, reader, writer)
        except UpstreamError as exc:
            log.warning("%s:%d: no upstream: %s", service, port, exc)
        except Exception:
            log.exception("%s:%d: connection failed", service, port)
        finally:
            writer.close()

    async def _sniff(self, reader: asyncio.StreamReader) -> bytes:
        """The first bytes, enough to tell HTTP/1.x; b"" when the client waits for the server
        to speak first (then the connection is routed as raw TCP)."""
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sniff_timeout
        while sniff_http1(data) is None:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(CHUNK), left)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data

    async def _raw(self, service: str, port: int, peer: tuple[str, int], first: bytes,
                   reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # fmt: skip
        up = await self._connect(service, port, self.table.global_owner(service), peer)
        self.served[service, up.target or "origin"] += 1
        if first:
            up.writer.write(first)
        await splice((reader, writer), (up.reader, up.writer))


class BadMessage(Exception):
    """A message llhttp refuses (or a head over HEAD_LIMIT); ``status`` is what the client is
    answered, when nothing of an answer has reached it yet."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Message:
    """One message head, validated by llhttp (httptools) and read for what routing and framing
    need. Fed exactly the head's bytes: llhttp would go on into whatever follows."""

    __slots__ = ("chunked", "expect", "headers", "http10", "keep_alive", "length", "method",
                 "ready", "status")  # fmt: skip

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []  # (lower-case name, value), as they came
        self.ready = False
        self.method = b""
        self.status = 0
        self.keep_alive = False
        self.chunked = False
        self.length: int | None = None  # None: no Content-Length
        self.expect: bytes | None = None
        self.http10 = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.ready = True

    @classmethod
    def parse(cls, head: bytes, response: bool) -> Message:
        """``head`` up to and with its empty line."""
        self = cls()
        parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(self)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # the head is whole; whether the protocol changes is the answer's to say (101)
        except httptools.HttpParserError as exc:
            raise BadMessage(*_refusal(response, str(exc))) from exc
        if not self.ready:
            raise BadMessage(*_refusal(response, "incomplete head"))
        if isinstance(parser, httptools.HttpResponseParser):
            self.status = parser.get_status_code()
        else:
            self.method = parser.get_method()
        # llhttp has checked these (one Content-Length, not with Transfer-Encoding, digits).
        connection: list[bytes] = []
        for name, value in self.headers:
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif name == b"connection":
                connection += (t.strip().lower() for t in value.split(b","))
            elif name == b"expect":
                self.expect = value.strip().lower()
        self.http10 = parser.get_http_version() == "1.0"
        if b"close" in connection:
            self.keep_alive = False
        elif self.http10:
            self.keep_alive = b"keep-alive" in connection
        else:
            self.keep_alive = True
        return self


def _refusal(response: bool, why: str) -> tuple[int, str]:
    """What a client is told of a message llhttp refused: its own (400) or the upstream's."""
    return (502, f"bad answer: {why}") if response else (400, f"bad request: {why}")


class ChunkedBody:
    """Where a chunked body ends, validated by llhttp on the way. The body always ends right
    after a b"\\r\\n\\r\\n" (the last chunk, trailers, empty line), so llhttp is fed up to each
    such place and asked whether the message is complete there; never beyond it."""

    __slots__ = ("complete", "parser", "tail")

    # A head that puts a fresh parser at the start of a chunked body, whatever the real head
    # was (an upgrade request's parser, for one, parses nothing more).
    PRIMER = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def __init__(self) -> None:
        self.complete = False
        self.tail = b""  # the last 3 bytes fed: an end can straddle two reads
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(self.PRIMER)

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> int:
        """How many bytes of ``data`` are body: all of them unless the body ends inside."""
        ends: list[int] = []
        if self.tail:
            joint = (self.tail + data[:3]).find(END_OF_HEAD)
            if joint >= 0:
                ends.append(joint + 4 - len(self.tail))
        start = 0
        pos = data.find(END_OF_HEAD)
        try:
            for end in itertools.chain(ends, _ends(data, pos)):
                self.parser.feed_data(data[start:end])
                start = end
                if self.complete:
                    return end
            self.parser.feed_data(data[start:])
        except httptools.HttpParserError as exc:
            # An answer's broken body is never told to the client (its head went out already).
            raise BadMessage(*_refusal(False, str(exc))) from exc
        self.tail = (self.tail + data[-3:])[-3:]
        return len(data)


def _ends(data: bytes, pos: int) -> Iterator[int]:
    """Offsets just past each b"\\r\\n\\r\\n" in ``data``, the first found at ``pos``."""
    while pos >= 0:
        yield pos + 4
        pos = data.find(END_OF_HEAD, pos + 1)


def _without_expect(head: bytes) -> bytes:
    """``head`` without its Expect lines: the agent answers 100 itself, and may send the
    request again elsewhere, so the upstream must not wait for a go-ahead."""
    return b"\r\n".join(line for line in head.split(b"\r\n") if line[:7].lower() != b"expect:")


class HttpRouting:
    """One downstream HTTP/1.1 connection routed request by request. Messages are framed with
    llhttp (httptools) and passed on as the bytes that came: nothing is re-serialized."""

    def __init__(self, router: Router, service: str, port: int, peer: tuple[str, int],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # fmt: skip
        self.router = router
        self.service = service
        self.port = port
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.buf = b""  # read from the client, not yet passed on (the next request's start)
        self.answering = False  # a final answer to the current request reached the client
        self.pool: dict[str | None, Upstream] = {}

    async def run(self, first: bytes) -> None:
        self.buf = first
        try:
            while (head := await self._request_head()) is not None:
                self.answering = False
                if not await self._exchange(head, Message.parse(head, response=False)):
                    return
        except BadMessage as exc:
            self._reply_error(exc.status, str(exc))
        finally:
            for up in self.pool.values():
                if self.router.park(self.service, self.port, up):  # answered, still open
                    self.router.kept_alive(self.service, self.port, str(up.target))
                else:
                    up.close()

    async def _request_head(self) -> bytes | None:
        """The next request's head from the client; None when it has closed (or failed)."""
        data = self.buf.lstrip(b"\r\n")  # empty lines before a request are allowed
        searched = 0
        while (end := data.find(END_OF_HEAD, searched)) < 0:
            if len(data) > HEAD_LIMIT:
                raise BadMessage(431, "request head too large")
            if data.find(b"\n\n", max(0, searched - 1)) >= 0:
                # Lines ended by LF alone: llhttp refuses them, so say so now instead of
                # waiting for a CRLF that is not coming.
                raise BadMessage(400, "bad request: lines must end with CRLF")
            searched = max(0, len(data) - 3)
            try:
                more = await self.reader.read(CHUNK)
            except OSError:
                return None
            if not more:
                return None
            data = data + more if data else more.lstrip(b"\r\n")
        end += 4
        if end > HEAD_LIMIT:
            raise BadMessage(431, "request head too large")
        self.buf = data[end:]
        return data[:end]

    async def _upstream(self, target: str | None, reuse: bool = True) -> Upstream:
        """This connection's stream to ``target``: the one it used last, a channel kept
        open for the session, or a new one (always a new one when not ``reuse``)."""
        up = self.pool.get(target) if reuse else None
        if up is not None and (up.reader.at_eof() or not up.idle):
            up.close()  # the far side closed its keep-alive connection meanwhile
            del self.pool[target]
            up = None
        if up is None and target is not None and reuse:
            up = self.router.take_idle(self.service, self.port, target)
        if up is None:
            up = await self.router._connect(self.service, self.port, target, self.peer)
        # Whatever it came from, it is this connection's now: parked again (or closed) when
        # the client connection ends.
        old = self.pool.pop(up.target, None)
        if old is not None and old is not up:
            old.close()
        self.pool[up.target] = up
        up.idle = False  # until an answer ends at a message boundary
        return up

    async def _exchange(self, head: bytes, request: Message) -> bool:
        """Forward one request and its answer; False when the downstream must close."""
        target = self.router.table.route_request(self.service, request.headers)
        if request.expect is not None:
            if request.expect == b"100-continue" and not request.http10:
                self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = _without_expect(head)
        body: list[bytes] = []  # what can be sent again (up to REPLAY_LIMIT)
        body_size = 0
        complete = False
        up = await self._upstream(target)
        # The head goes out with the body's first bytes (or its end): one packet, not two.
        pending = [head]
        try:
            if request.chunked or request.length:
                remaining = request.length or 0
                chunks = ChunkedBody() if request.chunked else None
                while not complete:
                    if self.buf:
                        data, self.buf = self.buf, b""
                    else:
                        _write_all(up.writer, pending)  # before waiting for the client
                        try:
                            data = await self.reader.read(CHUNK)
                        except OSError:
                            data = b""
                        if not data:
                            return False  # the client went away mid-request
                    if chunks is None:
                        if len(data) > remaining:
                            data, self.buf = data[:remaining], data[remaining:]
                        remaining -= len(data)
                        complete = remaining == 0
                    else:
                        n = chunks.feed(data)
                        if n < len(data):
                            data, self.buf = data[:n], data[n:]
                        complete = chunks.complete
                    body_size += len(data)
                    if body_size <= REPLAY_LIMIT:
                        body.append(data)
                    pending.append(data)
                    if not complete:
                        _write_all(up.writer, pending)
                        await up.writer.drain()
            complete = True
            _write_all(up.writer, pending)
            await up.writer.drain()
            answered = await self._answer(up, request)
        except BadMessage:
            raise
        except Exception as exc:
            log.info("%s: upstream %s failed before answering: %r", self.service, up.target, exc)
            answered = None
        if answered is None:
            # Nothing reached the client yet: send the request once more.
            self.pool.pop(up.target, None)
            up.close()
            if not complete or body_size > REPLAY_LIMIT:
                self._reply_error(502, f"upstream {up.target or 'origin'} failed")
                return False
            # Decided anew (a session that dropped has no claims any more), on a new stream:
            # another kept-alive channel may have gone stale the same way.
            target = self.router.table.route_request(self.service, request.headers)
            up = await self._upstream(target, reuse=False)
            try:
                _write_all(up.writer, [head, *body])
                await up.writer.drain()
                answered = await self._answer(up, request)
            except BadMessage:
                raise
            except Exception as exc:
                log.info("%s: retry on the original pods failed: %r", self.service, exc)
                answered = None
            if answered is None:
                self.pool.pop(up.target, None)
                up.close()
                self._reply_error(502, "upstream failed")
                return False
        self.router.served[self.service, up.target or "origin"] += 1
        up.fresh = False
        if not up.idle:
            self.pool.pop(up.target, None)
            up.close()
        return answered

    async def _answer(self, up: Upstream, request: Message) -> bool | None:
        """Relay the upstream's answer. None: it failed before sending a whole head (the
        request can be sent again); otherwise whether the downstream connection may continue.
        ``up.idle`` tells whether the upstream can carry another request."""
        data = b""
        out: list[bytes] = []  # what one read of the upstream yields goes out in one write
        first = not (up.fresh or up.target is None)
        while True:  # informational answers (1xx), then the final one
            searched = 0
            while (end := data.find(END_OF_HEAD, searched)) < 0:
                if len(data) > HEAD_LIMIT:
                    raise BadMessage(502, f"answer head from {up.target or 'origin'} too large")
                searched = max(0, len(data) - 3)
                try:
                    more = await (
                        self._first_answer(up) if first and not out else up.reader.read(CHUNK)
                    )
                except Exception:
                    if not out:
                        return None
                    _write_all(self.writer, out)
                    return False
                if not more:
                    if not out:
                        return None
                    _write_all(self.writer, out)  # it ended after an informational answer
                    return False
                data += more
            end += 4
            head, data = data[:end], data[end:]
            answer = Message.parse(head, response=True)
            out.append(head)
            if answer.status == 101:
                if data:
                    out.append(data)
                _write_all(self.writer, out)
                await self._switch_protocols(up)
                return False
            if answer.status >= 200:
                break
        self.answering = True
        try:
            return await self._answer_body(up, request, answer, data, out)
        except Exception as exc:  # the answer broke off: the client sees its connection end
            log.debug("%s: answer from %s broke off: %r", self.service, up.target, exc)
            return False

    async def _answer_body(self, up: Upstream, request: Message, answer: Message, data: bytes,
                           out: list[bytes]) -> bool:  # fmt: skip
        """Relay the body of ``answer`` (``data`` is what came after its head); whether the
        downstream connection may continue."""
        if request.method == b"HEAD" or answer.status in (204, 304):
            remaining, chunks, until_eof = 0, None, False
        elif answer.chunked:
            remaining, chunks, until_eof = 0, ChunkedBody(), False
        elif answer.length is not None:
            remaining, chunks, until_eof = answer.length, None, False
        else:
            remaining, chunks, until_eof = 0, None, True  # its end is the connection's
        complete = not (chunks or remaining or until_eof)
        while not complete:
            if data:
                if chunks is not None:
                    n = chunks.feed(data)
                    complete = chunks.complete
                elif until_eof:
                    n = len(data)
                else:
                    n = min(remaining, len(data))
                    remaining -= n
                    complete = remaining == 0
                out.append(data if n == len(data) else data[:n])
                data = data[n:]
                if complete:
                    break
            _write_all(self.writer, out)
            await self.writer.drain()
            data = await up.reader.read(CHUNK)
            if not data:
                return False  # the end of a close-delimited body, or an answer cut short
        _write_all(self.writer, out)
        await self.writer.drain()
        keep_alive = request.keep_alive and answer.keep_alive
        # Bytes beyond the answer: the upstream is out of step, no more requests on it.
        up.idle = keep_alive and not data
        return keep_alive

    async def _first_answer(self, up: Upstream) -> bytes:
        """The first bytes of an answer on a kept-alive channel to a session. A slow answer
        is fine, a frozen session is not: when the answer takes a while, the session has to
        confirm a new channel (kept for later) or is dropped, which ends this one with b"".
        A timer, not a task per request: most answers come long before it fires."""
        assert up.target is not None
        check = asyncio.get_running_loop().call_later(
            self.router.open_timeout / 10, self.router.check_session,
            self.service, self.port, up.target,
        )  # fmt: skip
        try:
            return await up.reader.read(CHUNK)
        finally:
            check.cancel()

    async def _switch_protocols(self, up: Upstream) -> None:
        """After a 101 (WebSocket and friends) both sides speak something else: splice."""
        if self.buf:
            up.writer.write(self.buf)
            self.buf = b""
        self.pool.pop(up.target, None)
        await splice((self.reader, self.writer), (up.reader, up.writer))

    def _reply_error(self, status: int, reason: str) -> None:
        if self.answering:
            return  # part of an answer went out already: the client sees the connection end
        body = f"cockpit agent: {reason}\n".encode()
        self.writer.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), body)
        )
