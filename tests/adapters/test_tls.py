"""The lean TLS transport against a real TLS server on loopback (a certificate made by openssl):
bulk data both ways with backpressure, the server's close, a refused certificate, plain TCP."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cockpit.adapters.tls import open_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


class Collector(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.buf = bytearray(64 * 1024)
        self.pauses = 0
        self.paused = False
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.resumed = asyncio.Event()
        self.want = 0  # set by a test: ``enough`` is set once this many bytes came
        self.enough = asyncio.Event()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]
        if self.want and len(self.data) >= self.want:
            self.enough.set()

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.pauses += 1
        self.paused = True
        self.resumed.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.resumed.set()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=cockpit-test", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


@pytest.fixture
async def server(
    certificate: tuple[Path, Path],
) -> AsyncIterator[Callable[[Handler, bool], asyncio.Future[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: bool) -> int:
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
        srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)  # type: ignore[arg-type]
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start  # type: ignore[misc]
    for srv in servers:
        srv.close()


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


# Small fixed socket buffers at both ends: the backpressure test must see the socket fill up
# whatever the kernel's autotuning would allow (tcp_rmem's max can be tens of MB).
SMALL_BUFFER = 64 * 1024


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
async def test_bulk_echo_with_backpressure(
    server: Callable[[Handler, bool], asyncio.Future[int]],
    certificate: tuple[Path, Path],
    tls: bool,
) -> None:
    port = await server(echo, tls)
    transport, proto = await open_tls(
        Collector,
        "127.0.0.1",
        port,
        ssl_context=client_context(certificate) if tls else None,
    )
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    transport.set_write_buffer_limits(high=32 * 1024)
    payload = os.urandom(4 * 1024 * 1024)
    proto.want = len(payload)
    for start in range(0, len(payload), 256 * 1024):
        transport.write(payload[start : start + 256 * 1024])
        if proto.paused:
            await asyncio.wait_for(proto.resumed.wait(), 30)
    assert proto.pauses > 0  # the socket filled up and the protocol was told
    await asyncio.wait_for(proto.enough.wait(), 30)
    assert bytes(proto.data) == payload
    transport.close()
    assert await asyncio.wait_for(proto.lost, 10) is None
    assert transport.is_closing()


async def test_the_servers_close_ends_the_connection_after_its_data(
    server: Callable[[Handler, bool], asyncio.Future[int]], certificate: tuple[Path, Path]
) -> None:
    async def say_bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye" * 10_000)
        await writer.drain()
        writer.close()

    port = await server(say_bye, True)
    _, proto = await open_tls(Collector, "127.0.0.1", port, ssl_context=client_context(certificate))
    assert await asyncio.wait_for(proto.lost, 10) is None
    assert bytes(proto.data) == b"bye" * 10_000 and proto.eof


async def test_a_certificate_the_client_does_not_trust_is_refused(
    server: Callable[[Handler, bool], asyncio.Future[int]],
) -> None:
    port = await server(echo, True)
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_tls(Collector, "127.0.0.1", port, ssl_context=ssl.create_default_context())


async def test_nothing_listening_is_an_oserror() -> None:
    with socket_bound() as port, pytest.raises(ConnectionRefusedError):
        await open_tls(Collector, "127.0.0.1", port, ssl_context=None)


class socket_bound:
    """A loopback port that is bound but not listening (connections to it are refused)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
