"""A lean TLS client transport for the API server's streaming connections: the socket's reads
decrypt straight into the protocol's buffer and each write is one encrypt and one send().

asyncio's own TLS layer spends a dozen Python calls per read and per write on state it
keeps for every kind of use; a port-forward relaying small requests pays them on every
request, so this transport does only what a client connection needs (no renegotiation, no
server side, no close_notify wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

_READ_SIZE = 256 * 1024  # bytes read from the socket at once, by default
_HIGH_WATER = 64 * 1024
_P = TypeVar("_P", bound=asyncio.BufferedProtocol)


class TlsTransport(asyncio.Transport):
    """A connected (TLS or plain) socket as an asyncio transport for a BufferedProtocol."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BufferedProtocol,
        sslobj: ssl.SSLObject | None,
        incoming: ssl.MemoryBIO | None,
        outgoing: ssl.MemoryBIO | None,
        *,
        read_size: int = _READ_SIZE,
    ) -> None:
        super().__init__({"socket": sock, "peername": _peername(sock), "ssl_object": sslobj})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._ssl = sslobj
        self._incoming = incoming
        self._outgoing = outgoing
        self._raw = bytearray(read_size)
        self._raw_view = memoryview(self._raw)
        self._out: deque[bytes | memoryview] = deque()  # views of immutable bytes only
        self._out_size = 0
        self._high = _HIGH_WATER
        self._low = _HIGH_WATER // 4
        self._writing_paused = False
        self._reading = True
        self._closing = False
        self._lost = False

    def start(self) -> None:
        """Hand the connection to the protocol and start reading."""
        self._protocol.connection_made(self)
        self._loop.add_reader(self._fd, self._on_readable)
        if self._ssl is not None and self._ssl.pending():
            # Application data that came with the end of the handshake
            self._loop.call_soon(self._decrypt_if_reading)

    # -- reading -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            n = self._sock.recv_into(self._raw)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if n == 0:
            self._eof()
            return
        self._received(self._raw_view[:n])

    def _received(self, data: memoryview) -> None:
        if self._ssl is None:
            self._deliver(data)
            return
        assert self._incoming is not None
        self._incoming.write(data)
        self._decrypt()

    def _deliver(self, data: memoryview) -> None:
        protocol = self._protocol
        while data and not self._lost:
            buf = memoryview(protocol.get_buffer(len(data)))
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            protocol.buffer_updated(n)
            data = data[n:]

    def _decrypt(self) -> None:
        sslobj, incoming = self._ssl, self._incoming
        assert sslobj is not None and incoming is not None
        protocol = self._protocol
        while self._reading and not self._lost:
            # Fill the protocol's buffer with as many records as there are, then hand it
            # over once: one pass of the framing and one send() downstream per socket read,
            # not one per 16 KiB record.
            buf = memoryview(protocol.get_buffer(-1))
            size = len(buf)
            if not size:
                break  # a protocol with no room: nothing can be decrypted for it now
            filled = 0
            end = False
            while filled < size:
                try:
                    n: int = sslobj.read(size - filled, buf[filled:])  # type: ignore[assignment]
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    end = True
                    break
                except ssl.SSLError as exc:
                    self._fatal(exc)
                    return
                if not n:
                    end = True
                    break
                filled += n
                if not incoming.pending and not sslobj.pending():
                    break  # all consumed: spare the read that would only raise SSLWantReadError
            if filled:
                protocol.buffer_updated(filled)
            if end:
                self._eof()
                return
            if filled < size:
                break
        assert self._outgoing is not None
        if self._outgoing.pending:  # a TLS 1.3 key update answers itself
            self._send(self._outgoing.read())

    def _eof(self) -> None:
        if self._lost:
            return
        keep_open = False
        with contextlib.suppress(Exception):
            keep_open = bool(self._protocol.eof_received())
        if not keep_open:
            self.close()
        else:
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if self._reading and not self._lost:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._lost and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)
            if self._ssl is not None and self._ssl.pending():
                self._loop.call_soon(self._decrypt_if_reading)

    def _decrypt_if_reading(self) -> None:
        if self._reading and not self._lost:
            self._decrypt()

    def is_reading(self) -> bool:
        return self._reading

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        if self._ssl is not None:
            assert self._outgoing is not None
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                self._fatal(exc)
                return
            data = self._outgoing.read()
        self._send(data)

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        if not self._out:
            n = self._try_send(data)
            if n is None or n == len(data):
                return
            data = memoryview(data)[n:]
            self._loop.add_writer(self._fd, self._on_writable)
        # Kept for later: a copy unless it is immutable (the caller may reuse its buffer).
        self._out.append(data if type(data) is bytes else bytes(data))
        self._out_size += len(data)
        if not self._writing_paused and self._out_size > self._high:
            self._writing_paused = True
            with contextlib.suppress(Exception):
                self._protocol.pause_writing()

    def _try_send(self, data: bytes | bytearray | memoryview) -> int | None:
        """Bytes the socket took now (0 when full); None after a fatal error."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fatal(exc)
            return None

    def _on_writable(self) -> None:
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        n = self._try_send(data)
        if n is None:
            return
        self._out_size = len(data) - n
        if self._out_size:
            out.append(memoryview(data)[n:])  # no copy of what is left
        else:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._finish(None)
                return
        if self._writing_paused and self._out_size <= self._low:
            self._writing_paused = False
            with contextlib.suppress(Exception):
                self._protocol.resume_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = _HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    # -- lifetime ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Stop reading; close once what was written has been sent."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._out:
            self._finish(None)

    def abort(self) -> None:
        self._finish(None)

    def _fatal(self, exc: BaseException) -> None:
        self._finish(exc if isinstance(exc, Exception) else None)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._out.clear()
        self._out_size = 0
        self._loop.call_soon(self._call_lost, exc)

    def _call_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def _peername(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


async def open_tls(
    protocol_factory: Callable[[], _P],
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    read_size: int = _READ_SIZE,
) -> tuple[TlsTransport, _P]:
    """Connect to ``host:port`` (TLS with ``ssl_context``, plain without) and start
    ``protocol_factory()`` on it; raises OSError / ssl.SSLError as the stdlib does."""
    loop = asyncio.get_running_loop()
    sock = await _connect(loop, host, port)
    try:
        sslobj = incoming = outgoing = None
        if ssl_context is not None:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            sslobj = ssl_context.wrap_bio(
                incoming, outgoing, server_hostname=server_hostname or host
            )
            await _handshake(loop, sock, sslobj, incoming, outgoing)
        protocol = protocol_factory()
        transport = TlsTransport(
            loop, sock, protocol, sslobj, incoming, outgoing, read_size=read_size
        )
    except BaseException:
        sock.close()
        raise
    transport.start()
    return transport, protocol


async def _connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise last or OSError(f"cannot resolve {host}")


async def _handshake(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    sslobj: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
) -> None:
    while True:
        try:
            sslobj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if outgoing.pending:
            await loop.sock_sendall(sock, outgoing.read())
        if done:
            return
        data = await loop.sock_recv(sock, _READ_SIZE)
        if not data:
            raise ConnectionResetError("the server closed the connection during the TLS handshake")
        incoming.write(data)
