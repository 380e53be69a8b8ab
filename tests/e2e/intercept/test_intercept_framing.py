"""HTTP framing through the agent pod on the real cluster: requests pipelined in one write by
a client pod, chunked with trailers, HEAD, and Connection: close, each routed on its own header
between the local process and the original pods, answered in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from tests.agent.conftest import App
from tests.agent.test_http_framing import read_response
from tests.e2e.intercept.conftest import Prober, SessionFactory

pytestmark = pytest.mark.cluster

ME = b"Baggage: cockpit-session=me\r\n"


async def test_pipelined_requests_of_every_framing_are_routed_one_by_one(
    shop: str, prober: Prober, sessions: SessionFactory, apps: Callable[..., App]
) -> None:
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop", LOG_INTERVAL="60")
    await sessions("me", local.port, mode="personal")
    await prober.until("local/laptop", {"baggage": "cockpit-session=me"}, within=10)
    body = b"hello\r\n\r\nworld"  # holds what ends a chunked body elsewhere
    requests = (
        b"POST /echo HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n" + ME + b"\r\n"
        b"7\r\nhello\r\n\r\n7\r\n\r\nworld\r\n0\r\nX-Sum: 14\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: api\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: api\r\n" + ME + b"\r\n"
        # The shop app has no HEAD handler: a 501 whose head names a body length, and which
        # closes its connection, so the agent ends the client's too.
        b"HEAD /echo HTTP/1.1\r\nHost: api\r\n\r\n"
    )
    answer = await prober.call("/raw", {"host": "api", "port": 8080,
                                        "data": requests.decode("latin-1")})  # fmt: skip
    reader = asyncio.StreamReader()
    reader.feed_data(answer["data"].encode("latin-1"))
    reader.feed_eof()
    posted = await read_response(reader)
    assert posted.status == 200, posted.body
    echoed = json.loads(posted.body)
    assert (echoed["served_by"], echoed["pod"], echoed["bytes"]) == ("local", "laptop", len(body))
    assert [json.loads((await read_response(reader)).body)["served_by"] for _ in "ab"] == [
        "cluster",
        "local",
    ]
    head = await read_response(reader, head_only=True)
    assert head.status == 501
    assert int(head.header(b"content-length") or 0) > 0
    assert await reader.read() == b""  # nothing after the HEAD answer's head, then the end
