"""The agent's data path: one listener per intercepted Service port, and per connection (raw
TCP) or per HTTP/1.1 request (h11) the choice between a session's reverse channel and the
original pods behind the shadow Service. Every choice is a RouteTable lookup, so toggling an
intercept changes the next request, with no Kubernetes write."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import h11

from cockpit.core.intercept import RouteTable, sniff_http1

log = logging.getLogger("cockpit.agent")

CHUNK = 256 * 1024
RESOLVE_TTL = 5.0
REPLAY_LIMIT = 1 << 20  # request bodies up to this size can be re-sent when a session drops
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
    conn: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
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
            or up.conn.our_state is not h11.IDLE
            or up.conn.their_state is not h11.IDLE
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


class HttpRouting:
    """One downstream HTTP/1.1 connection routed request by request."""

    def __init__(self, router: Router, service: str, port: int, peer: tuple[str, int],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # fmt: skip
        self.router = router
        self.service = service
        self.port = port
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.down = h11.Connection(h11.SERVER)
        self.pool: dict[str | None, Upstream] = {}

    async def run(self, first: bytes) -> None:
        self.down.receive_data(first)
        try:
            while True:
                event = await self._next_down()
                if not isinstance(event, h11.Request):
                    return
                if not await self._exchange(event):
                    return
                if self.down.our_state is not h11.DONE or self.down.their_state is not h11.DONE:
                    return
                self.down.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            self._reply_error(exc.error_status_hint, "bad request")
        finally:
            for up in self.pool.values():
                if self.router.park(self.service, self.port, up):  # answered, still open
                    self.router.kept_alive(self.service, self.port, str(up.target))
                else:
                    up.close()

    async def _next_down(self, before_wait: Callable[[], None] | None = None) -> object:
        """The next h11 event from the client; None when reading failed. ``before_wait`` runs
        when the client has to be waited for (to send what is pending first)."""
        while True:
            event = self.down.next_event()
            if event is h11.NEED_DATA:
                if before_wait is not None:
                    before_wait()
                try:
                    data = await self.reader.read(CHUNK)
                except OSError:
                    return None
                self.down.receive_data(data)
                continue
            return event

    async def _upstream(self, target: str | None, reuse: bool = True) -> Upstream:
        """This connection's stream to ``target``: the one it used last, a channel kept
        open for the session, or a new one (always a new one when not ``reuse``)."""
        up = self.pool.get(target) if reuse else None
        if up is not None and (up.reader.at_eof() or up.conn.our_state is not h11.IDLE):
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
        return up

    async def _exchange(self, request: h11.Request) -> bool:
        """Forward one request and its answer; False when the downstream must close."""
        target = self.router.table.route_request(self.service, request.headers)
        if self.down.they_are_waiting_for_100_continue:
            self.writer.write(
                self.down.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        head = h11.Request(
            method=request.method,
            target=request.target,
            headers=[(n, v) for n, v in request.headers.raw_items() if n.lower() != b"expect"],
        )
        body: list[bytes] = []
        body_size = 0
        complete = False
        up = await self._upstream(target)
        # The head goes out with the body's first bytes (or its end): one packet, not two.
        pending: list[bytes] = []
        send_pending = functools.partial(_write_all, up.writer, pending)
        try:
            pending.append(up.conn.send(head))
            while not complete:
                event = await self._next_down(send_pending)
                if isinstance(event, h11.Data):
                    data = bytes(event.data)
                    body_size += len(data)
                    if body_size <= REPLAY_LIMIT:
                        body.append(data)
                    pending.extend(up.conn.send_with_data_passthrough(h11.Data(data=data)) or ())
                    send_pending()
                    await up.writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    pending.append(up.conn.send(event))
                    complete = True
                else:
                    return False  # the client went away mid-request
            send_pending()
            await up.writer.drain()
            answered = await self._answer(up)
        except h11.RemoteProtocolError:
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
            target = self.router.table.route_request(self.service, head.headers)
            up = await self._upstream(target, reuse=False)
            try:
                up.writer.write(up.conn.send(head))
                for chunk in body:
                    up.writer.write(up.conn.send(h11.Data(data=chunk)))
                up.writer.write(up.conn.send(h11.EndOfMessage()))
                await up.writer.drain()
                answered = await self._answer(up)
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
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
        else:
            self.pool.pop(up.target, None)
            up.close()
        return answered

    async def _answer(self, up: Upstream) -> bool | None:
        """Relay the upstream's response. None: it failed before sending anything (retryable);
        otherwise whether the downstream connection may continue."""
        started = False
        # What one read of the upstream yields (head, body, end) goes to the client in one write.
        out: list[bytes] = []
        while True:
            event = up.conn.next_event()
            if event is h11.NEED_DATA:
                if out:
                    _write_all(self.writer, out)
                    await self.writer.drain()
                try:
                    if started or up.fresh or up.target is None:
                        data = await up.reader.read(CHUNK)
                    else:
                        data = await self._first_answer(up)
                except Exception:
                    if not started:
                        return None
                    raise
                if not data and not started:
                    return None
                up.conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                if not started:
                    return None
                _write_all(self.writer, out)
                return False
            if isinstance(event, h11.InformationalResponse | h11.Response):
                started = True
                head = type(event)(
                    status_code=event.status_code,
                    headers=list(event.headers.raw_items()),
                    reason=event.reason,
                )
                out.append(self.down.send(head))
                if event.status_code == 101:
                    _write_all(self.writer, out)
                    await self._switch_protocols(up)
                    return False
            elif isinstance(event, h11.Data):
                out.extend(self.down.send_with_data_passthrough(event) or ())
            elif isinstance(event, h11.EndOfMessage):
                out.append(self.down.send(event))
                _write_all(self.writer, out)
                await self.writer.drain()
                return True

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
        leftover_down, _ = self.down.trailing_data
        leftover_up, _ = up.conn.trailing_data
        if leftover_down:
            up.writer.write(leftover_down)
        if leftover_up:
            self.writer.write(leftover_up)
        self.pool.pop(up.target, None)
        await splice((self.reader, self.writer), (up.reader, up.writer))

    def _reply_error(self, status: int, reason: str) -> None:
        if self.down.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"cockpit agent: {reason}\n".encode()
        with contextlib.suppress(h11.LocalProtocolError):
            self.writer.write(
                self.down.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("content-type", "text/plain"),
                            ("content-length", str(len(body))),
                            ("connection", "close"),
                        ],
                    )
                )
                + self.down.send(h11.Data(data=body))
                + self.down.send(h11.EndOfMessage())
            )
