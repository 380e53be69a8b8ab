"""The SPDY/3 codec under the port-forward: pure, no event loop, no cluster."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.adapters import spdy


class Collector:
    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.fins: list[int] = []
        self.controls: list[tuple[int, int, bytes]] = []
        self.decoder = spdy.FrameDecoder(self.on_data, self.on_control)

    def on_data(self, stream_id: int, chunk: memoryview, fin: bool) -> None:
        self.data.setdefault(stream_id, bytearray()).extend(chunk)
        if fin:
            self.fins.append(stream_id)

    def on_control(self, kind: int, flags: int, payload: bytes) -> None:
        self.controls.append((kind, flags, payload))


def parse_block(inflater: zlib._Decompress, block: bytes) -> dict[str, str]:
    raw = inflater.decompress(block)
    (count,) = struct.unpack_from("!I", raw)
    pos, out = 4, {}
    for _ in range(count):
        (n,) = struct.unpack_from("!I", raw, pos)
        name = raw[pos + 4 : pos + 4 + n].decode()
        pos += 4 + n
        (n,) = struct.unpack_from("!I", raw, pos)
        out[name] = raw[pos + 4 : pos + 4 + n].decode()
        pos += 4 + n
    assert pos == len(raw)
    return out


def test_syn_stream_carries_lower_case_headers_in_one_zlib_context() -> None:
    compressor = spdy.HeaderCompressor()
    inflater = zlib.decompressobj()
    got = Collector()
    for sid, kind in ((1, "error"), (3, "data")):
        block = compressor.block({"streamType": kind, "port": "8080", "requestID": "0"})
        got.decoder.feed(spdy.syn_stream(sid, block))
    assert [c[0] for c in got.controls] == [spdy.SYN_STREAM, spdy.SYN_STREAM]
    for (_, _, payload), (sid, kind) in zip(got.controls, ((1, "error"), (3, "data")), strict=True):
        assert spdy.stream_of(payload) == sid
        headers = parse_block(inflater, payload[10:])  # the second block reuses the context
        assert headers == {"streamtype": kind, "port": "8080", "requestid": "0"}


@given(
    frames=st.lists(
        st.tuples(st.sampled_from([3, 7, 11]), st.binary(max_size=5000), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=10),
)
def test_decoder_reassembles_data_whatever_the_read_boundaries(
    frames: list[tuple[int, bytes, bool]], cuts: list[int]
) -> None:
    stream = b"".join(spdy.data_frame(sid, data, fin=fin) for sid, data, fin in frames)
    stream += spdy.ping(2) + spdy.rst_stream(7, spdy.CANCEL)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    got = Collector()
    for start, end in itertools.pairwise(points):
        got.decoder.feed(stream[start:end])
    expected: dict[int, bytearray] = {}
    for sid, data, _ in frames:
        expected.setdefault(sid, bytearray()).extend(data)
    assert got.data == expected
    assert got.fins == [sid for sid, _, fin in frames if fin]
    assert got.controls == [
        (spdy.PING, 0, struct.pack("!I", 2)),
        (spdy.RST_STREAM, 0, struct.pack("!II", 7, spdy.CANCEL)),
    ]


def test_big_frames_are_split_by_length_not_copied_whole() -> None:
    payload = bytes(range(256)) * 1024
    got = Collector()
    frame = spdy.data_frame(5, payload)
    got.decoder.feed(frame[:1000])
    got.decoder.feed(frame[1000:])
    assert got.data[5] == payload


def test_other_versions_are_refused() -> None:
    frame = struct.pack("!II", 0x80000000 | (2 << 16) | spdy.PING, 4) + b"\0\0\0\1"
    with pytest.raises(spdy.SpdyError, match="version 2"):
        Collector().decoder.feed(frame)


def test_frame_layouts() -> None:
    assert spdy.data_frame(3, b"ab", fin=True) == b"\x00\x00\x00\x03\x01\x00\x00\x02ab"
    assert spdy.rst_stream(9, spdy.CANCEL) == bytes.fromhex("80030003000000080000000900000005")
    assert spdy.goaway() == bytes.fromhex("800300070000000800000000" + "00000000")
    assert spdy.data_header(1, 70000) == struct.pack("!II", 1, 70000)


async def test_an_api_server_without_spdy_falls_back_to_websockets() -> None:
    import asyncio
    import json

    from cockpit.adapters.portforward import ApiServer, open_pod_stream
    from cockpit.errors import NotFoundError

    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head.split("\r\n")[0].split(" ")[0])
        if "SPDY/3.1" in head:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        else:
            body = json.dumps({"kind": "Status", "message": 'pods "p" not found'}).encode()
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    api = ApiServer(f"http://127.0.0.1:{port}", None)
    try:
        with pytest.raises(NotFoundError, match='pods "p" not found'):
            await open_pod_stream(api, "ns", "p", 80, connect_timeout=5)
        assert seen == ["POST", "GET"]  # SPDY asked first, then a websocket
        assert api.transport == "websocket"  # and remembered
    finally:
        server.close()
