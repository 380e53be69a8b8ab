"""The RFC 6455 pieces cockpit's port-forward speaks to the API server: the upgrade handshake
and a frame codec that passes data through as memoryview slices (no per-byte Python loops).

No I/O here: ``cockpit.adapters.portforward`` drives it over an asyncio TLS connection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_KNOWN = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY}) | _CONTROL

CLOSE_NORMAL = 1000
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class WebSocketError(Exception):
    """The peer broke the protocol (bad handshake answer, malformed or masked frame)."""


# -- masking ------------------------------------------------------------------------------
# Client frames must be masked with a fresh random key (RFC 6455 5.3). A C routine does
# ~10 GB/s where the best pure-Python form (four strided translate() calls) does ~0.35 GB/s,
# which would cap uploads; aiohttp (a dependency of the kubernetes client) ships one.


def _mask_python(key: bytes, data: bytearray) -> None:
    tables = [bytes(b ^ k for b in range(256)) for k in key]
    for i in range(4):
        data[i::4] = data[i::4].translate(tables[i])


def _load_fast_mask() -> Callable[[bytes, bytearray], None] | None:
    try:
        from aiohttp._websocket.mask import (  # type: ignore[import-not-found,unused-ignore]
            _websocket_mask_cython,
        )
    except ImportError:  # another aiohttp layout, or no compiled extension: stay correct
        return None
    fast: Callable[[bytes, bytearray], None] = _websocket_mask_cython
    probe = bytearray(b"\x00\x01\x02\x03\x04\x05")
    fast(b"\x01\x02\x03\x04", probe)  # guard against a changed signature or semantics
    return fast if probe == bytearray(b"\x01\x03\x01\x07\x05\x07") else None


_fast_mask = _load_fast_mask()
mask_in_place: Callable[[bytes, bytearray], None] = _fast_mask or _mask_python
"""XOR ``data`` in place with the 4-byte ``key`` repeated (masking and unmasking alike)."""


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    prefix: bytes = b"",
    key: bytes | None = None,
) -> bytearray:
    """One complete (FIN) client frame carrying ``prefix + payload``, masked with ``key``
    (a fresh random key when None). ``prefix`` is the channel byte of the k8s protocols, so
    callers never build ``prefix + payload`` themselves (one copy instead of two)."""
    length = len(prefix) + len(payload)
    if opcode in _CONTROL and length > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    if key is None:
        key = os.urandom(4)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 0x10000:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(length)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(length)
    start = len(head) + 4
    frame = bytearray(start + length)
    frame[start : start + len(prefix)] = prefix
    frame[start + len(prefix) :] = payload
    # The mask routine XORs a whole bytearray from offset 0, so mask the whole frame with the
    # key rotated to line up with the body, having stored the header pre-XORed with the same
    # key stream: the header comes out plain, and the payload is copied exactly once.
    rotated = bytes(key[(i - start) % 4] for i in range(4))
    frame[:start] = head + key
    for i in range(start):
        frame[i] ^= rotated[i % 4]
    mask_in_place(rotated, frame)
    return frame


def close_payload(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode()[:123]


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return _U16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")


class FrameDecoder:
    """Incremental decoder of server-to-client frames.

    Data frames (text, binary, continuation) are handed to ``on_data(chunk, first)`` as they
    arrive, possibly in several chunks per frame; ``first`` is True for the first chunk of a
    new message, whose first byte is the channel in Kubernetes' channel protocols. Control
    frames are handed whole to ``on_control(opcode, payload)``. The chunks are memoryview
    slices of the bytes passed to ``feed``: they stay valid (bytes are immutable) but a
    consumer must not expect ``bytes`` methods on them.
    """

    __slots__ = (
        "_control_buf",
        "_head",
        "_in_message",
        "_on_control",
        "_on_data",
        "_opcode",
        "_remaining",
        "_started",
    )

    def __init__(
        self,
        on_data: Callable[[memoryview, bool], None],
        on_control: Callable[[int, bytes], None],
    ) -> None:
        self._on_data = on_data
        self._on_control = on_control
        self._head = bytearray()  # a frame header split across feeds
        self._remaining = 0  # payload bytes still to come of the current frame
        self._opcode = -1  # opcode of the frame whose payload is being read; -1 = in header
        self._started = False  # True once the current data frame's first chunk was handed on
        self._in_message = False  # a fragmented data message awaits continuation frames
        self._control_buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._opcode < 0:
                pos = self._read_header(view, pos, end)
                continue
            take = min(self._remaining, end - pos)
            if self._opcode in _CONTROL:
                self._control_buf += view[pos : pos + take]
            elif take:
                first = not self._started and self._opcode != OP_CONTINUATION
                self._started = True
                self._on_data(view[pos : pos + take], first)
            pos += take
            self._remaining -= take
            if self._remaining == 0:
                self._frame_done()

    def _read_header(self, view: memoryview, pos: int, end: int) -> int:
        """Consume header bytes from ``view[pos:]``; return the new position."""
        head = self._head
        if not head and end - pos >= 14:
            # Fast path: a whole header (2..14 bytes) is in this chunk.
            b0, b1 = view[pos], view[pos + 1]
            size = self._header_size(b1)
            self._start_frame(b0, b1, view[pos : pos + size])
            return pos + size
        need = 2 if len(head) < 2 else self._header_size(head[1])
        take = min(need - len(head), end - pos)
        head += view[pos : pos + take]
        pos += take
        if len(head) == 2:
            need = self._header_size(head[1])
            take = min(need - 2, end - pos)
            head += view[pos : pos + take]
            pos += take
        if len(head) == need:
            self._start_frame(head[0], head[1], memoryview(bytes(head)))
            head.clear()
        return pos

    @staticmethod
    def _header_size(b1: int) -> int:
        if b1 & 0x80:
            raise WebSocketError("the server sent a masked frame")
        n = b1 & 0x7F
        return 2 if n < 126 else 4 if n == 126 else 10

    def _start_frame(self, b0: int, b1: int, header: memoryview) -> None:
        if b0 & 0x70:
            raise WebSocketError("the server set reserved bits (no extension was negotiated)")
        opcode = b0 & 0x0F
        if opcode not in _KNOWN:
            raise WebSocketError(f"unknown websocket opcode {opcode:#x}")
        fin = bool(b0 & 0x80)
        n = b1 & 0x7F
        if n == 126:
            n = _U16.unpack_from(header, 2)[0]
        elif n == 127:
            n = _U64.unpack_from(header, 2)[0]
        if opcode in _CONTROL:
            if n > 125 or not fin:
                raise WebSocketError("malformed control frame")
        elif opcode == OP_CONTINUATION:
            if not self._in_message:
                raise WebSocketError("continuation frame without a message")
            self._in_message = not fin
        else:
            if self._in_message:
                raise WebSocketError("new message before the previous one ended")
            self._in_message = not fin
        self._opcode = opcode
        self._remaining = n
        self._started = False
        if n == 0:
            self._frame_done()

    def _frame_done(self) -> None:
        opcode = self._opcode
        self._opcode = -1
        if opcode in _CONTROL:
            payload = bytes(self._control_buf)
            self._control_buf.clear()
            self._on_control(opcode, payload)


# -- handshake ----------------------------------------------------------------------------


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def handshake_request(
    host: str,
    target: str,
    key: str,
    protocols: tuple[str, ...],
    headers: Mapping[str, str] = {},
) -> bytes:
    """The HTTP/1.1 upgrade request for ``target`` (path and query)."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {', '.join(protocols)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """The status line and headers of the server's answer to the upgrade request."""

    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names


def parse_response_head(head: bytes) -> HttpAnswer:
    """Parse ``HTTP/1.1 101 Switching Protocols\\r\\nName: value...`` (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WebSocketError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return HttpAnswer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


def check_upgrade(answer: HttpAnswer, key: str, protocols: tuple[str, ...]) -> str:
    """Validate a 101 answer; return the subprotocol the server chose."""
    if answer.status != 101:
        raise WebSocketError(f"HTTP {answer.status} {answer.reason}".strip())
    if answer.headers.get("upgrade", "").lower() != "websocket":
        raise WebSocketError("the server did not upgrade to websocket")
    if answer.headers.get("sec-websocket-accept") != accept_for(key):
        raise WebSocketError("the server answered a different Sec-WebSocket-Key")
    chosen = answer.headers.get("sec-websocket-protocol", "")
    if chosen not in protocols:
        raise WebSocketError(f"the server chose subprotocol {chosen!r}, not one of {protocols}")
    return chosen
