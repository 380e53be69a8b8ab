"""The websocket codec under the port-forward: pure, no event loop, no cluster."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.adapters import websocket as ws


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame as a server sends it."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 0x10000:
        return bytes((b0, 126)) + struct.pack("!H", n) + payload
    return bytes((b0, 127)) + struct.pack("!Q", n) + payload


def unmask_client_frame(frame: bytes) -> tuple[int, bytes]:
    assert frame[0] & 0x80, "client frames are sent whole (FIN)"
    assert frame[1] & 0x80, "client frames must be masked"
    n = frame[1] & 0x7F
    offset = 2
    if n == 126:
        n, offset = struct.unpack_from("!H", frame, 2)[0], 4
    elif n == 127:
        n, offset = struct.unpack_from("!Q", frame, 2)[0], 10
    key = frame[offset : offset + 4]
    body = bytearray(frame[offset + 4 :])
    assert len(body) == n
    ws._mask_python(key, body)
    return frame[0] & 0x0F, bytes(body)


class Collector:
    def __init__(self) -> None:
        self.messages: list[bytearray] = []
        self.controls: list[tuple[int, bytes]] = []
        self.decoder = ws.FrameDecoder(self.on_data, self.on_control)

    def on_data(self, chunk: memoryview, first: bool) -> None:
        if first:
            self.messages.append(bytearray())
        self.messages[-1] += chunk

    def on_control(self, opcode: int, payload: bytes) -> None:
        self.controls.append((opcode, payload))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_client_frames_mask_and_frame_any_size(size: int) -> None:
    payload = os.urandom(size)
    frame = ws.encode_frame(ws.OP_BINARY, payload, prefix=b"\x00")
    assert unmask_client_frame(bytes(frame)) == (ws.OP_BINARY, b"\x00" + payload)


def test_fast_and_portable_masking_agree() -> None:
    data = os.urandom(10_003)
    key = os.urandom(4)
    a, b = bytearray(data), bytearray(data)
    ws.mask_in_place(key, a)
    ws._mask_python(key, b)
    assert a == b and a != bytearray(data)


def test_each_frame_gets_a_fresh_key() -> None:
    one = ws.encode_frame(ws.OP_BINARY, b"same")
    two = ws.encode_frame(ws.OP_BINARY, b"same")
    assert one[2:6] != two[2:6]


def test_control_frames_are_limited_to_125_bytes() -> None:
    with pytest.raises(ValueError):
        ws.encode_frame(ws.OP_PING, b"x" * 126)


@given(
    messages=st.lists(st.binary(min_size=1, max_size=70_000), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=400_000), max_size=12),
)
def test_decoder_reassembles_whatever_the_read_boundaries(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(server_frame(ws.OP_BINARY, m) for m in messages)
    stream += server_frame(ws.OP_PING, b"hi")
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    got = Collector()
    for start, end in itertools.pairwise(points):
        got.decoder.feed(stream[start:end])
    assert [bytes(m) for m in got.messages] == messages
    assert got.controls == [(ws.OP_PING, b"hi")]


def test_fragmented_message_is_one_message_and_controls_may_interleave() -> None:
    got = Collector()
    got.decoder.feed(
        server_frame(ws.OP_BINARY, b"\x00ab", fin=False)
        + server_frame(ws.OP_PING, b"p")
        + server_frame(ws.OP_CONTINUATION, b"cd")
        + server_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    assert [bytes(m) for m in got.messages] == [b"\x00abcd"]
    assert got.controls[0] == (ws.OP_PING, b"p")
    assert ws.parse_close_payload(got.controls[1][1]) == (1000, "bye")


@pytest.mark.parametrize(
    "frame",
    [
        bytes((0x82, 0x81)) + b"\x00\x00\x00\x00x",  # masked by the server
        server_frame(ws.OP_BINARY, b"x", rsv=0x40),  # reserved bit without an extension
        bytes((0x83, 0x01, 0x00)),  # unknown opcode
        server_frame(ws.OP_CONTINUATION, b"x"),  # continuation of nothing
        server_frame(ws.OP_PING, b"x", fin=False),  # fragmented control frame
        server_frame(ws.OP_BINARY, b"a", fin=False) + server_frame(ws.OP_BINARY, b"b"),
    ],
)
def test_protocol_violations_raise(frame: bytes) -> None:
    with pytest.raises(ws.WebSocketError):
        Collector().decoder.feed(frame)


def test_accept_key_matches_the_rfc_example() -> None:
    assert ws.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_and_answer() -> None:
    key = ws.new_key()
    request = ws.handshake_request(
        "api:6443", "/p?ports=80", key, ("v4.channel.k8s.io",), {"Authorization": "Bearer t"}
    )
    assert request.startswith(b"GET /p?ports=80 HTTP/1.1\r\nHost: api:6443\r\n")
    assert b"Authorization: Bearer t\r\n" in request and request.endswith(b"\r\n\r\n")
    answer = ws.parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {ws.accept_for(key)}\r\n".encode()
        + b"Sec-WebSocket-Protocol: v4.channel.k8s.io"
    )
    assert ws.check_upgrade(answer, key, ("v4.channel.k8s.io",)) == "v4.channel.k8s.io"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0", "HTTP 404 Not Found"),
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x", "different"),
        (b"SSH-2.0-OpenSSH", "not an HTTP answer"),
    ],
)
def test_bad_answers_are_refused(head: bytes, message: str) -> None:
    with pytest.raises(ws.WebSocketError, match=message):
        ws.check_upgrade(ws.parse_response_head(head), ws.new_key(), ("v4.channel.k8s.io",))
