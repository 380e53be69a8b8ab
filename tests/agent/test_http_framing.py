"""HTTP/1.1 framing through the agent's per-request routing, byte for byte: HEAD and bodiless
statuses, chunked bodies with trailers split across reads, 100-continue, upgrades, pipelining,
close-delimited answers, HTTP/1.0, malformed requests, and a replay when the session drops."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.agent.conftest import AgentFactory, App, Harness
from tests.agent.test_agent_local import _until, agent_port, route_store

WAIT = 10.0  # generous: the machine is shared


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]
    connection: int = 0  # which connection to the local process carried it (from 1)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


def _fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    out = []
    for line in lines:
        name, _, value = line.partition(b":")
        out.append((name.strip().lower(), value.strip()))
    return out


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    trailers = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailers.append(line[:-2])
    return bytes(body), _fields(trailers)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    start, *lines = head[:-4].split(b"\r\n")
    method, target, version = start.split(b" ")
    headers = _fields(lines)
    request = Request(method, target, version, headers, b"", [])
    if request.header(b"transfer-encoding") == b"chunked":
        request.body, request.trailers = await read_chunked(reader)
    else:
        request.body = await reader.readexactly(int(request.header(b"content-length") or 0))
    return request


Answer = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Scripted:
    """A local process that records each request and answers with raw bytes; ``answer``
    returns whether the connection goes on."""

    answer: Answer
    requests: list[Request] = field(default_factory=list)
    server: asyncio.Server | None = None
    connections: int = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while (request := await read_request(reader)) is not None:
                request.connection = connection
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


ScriptedFactory = Callable[[Answer], Awaitable[Scripted]]


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedFactory]:
    """Start Scripted local processes on 127.0.0.1; closed after the test."""
    started: list[asyncio.Server] = []

    async def start(answer: Answer) -> Scripted:
        s = Scripted(answer)
        s.server = await asyncio.start_server(s.serve, "127.0.0.1", 0)
        started.append(s.server)
        return s

    yield start
    for server in started:
        server.close()


def reply(*parts: bytes, keep: bool = True, pause: float = 0.0) -> Answer:
    """An answer written in ``parts`` (a pause between them: separate reads at the agent)."""

    async def answer(_: Request, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        return keep

    return answer


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def by_path(request: Request, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """200 with the request's path and body length as the body."""
    writer.write(ok(b"%s %d" % (request.target, len(request.body))))
    await writer.drain()
    return True


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    start, *lines = head[:-4].split(b"\r\n")
    status = int(start.split(b" ")[1])
    response = Response(status, _fields(lines), b"", [])
    if head_only or status in (204, 304) or 100 <= status < 200:
        return response
    if response.header(b"transfer-encoding") == b"chunked":
        response.body, response.trailers = await asyncio.wait_for(read_chunked(reader), WAIT)
    elif (length := response.header(b"content-length")) is not None:
        response.body = await asyncio.wait_for(reader.readexactly(int(length)), WAIT)
    else:
        response.body = await asyncio.wait_for(reader.read(), WAIT)
    return response


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the agent ends the connection (EOF, no further bytes)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT) == b""
    except ConnectionResetError:
        return True


Through = tuple[Scripted, asyncio.StreamReader, asyncio.StreamWriter]
ThroughFactory = Callable[[Answer], Awaitable[Through]]


@pytest.fixture
async def through(
    make_agent: AgentFactory, scripted: ScriptedFactory
) -> AsyncIterator[ThroughFactory]:
    """An agent, a Scripted local process that holds a global intercept, and a client
    connection to the agent."""
    clients: list[asyncio.StreamWriter] = []

    async def start(answer: Answer) -> Through:
        h = await make_agent()
        server = await scripted(answer)
        await global_to(h, server)
        reader, writer = await connect(h)
        clients.append(writer)
        return server, reader, writer

    yield start
    for writer in clients:
        writer.close()


async def global_to(h: Harness, server: Scripted) -> None:
    await route_store(await h.link("me"), server.port, "global")


async def connect(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", agent_port(h))


GET = b"GET %s HTTP/1.1\r\nHost: store\r\n\r\n"


async def test_a_head_answer_ends_at_its_head(through: ThroughFactory) -> None:
    async def answer(request: Request, _: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        body = b"x" * 1000
        w.write(ok(body)[: -len(body)] if request.method == b"HEAD" else ok(body))
        await w.drain()
        return True

    server, reader, writer = await through(answer)
    writer.write(b"HEAD / HTTP/1.1\r\nHost: store\r\n\r\n")
    head = await read_response(reader, head_only=True)
    assert (head.status, head.header(b"content-length")) == (200, b"1000")
    writer.write(GET % b"/after")
    after = await read_response(reader)
    assert (after.status, after.body) == (200, b"x" * 1000)
    assert [r.method for r in server.requests] == [b"HEAD", b"GET"]
    writer.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1000\r\n\r\n',
    ],
)
async def test_bodiless_statuses_end_at_their_head(through: ThroughFactory, answer: bytes) -> None:
    async def bodiless(request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if request.target == b"/none":
            w.write(answer)
            await w.drain()
            return True
        return await by_path(request, r, w)

    _, reader, writer = await through(bodiless)
    for _ in range(2):
        writer.write(GET % b"/none")
        first = await read_response(reader)
        assert (first.status, first.body) == (int(answer[9:12]), b"")
        writer.write(GET % b"/next")
        assert (await read_response(reader)).body == b"/next 0"
    writer.close()


async def test_a_chunked_request_with_trailers_split_across_reads(through: ThroughFactory) -> None:
    server, reader, writer = await through(by_path)
    # The chunk data holds what ends a chunked message elsewhere (b"\r\n\r\n"), and the
    # message's own end arrives split across two reads.
    pieces = [
        b"POST /up HTTP/1.1\r\nHost: store\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n8\r\n\r\n\r\nabcd\r\n",
        b"3;ext=1\r\nxyz\r\n0\r\nX-Sum: 16\r\n\r",
        b"\n" + GET % b"/next",  # and the next request right behind it
    ]
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    answer = await read_response(reader)
    assert answer.body == b"/up 16"
    assert (await read_response(reader)).body == b"/next 0"
    request = server.requests[0]
    assert request.body == b"hello\r\n\r\nabcdxyz"
    assert request.trailers == [(b"x-sum", b"16")]
    writer.close()


async def test_a_chunked_answer_with_trailers_split_across_reads(through: ThroughFactory) -> None:
    chunked = reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab",
        b"cd\r\n6\r\n\r\n\r\nxy\r\n",
        b"0\r\nX-Done: yes\r\n\r",
        b"\n",
        pause=0.05,
    )
    server, reader, writer = await through(chunked)
    for _ in range(2):  # and the kept-alive channel serves the next one
        writer.write(GET % b"/chunks")
        answer = await read_response(reader)
        assert answer.body == b"abcd\r\n\r\nxy"
        assert answer.trailers == [(b"x-done", b"yes")]
    first, second = server.requests
    assert first.connection == second.connection  # kept alive
    writer.close()


async def test_100_continue_is_answered_by_the_agent_and_not_passed_on(
    through: ThroughFactory,
) -> None:
    server, reader, writer = await through(by_path)
    writer.write(
        b"PUT /put HTTP/1.1\r\nHost: store\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    interim = await read_response(reader)
    assert interim.status == 100
    writer.write(b"hello")
    answer = await read_response(reader)
    assert (answer.status, answer.body) == (200, b"/put 5")
    (request,) = server.requests
    assert request.header(b"expect") is None
    assert request.body == b"hello"
    writer.close()


async def test_an_http_1_0_client_gets_no_100_continue(through: ThroughFactory) -> None:
    server, reader, writer = await through(by_path)
    writer.write(b"PUT /put HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
    answer = await read_response(reader)
    assert (answer.status, answer.body) == (200, b"/put 5")
    assert server.requests[0].header(b"expect") is None
    writer.close()


async def test_an_informational_answer_is_passed_on_before_the_final_one(
    through: ThroughFactory,
) -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    _, reader, writer = await through(reply(hints, ok(b"final"), pause=0.05))
    for _ in range(2):
        writer.write(GET % b"/")
        early = await read_response(reader)
        assert (early.status, early.header(b"link")) == (103, b"</style.css>; rel=preload")
        final = await read_response(reader)
        assert (final.status, final.body) == (200, b"final")


async def test_an_upgrade_carries_raw_bytes_both_ways(through: ThroughFactory) -> None:
    async def upgrade(request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        # The greeting rides in the same write as the 101: it must reach the client too.
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: shout\r\n"
                b"\r\nhello\n")  # fmt: skip
        while line := await r.readline():
            w.write(line.upper())
            await w.drain()
        return False

    _, reader, writer = await through(upgrade)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: store\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n"
    )
    assert (await read_response(reader)).status == 101
    assert await asyncio.wait_for(reader.readline(), WAIT) == b"hello\n"
    for word in (b"one\n", b"GET / HTTP/1.1\r\n"):  # not HTTP any more: passed through as is
        writer.write(word)
        assert await asyncio.wait_for(reader.readline(), WAIT) == word.upper()
    writer.write_eof()
    assert await closed(reader)
    writer.close()


async def test_pipelined_requests_are_answered_in_order(
    make_agent: AgentFactory, scripted: ScriptedFactory, apps: Callable[..., App]
) -> None:
    """Two requests in one write, the first to the original pods, the second to the session."""
    h = await make_agent()
    server = await scripted(by_path)
    await route_store(await h.link("me"), server.port, "personal")
    reader, writer = await connect(h)
    mine = b"GET /mine HTTP/1.1\r\nHost: store\r\nBaggage: cockpit-session=me\r\n\r\n"
    writer.write(GET % b"/" + mine + b"POST /two HTTP/1.1\r\nHost: store\r\nContent-Length: 3"
                 b"\r\nBaggage: cockpit-session=me\r\n\r\nabc" + GET % b"/")  # fmt: skip
    first = await read_response(reader)
    assert json.loads(first.body)["served_by"] == "cluster"
    assert (await read_response(reader)).body == b"/mine 0"
    assert (await read_response(reader)).body == b"/two 3"
    assert json.loads((await read_response(reader)).body)["served_by"] == "cluster"
    writer.close()


async def test_an_answer_with_connection_close_ends_the_client_connection(
    make_agent: AgentFactory,
    scripted: ScriptedFactory,
) -> None:
    closing = reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye")
    h = await make_agent()
    server = await scripted(closing)  # and keeps its end open: the agent must not wait on it
    await global_to(h, server)
    for _ in range(2):
        reader, writer = await connect(h)
        writer.write(GET % b"/")
        answer = await read_response(reader)
        assert (answer.body, answer.header(b"connection")) == (b"bye", b"close")
        assert await closed(reader)
        writer.close()
    assert len(server.requests) == 2


async def test_bytes_beyond_an_answer_retire_its_upstream_connection(
    through: ThroughFactory,
) -> None:
    async def overlong(request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(request.target) + (b"EXTRA" if request.target == b"/first" else b""))
        await w.drain()
        return True

    server, reader, writer = await through(overlong)
    for path in (b"/first", b"/second"):
        writer.write(GET % path)
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, path)
    first, second = server.requests
    assert first.connection != second.connection
    writer.close()


async def test_a_close_delimited_answer_is_passed_on_to_its_end(through: ThroughFactory) -> None:
    body = bytes(range(256)) * 1024
    until_close = reply(b"HTTP/1.1 200 OK\r\n\r\n", body[:1000], body[1000:], keep=False,
                        pause=0.05)  # fmt: skip
    _, reader, writer = await through(until_close)
    writer.write(GET % b"/")
    answer = await read_response(reader)  # no length: the body ends with the connection
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(body).digest()
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /old HTTP/1.0\r\nHost: store\r\n\r\n", b"GET /old HTTP/1.0\r\n\r\n"],
    ids=["host", "no-host"],
)
async def test_an_http_1_0_client_gets_its_answer_and_the_connection_ends(
    through: ThroughFactory, request_bytes: bytes
) -> None:
    _, reader, writer = await through(by_path)
    writer.write(request_bytes)
    answer = await read_response(reader)
    assert (answer.status, answer.body) == (200, b"/old 0")
    assert await closed(reader)
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: store\r\nno colon here\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: store\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: store\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nab\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: store\n\n",
    ],
    ids=["header-line", "two-lengths", "chunk-size", "bare-lf"],
)
async def test_a_malformed_request_gets_400_and_the_connection_ends(
    through: ThroughFactory, request_bytes: bytes
) -> None:
    server, reader, writer = await through(by_path)
    writer.write(request_bytes)
    answer = await read_response(reader)
    assert answer.status == 400
    assert await closed(reader)
    assert all(r.target != b"/" or r.body == b"" for r in server.requests)
    writer.close()


async def test_a_request_head_over_64_kib_gets_431(through: ThroughFactory) -> None:
    server, reader, writer = await through(by_path)
    writer.write(b"GET / HTTP/1.1\r\nHost: store\r\n" + b"X-Big: %s\r\n" % (b"y" * 70_000))
    answer = await read_response(reader)
    assert answer.status == 431
    assert await closed(reader)
    assert server.requests == []
    writer.close()


async def test_a_malformed_answer_gets_502(through: ThroughFactory) -> None:
    _, reader, writer = await through(reply(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"))
    writer.write(GET % b"/")
    answer = await read_response(reader)
    assert answer.status == 502
    assert b"bad answer" in answer.body
    assert await closed(reader)
    writer.close()


async def test_a_post_is_replayed_on_the_original_pods_when_the_session_drops_before_answering(
    make_agent: AgentFactory,
    scripted: ScriptedFactory,
) -> None:
    arrived = asyncio.Event()

    async def never(request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        arrived.set()
        await r.read()  # no answer, ever
        return False

    h = await make_agent()
    server = await scripted(never)
    link = await route_store(await h.link("me"), server.port, "global")
    reader, writer = await connect(h)
    body = bytes(range(256)) * 400  # 100 KiB, below the replay limit
    writer.write(b"POST /echo HTTP/1.1\r\nHost: store\r\nContent-Length: %d\r\n\r\n" % len(body))
    writer.write(body)
    await asyncio.wait_for(arrived.wait(), WAIT)
    link.abort()  # the laptop is gone: the agent routes back to the original pods
    answer = await read_response(reader)
    data = json.loads(answer.body)
    assert (answer.status, data["served_by"]) == (200, "cluster")
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert server.requests[0].body == body
    writer.close()


async def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(
    through: ThroughFactory,
) -> None:
    _, reader, writer = await through(by_path)
    writer.write(b"POST /last HTTP/1.1\r\nHost: store\r\nContent-Length: 2\r\n\r\nhi")
    writer.write_eof()
    assert (await read_response(reader)).body == b"/last 2"
    assert await closed(reader)
    writer.close()


async def test_a_client_that_closes_after_its_request_leaves_nothing_behind(
    make_agent: AgentFactory, scripted: ScriptedFactory
) -> None:
    answered = asyncio.Event()

    async def slow(request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.2)
        answered.set()
        return await by_path(request, r, w)

    h = await make_agent()
    server = await scripted(slow)
    await global_to(h, server)
    reader, writer = await connect(h)
    writer.write(GET % b"/gone")
    await writer.drain()
    writer.close()
    await asyncio.wait_for(answered.wait(), WAIT)
    await _until(lambda: not h.agent.router._conns, WAIT)  # over at the agent too
    assert [r.target for r in server.requests] == [b"/gone"]
    reader, writer = await connect(h)  # and the next client is served
    writer.write(GET % b"/next")
    assert (await read_response(reader)).body == b"/next 0"
    writer.close()
