"""ChunkedBody finds the end of a chunked body however the bytes are split into reads, with
the next message right behind it, and lets llhttp refuse a broken one. No event loop."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.agent.router import BadMessage, ChunkedBody, Message

NEXT = b"GET /next HTTP/1.1\r\nHost: store\r\n\r\n"


def chunked(chunks: list[bytes], trailers: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return body + b"0\r\n" + b"".join(b"%s: %s\r\n" % t for t in trailers) + b"\r\n"


def feed_in_reads(data: bytes, cuts: list[int]) -> tuple[int, bytes]:
    """Feed ``data`` cut at ``cuts`` as reads would come; the body's length and what is left."""
    body = ChunkedBody()
    edges = [0, *sorted(set(cuts)), len(data)]
    taken = 0
    for start, end in itertools.pairwise(edges):
        read = data[start:end]
        if not read:
            continue
        n = body.feed(read)
        taken += n
        if body.complete:
            return taken, data[taken:]
        assert n == len(read)
    raise AssertionError("the body never ended")


# Chunk data with what ends a chunked body elsewhere, and CR/LF runs around it.
DATA = st.lists(
    st.sampled_from([b"a", b"\r", b"\n", b"\r\n\r\n", b"0\r\n\r\n", b"xyz"]), max_size=8
)


@given(
    chunks=st.lists(DATA.map(b"".join), max_size=5),
    trailers=st.lists(st.sampled_from([(b"X-Sum", b"1"), (b"X-Done", b"yes")]), max_size=2),
    data=st.data(),
)
def test_the_end_is_found_wherever_reads_split_the_body(
    chunks: list[bytes], trailers: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    message = chunked(chunks, trailers)
    whole = message + NEXT
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=6))
    length, rest = feed_in_reads(whole, cuts)
    assert length == len(message)
    assert rest == NEXT


def test_the_end_is_found_with_one_cut_anywhere() -> None:
    message = chunked([b"ab\r\n\r\ncd", b"\r\n"], [(b"X-Sum", b"8")])
    for cut in range(len(message) + len(NEXT)):
        assert feed_in_reads(message + NEXT, [cut]) == (len(message), NEXT), cut


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nab\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n", b"3\nabc\n0\r\n\r\n"],
    ids=["size", "overlong-chunk", "bare-lf"],
)
def test_a_broken_body_is_refused(body: bytes) -> None:
    with pytest.raises(BadMessage):
        ChunkedBody().feed(body)


@pytest.mark.parametrize(
    ("head", "keep_alive", "chunked", "length"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True, False, None),
        (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", False, False, None),
        (b"GET / HTTP/1.0\r\n\r\n", False, False, None),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, False, None),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", True, True, None),
        (b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", True, False, 12),
    ],
)
def test_a_request_head_says_how_its_body_ends_and_whether_the_connection_goes_on(
    head: bytes, keep_alive: bool, chunked: bool, length: int | None
) -> None:
    message = Message.parse(head, response=False)
    assert (message.keep_alive, message.chunked, message.length) == (keep_alive, chunked, length)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ],
)
def test_llhttp_refuses_ambiguous_request_heads(head: bytes, status: int) -> None:
    with pytest.raises(BadMessage) as caught:
        Message.parse(head, response=False)
    assert caught.value.status == status
    assert str(caught.value).startswith("bad request: ")


def test_a_broken_answer_head_is_the_upstream_s_fault() -> None:
    with pytest.raises(BadMessage) as caught:
        Message.parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", response=True)
    assert caught.value.status == 502
