"""The SPDY/3.1 framing the API server's port-forward speaks (as ``kubectl port-forward`` does):
frame encoding, header blocks, and an incremental decoder that passes data through as
memoryview slices. No I/O: ``cockpit.adapters.portforward`` drives it over asyncio TLS.

Header blocks are deflated without SPDY's preset dictionary: a zlib stream that declares no
dictionary inflates fine on the server, and cockpit never needs to read the server's header
blocks (the stream id in the frame says which stream was answered), so they are skipped.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping

VERSION = 3
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9
FLAG_FIN = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
CANCEL = 5
INTERNAL_ERROR = 6

MAX_LENGTH = (1 << 24) - 1
_HEAD = struct.Struct("!II")
_U32 = struct.Struct("!I")


class SpdyError(Exception):
    """The peer sent something that is not SPDY/3."""


def control_frame(kind: int, payload: bytes, flags: int = 0) -> bytes:
    return _HEAD.pack(0x80000000 | (VERSION << 16) | kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes | bytearray | memoryview, *, fin: bool = False) -> bytes:
    """One data frame (``data`` at most MAX_LENGTH bytes)."""
    return _HEAD.pack(stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def data_header(stream_id: int, length: int, *, fin: bool = False) -> bytes:
    """The 8-byte header of a data frame whose ``length`` bytes follow separately."""
    return _HEAD.pack(stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | length)


class HeaderCompressor:
    """One direction's header compression context (shared by every frame of a connection)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj()

    def block(self, headers: Mapping[str, str]) -> bytes:
        raw = [_U32.pack(len(headers))]
        for name, value in headers.items():
            key = name.lower().encode()  # SPDY/3 requires lower-case names
            val = value.encode()
            raw += [_U32.pack(len(key)), key, _U32.pack(len(val)), val]
        return self._zlib.compress(b"".join(raw)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


def syn_stream(stream_id: int, block: bytes, *, fin: bool = False) -> bytes:
    payload = struct.pack("!IIBB", stream_id, 0, 0, 0) + block
    return control_frame(SYN_STREAM, payload, FLAG_FIN if fin else 0)


def rst_stream(stream_id: int, status: int = CANCEL) -> bytes:
    return control_frame(RST_STREAM, _HEAD.pack(stream_id, status))


def ping(ping_id: int) -> bytes:
    return control_frame(PING, _U32.pack(ping_id))


def goaway(last_stream_id: int = 0, status: int = 0) -> bytes:
    return control_frame(GOAWAY, _HEAD.pack(last_stream_id, status))


def stream_of(payload: bytes) -> int:
    """The stream id that SYN_REPLY, RST_STREAM, HEADERS and WINDOW_UPDATE start with."""
    return int(_U32.unpack_from(payload)[0]) & 0x7FFFFFFF


class FrameDecoder:
    """Incremental decoder: ``on_data(stream_id, chunk, fin)`` for data (a frame may come in
    several chunks; ``fin`` is True on its last one when the frame ends the stream; an empty
    FIN frame gives one empty chunk), ``on_control(kind, flags, payload)`` for control
    frames, whole. Chunks are memoryview slices of what was fed, valid during the call."""

    __slots__ = (
        "_fin",
        "_head",
        "_kind",
        "_on_control",
        "_on_data",
        "_payload",
        "_remaining",
        "_stream",
    )

    def __init__(
        self,
        on_data: Callable[[int, memoryview, bool], None],
        on_control: Callable[[int, int, bytes], None],
    ) -> None:
        self._on_data = on_data
        self._on_control = on_control
        self._head = bytearray()
        self._remaining = -1  # payload bytes still to come; -1 = reading a header
        self._kind = 0  # control frame type, 0 for a data frame
        self._stream = 0
        self._fin = False
        self._payload = bytearray()  # a control frame's payload so far

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._remaining < 0:
                take = min(8 - len(self._head), end - pos)
                if not self._head and take == 8:
                    self._start(view[pos : pos + 8])
                else:
                    self._head += view[pos : pos + take]
                    if len(self._head) == 8:
                        self._start(memoryview(bytes(self._head)))
                        self._head.clear()
                pos += take
                continue
            take = min(self._remaining, end - pos)
            self._remaining -= take
            if self._kind:
                self._payload += view[pos : pos + take]
                if self._remaining == 0:
                    self._control_done()
            else:
                last = self._remaining == 0
                self._on_data(self._stream, view[pos : pos + take], self._fin and last)
                if last:
                    self._remaining = -1
            pos += take

    def _start(self, head: memoryview) -> None:
        w0, w1 = _HEAD.unpack(head)
        length = w1 & 0xFFFFFF
        flags = w1 >> 24
        if w0 & 0x80000000:
            version = (w0 >> 16) & 0x7FFF
            if version != VERSION:
                raise SpdyError(f"SPDY version {version}, not {VERSION}")
            self._kind = w0 & 0xFFFF
            if self._kind == 0:
                raise SpdyError("control frame of type 0")
            self._stream = 0
            self._fin = bool(flags & FLAG_FIN)
            self._payload = bytearray()
            self._remaining = length
            if length == 0:
                self._control_done()
            return
        self._kind = 0
        self._stream = w0
        self._fin = bool(flags & FLAG_FIN)
        self._remaining = length
        if length == 0:
            self._remaining = -1
            self._on_data(w0, memoryview(b""), self._fin)

    def _control_done(self) -> None:
        kind, flags, payload = self._kind, int(self._fin), bytes(self._payload)
        self._remaining = -1
        self._payload = bytearray()
        self._on_control(kind, flags, payload)
