"""Streams to a pod's port through the API server, as asyncio transports: over SPDY/3.1 (one
connection per pod, a stream pair per TCP connection, as ``kubectl port-forward``) or, when the
API server refuses SPDY, one websocket (``v4.channel.k8s.io``) per TCP connection.

Ways in: ``connect_pod_port`` (a transport for any protocol factory), ``open_pod_stream`` (a
StreamReader/StreamWriter pair) and ``PodTunnel`` (an asyncssh ``tunnel=``). Bytes from the
pod arrive as memoryview slices of the decrypted TLS data (one hand-over per read, however
many frames it held); flow control pauses the reading side when the writing side is full.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from cockpit.adapters import spdy
from cockpit.adapters import websocket as ws
from cockpit.adapters.tls import open_tls
from cockpit.errors import AccessDeniedError, ClusterError, CockpitError, NotFoundError

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOL = "v4.channel.k8s.io"
_SPDY_PROTOCOL = "portforward.k8s.io"
_DATA, _ERROR = 0, 1
_DATA_PREFIX = b"\x00"
# Frames we send carry at most this much: the kubelet reads whole frames into memory.
MAX_FRAME = 256 * 1024
# Let the TLS socket buffer this much before the local side stops reading (asyncio's
# default of 64 KiB stalls a fast pipe on every few frames).
WRITE_HIGH_WATER = 512 * 1024
_HANDSHAKE_LIMIT = 64 * 1024
# What is read and decrypted per wakeup at most: a websocket carries one TCP connection, a
# SPDY connection every connection to a pod (more per wakeup: less CPU per byte when busy).
_READ_SIZE = 256 * 1024
_SPDY_READ_SIZE = 1024 * 1024
# The v4 protocol cannot tell the pod "no more data" without closing the whole stream, so
# after the local side half-closes, the answer may keep flowing until the pod has been quiet
# this long (containerd gives a half-closed SPDY stream one second, too).
EOF_GRACE = 1.0
# How long an auth token from an exec/OIDC refresh hook is reused before asking again.
_TOKEN_TTL = 60.0


class PortForwardError(ClusterError):
    """A port-forward stream to a pod could not be opened or ended with an error."""

    title = "port-forward error"


class NoReadyPodError(PortForwardError):
    """No ready pod backs the service right now."""


# -- how to reach the API server ----------------------------------------------------------


class ApiServer:
    """The API server address, TLS settings and credentials from a kubeconfig.

    Built once (reading a kubeconfig may run an exec plugin: do it off the event loop) and
    shared by every stream; the SSL context is reused for every connection.
    """

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        *,
        server_hostname: str | None = None,
        authorization: Callable[[], str | None] = lambda: None,
        refreshes: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ClusterError(f"cannot use API server URL {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl = ssl_context if parts.scheme == "https" else None
        self.server_hostname = server_hostname if self.ssl else None
        self._authorization = authorization
        self._refreshes = refreshes  # the credential may change (exec plugin, OIDC)
        self._auth_cache: tuple[float, str | None] | None = None
        self._auth_lock = asyncio.Lock()
        self.transport = "spdy"  # how streams are carried: "spdy" or "websocket"
        # SPDY connections by (namespace, pod), per event loop: a connection belongs to the
        # loop that opened it.
        self._spdy: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[dict[tuple[str, str], _SpdyConnection], dict[tuple[str, str], asyncio.Lock]],
        ] = weakref.WeakKeyDictionary()

    def close_connections(self) -> None:
        """Close this event loop's pooled SPDY connections (their streams end)."""
        pool, _ = self.spdy_pool()
        for conn in list(pool.values()):
            conn.close()

    def spdy_pool(self) -> tuple[dict[tuple[str, str], _SpdyConnection], dict[Any, asyncio.Lock]]:
        """This event loop's SPDY connections and the locks that keep one per pod."""
        return self._spdy.setdefault(asyncio.get_running_loop(), ({}, {}))

    @classmethod
    def from_configuration(cls, cfg: Any) -> ApiServer:
        """From a ``kubernetes.client.Configuration`` filled by ``config.load_kube_config``."""
        context: ssl.SSLContext | None = None
        if str(cfg.host).startswith("https"):
            context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if not cfg.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
            context.set_alpn_protocols(["http/1.1"])  # websocket upgrades need HTTP/1.1

        def authorization() -> str | None:
            token: str | None = cfg.get_api_key_with_prefix("authorization")
            if token:
                return token
            if cfg.username or cfg.password:
                basic: str | None = cfg.get_basic_auth_token()
                return basic
            return None

        return cls(
            str(cfg.host),
            context,
            server_hostname=getattr(cfg, "tls_server_name", None) or None,
            authorization=authorization,
            refreshes=cfg.refresh_api_key_hook is not None,
        )

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> ApiServer:
        """Blocking: load a kubeconfig (the default one when ``path`` is None)."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        load: Any = config.load_kube_config  # untyped
        try:
            load(config_file=path, context=context, client_configuration=cfg)
        except (ConfigException, OSError) as exc:
            raise ClusterError(f"cannot load kubeconfig: {exc}") from exc
        return cls.from_configuration(cfg)

    async def headers(self) -> dict[str, str]:
        """Headers for a request: the Authorization one, refreshed off the loop when needed."""
        cached = self._auth_cache
        now = time.monotonic()
        if cached is None or (self._refreshes and now - cached[0] > _TOKEN_TTL):
            async with self._auth_lock:
                cached = self._auth_cache
                if cached is None or (self._refreshes and now - cached[0] > _TOKEN_TTL):
                    value = (
                        await asyncio.to_thread(self._authorization)
                        if self._refreshes
                        else self._authorization()
                    )
                    cached = self._auth_cache = (now, value)
        headers = {"User-Agent": "cockpit"}
        if cached[1]:
            headers["Authorization"] = cached[1]
        return headers

    @property
    def authority(self) -> str:
        default = 443 if self.ssl else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


# -- one stream to one pod port -----------------------------------------------------------


class PodPortTransport(asyncio.Transport):
    """A TCP connection to a pod's port, carried by one websocket: an ordinary asyncio
    transport, so any protocol (StreamReaderProtocol, asyncssh, the local relay) runs on it.

    ``write_eof()`` cannot reach the pod as a half-close (the v4 protocol has none): the
    stream stays open for the answer until the pod has been quiet for ``EOF_GRACE`` seconds
    or closes, then closes.
    """

    def __init__(self, conn: _PortForwardSocket, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._conn = conn

    # writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._conn.send(data)

    def writelines(self, list_of_data: Any) -> None:
        self._conn.send(b"".join(list_of_data))

    def write_eof(self) -> None:
        self._conn.local_eof()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._conn.tls.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._conn.tls.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._conn.tls.set_write_buffer_limits(high, low)

    # reading
    def pause_reading(self) -> None:
        self._conn.tls.pause_reading()

    def resume_reading(self) -> None:
        self._conn.tls.resume_reading()

    def is_reading(self) -> bool:
        return self._conn.tls.is_reading()

    # lifetime
    def close(self) -> None:
        self._conn.close()

    def abort(self) -> None:
        self._conn.tls.abort()

    def is_closing(self) -> bool:
        return self._conn.closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._conn.app = protocol
        self._conn.app_views = bool(getattr(protocol, "accepts_memoryview", False))

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._conn.app


def _status_message(body: bytes, fallback: str) -> str:
    """The ``message`` of a Kubernetes Status answer, else the body's first line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return (text.splitlines() or [fallback])[0][:300]
    message = doc.get("message") if isinstance(doc, dict) else None
    return str(message) if message else fallback


class _Upgraded(asyncio.BufferedProtocol):
    """A TLS connection to the API server upgraded from HTTP/1.1 (websocket or SPDY): the
    handshake and its errors, shared by both.

    Buffered: TLS decrypts straight into ``_buf``; the data chunks handed on are views of it,
    valid during the call only (the relay writes them to the local socket at once; any other
    protocol gets a bytes copy).
    """

    read_size = _READ_SIZE

    def __init__(self, what: str) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.what = what  # "pod 'store-abc' port 8080 in namespace 'shop'", for messages
        self.tls: asyncio.Transport = None  # type: ignore[assignment]
        self.upgraded: asyncio.Future[bytes] = loop.create_future()  # bytes after the head
        self.rest = b""  # what came right after the 101 answer
        self._head = bytearray()
        self._answer: ws.HttpAnswer | None = None
        self._protocol_error: Exception | None = None
        self._buf = bytearray(self.read_size)
        self._view = memoryview(self._buf)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tls = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if not self.upgraded.done():
            self._handshake_data(bytes(data))
        else:
            self._frames(data)

    def _frames(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _accept(self, answer: ws.HttpAnswer) -> None:
        """Raise WebSocketError when the 101 answer is not the protocol asked for."""
        raise NotImplementedError

    def _handshake_data(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _HANDSHAKE_LIMIT:
                self._protocol_error = ws.WebSocketError("the API server's answer is too long")
                self.tls.abort()
            return
        if self._answer is None:
            try:
                self._answer = ws.parse_response_head(bytes(self._head[:end]))
            except ws.WebSocketError as exc:
                self._protocol_error = exc
                self.tls.abort()
                return
        if self._answer.status == 101:
            try:
                self._accept(self._answer)
            except ws.WebSocketError as exc:
                self._protocol_error = exc
                self.tls.abort()
                return
            rest = bytes(self._head[end + 4 :])
            self._head = bytearray()
            self.upgraded.set_result(rest)
            return
        # An error answer: wait for its whole body (a Kubernetes Status), then fail.
        length = int(self._answer.headers.get("content-length", "-1") or -1)
        if 0 <= length <= len(self._head) - end - 4:
            self.tls.close()

    def _fail_handshake(self, exc: Exception | None) -> None:
        answer = self._answer
        if answer is not None and (
            (answer.status == 101 and self._protocol_error is not None)
            or answer.status in (400, 426, 501)
        ):
            error: CockpitError = UpgradeRefusedError(
                f"port-forward to {self.what} failed: {self._protocol_error or answer.status}"
            )
        elif answer is None or answer.status == 101:
            reason = self._protocol_error or exc or "connection closed"
            error = PortForwardError(f"port-forward to {self.what} failed: {reason}")
        else:
            body = bytes(self._head[self._head.find(b"\r\n\r\n") + 4 :])
            message = _status_message(body, f"HTTP {answer.status} {answer.reason}")
            if answer.status == 404:
                error = NotFoundError(f"{message} (port-forward to {self.what})")
            elif answer.status in (401, 403):
                error = AccessDeniedError(message)
            else:
                error = PortForwardError(f"port-forward to {self.what} failed: {message}")
        self.upgraded.set_exception(error)
        self.upgraded.exception()  # retrieved here: nobody may be waiting any more


class _PortForwardSocket(_Upgraded):
    """One websocket (``v4.channel.k8s.io``) carrying one TCP connection: the channel demux."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(what)
        self.key = key
        self.app: asyncio.BaseProtocol = asyncio.Protocol()
        self.app_views = False  # the app protocol takes memoryview chunks (no copy)
        self.closing = False
        self._close_sent = False
        self._decoder = ws.FrameDecoder(self._on_data, self._on_control)
        self._channel = _DATA
        self._prefix_left = [2, 2]  # each channel starts with the 2-byte port number
        self._error = bytearray()
        self._local_eof = False
        self._last_rx = 0.0
        self._grace: asyncio.TimerHandle | None = None
        self._paused_app = False
        self._pending: list[memoryview] = []  # data chunks decoded from the current read

    def _accept(self, answer: ws.HttpAnswer) -> None:
        ws.check_upgrade(answer, self.key, (PORTFORWARD_PROTOCOL,))

    def _frames(self, data: bytes | memoryview) -> None:
        try:
            self._decoder.feed(data)
        except ws.WebSocketError as exc:
            self._protocol_error = exc
            self.tls.abort()
        finally:
            self._deliver()

    def _deliver(self) -> None:
        # One hand-over per read from the API server, however many frames it held: one
        # send() on the local socket instead of one per ~32 KiB frame.
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._last_rx = self.loop.time()
        if type(data) is bytes or self.app_views:
            self.app.data_received(data)  # type: ignore[attr-defined]
        else:
            self.app.data_received(bytes(data))  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # the whole stream is over: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._grace is not None:
            self._grace.cancel()
        if not self.upgraded.done():
            self._fail_handshake(exc)
        elif self._answer is not None and self.app is not None:
            error = self._end_error(exc)
            if error is None:
                with contextlib.suppress(Exception):
                    self.app.eof_received()  # type: ignore[attr-defined]
            self.app.connection_lost(error)

    def pause_writing(self) -> None:
        if self._answer is not None:
            self._paused_app = True
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self._paused_app:
            self._paused_app = False
            self.app.resume_writing()

    # -- frames --

    def _on_data(self, chunk: memoryview, first: bool) -> None:
        if first:
            self._channel = chunk[0]
            chunk = chunk[1:]
        channel = self._channel
        if channel > _ERROR:
            return  # the server never sends these for a single port; ignore rather than die
        left = self._prefix_left[channel]
        if left:
            take = min(left, len(chunk))
            self._prefix_left[channel] = left - take
            chunk = chunk[take:]
        if not chunk:
            return
        if channel == _DATA:
            self._pending.append(chunk)
        elif len(self._error) < 4096:
            self._error += chunk

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == ws.OP_PING:
            if not self._close_sent:
                self.tls.write(ws.encode_frame(ws.OP_PONG, payload))
        elif opcode == ws.OP_CLOSE:
            if not self._close_sent:
                self._close_sent = True
                self.tls.write(ws.encode_frame(ws.OP_CLOSE, payload[:2]))
            self.closing = True
            self.tls.close()

    def _end_error(self, exc: Exception | None) -> Exception | None:
        if self._error:
            text = self._error.decode("utf-8", "replace").strip()
            return PortForwardError(f"{self.what}: {text}")
        if self._protocol_error is not None:
            return PortForwardError(f"{self.what}: {self._protocol_error}")
        if exc is not None and not self._close_sent:
            return PortForwardError(f"connection to the API server lost: {exc}")
        return None

    # -- sending --

    def send(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self._local_eof:
            return
        size = len(data)
        if size <= MAX_FRAME:
            if size:
                self.tls.write(ws.encode_frame(ws.OP_BINARY, data, prefix=_DATA_PREFIX))
            return
        view = memoryview(data)
        for start in range(0, size, MAX_FRAME):
            chunk = view[start : start + MAX_FRAME]
            self.tls.write(ws.encode_frame(ws.OP_BINARY, chunk, prefix=_DATA_PREFIX))

    def local_eof(self) -> None:
        if self.closing or self._local_eof:
            return
        self._local_eof = True
        self._last_rx = self.loop.time()
        self._grace = self.loop.call_later(EOF_GRACE, self._check_grace)

    def _check_grace(self) -> None:
        quiet = self.loop.time() - self._last_rx
        if quiet >= EOF_GRACE:
            self._grace = None
            self.close()
        else:
            self._grace = self.loop.call_later(EOF_GRACE - quiet, self._check_grace)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self._close_sent and self.tls is not None and not self.tls.is_closing():
            self._close_sent = True
            self.tls.write(ws.encode_frame(ws.OP_CLOSE, ws.close_payload()))
        if self.tls is not None:
            self.tls.close()


# -- SPDY: one connection per pod, a stream pair per TCP connection -----------------------

# Data held for streams whose reader paused, across one connection, before the whole
# connection stops reading (SPDY as the kubelet speaks it has no per-stream flow control).
_SPDY_BUFFER_LIMIT = 8 * 1024 * 1024
# A pooled connection with no stream open is closed after this long.
_SPDY_IDLE = 30.0
_EOF = object()
# How long a finished data stream waits for its error stream to end too.
_ERROR_WAIT = 2.0


class _SpdyConnection(_Upgraded):
    """One SPDY/3.1 connection to one pod's port-forward, carrying every stream to it."""

    read_size = _SPDY_READ_SIZE

    def __init__(
        self, what: str, pool: dict[tuple[str, str], _SpdyConnection], key: tuple[str, str]
    ) -> None:
        super().__init__(what)
        self.pool = pool
        self.key = key
        self.streams: dict[int, SpdyStreamTransport] = {}
        self.next_id = 1  # client streams are odd
        self.next_request = 0
        self.compressor = spdy.HeaderCompressor()
        self.decoder = spdy.FrameDecoder(self._on_data, self._on_control)
        self.closing = False
        self.going_away = False
        self.buffered = 0  # bytes held for paused streams
        self.held = False  # reading stopped because ``buffered`` passed the limit
        self.writing_paused = False
        self.dirty: list[SpdyStreamTransport] = []  # streams with data batched this read
        self._idle: asyncio.TimerHandle | None = None

    def _accept(self, answer: ws.HttpAnswer) -> None:
        version = answer.headers.get("x-stream-protocol-version", "")
        if answer.headers.get("upgrade", "").lower() != "spdy/3.1" or version != _SPDY_PROTOCOL:
            raise ws.WebSocketError("the API server did not switch to SPDY/3.1 port-forwarding")

    @property
    def usable(self) -> bool:
        return not (self.closing or self.going_away or self.tls is None or self.tls.is_closing())

    def open(self, port: int, transport_extra: dict[str, Any]) -> SpdyStreamTransport:
        """Start a stream pair (error, data) to ``port``; the transport's ``replied`` future
        resolves when the server accepted the data stream."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        error_id, data_id = self.next_id, self.next_id + 2
        self.next_id += 4
        request = str(self.next_request)
        self.next_request += 1
        stream = SpdyStreamTransport(self, data_id, error_id, transport_extra)
        self.streams[data_id] = self.streams[error_id] = stream
        headers = {"streamtype": "error", "port": str(port), "requestid": request}
        self.tls.write(spdy.syn_stream(error_id, self.compressor.block(headers)))
        # Nothing is ever written to the error stream: half-close it at once (as kubectl).
        self.tls.write(spdy.data_frame(error_id, b"", fin=True))
        headers["streamtype"] = "data"
        self.tls.write(spdy.syn_stream(data_id, self.compressor.block(headers)))
        return stream

    def forget(self, stream: SpdyStreamTransport) -> None:
        self.streams.pop(stream.data_id, None)
        self.streams.pop(stream.error_id, None)
        if not self.streams and not self.closing:
            if self.going_away:
                self.close()
            else:
                self._idle = self.loop.call_later(_SPDY_IDLE, self.close)

    def retire(self) -> None:
        """Take no new streams; close once the open ones end. After a stream failed, data we
        sent on it may sit unread in the kubelet, blocking one of its frame workers (and so
        every later stream that worker would serve) until the connection closes."""
        self.going_away = True
        if self.pool.get(self.key) is self:
            del self.pool[self.key]

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.pool.get(self.key) is self:
            del self.pool[self.key]
        if self.tls is not None and not self.tls.is_closing():
            self.tls.write(spdy.goaway())
            self.tls.close()

    # -- frames --

    def _frames(self, data: bytes | memoryview) -> None:
        try:
            self.decoder.feed(data)
        except spdy.SpdyError as exc:
            self._protocol_error = exc
            self.tls.abort()
        finally:
            dirty = self.dirty
            while dirty:
                dirty.pop().flush()

    def _on_data(self, stream_id: int, chunk: memoryview, fin: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream_id == stream.data_id:
            stream.remote_data(chunk, fin)
        else:
            stream.error_data(chunk, fin)

    def _on_control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == spdy.SYN_REPLY:
            stream = self.streams.get(spdy.stream_of(payload))
            answered = spdy.stream_of(payload)
            if stream is not None and answered == stream.data_id and not stream.replied.done():
                stream.replied.set_result(None)
        elif kind == spdy.RST_STREAM:
            stream = self.streams.get(spdy.stream_of(payload))
            if stream is not None:
                self.retire()
                stream.reset_by_server()
        elif kind == spdy.PING:
            self.tls.write(spdy.control_frame(spdy.PING, payload))  # answer the server's
        elif kind == spdy.GOAWAY:
            self.going_away = True
            if self.pool.get(self.key) is self:
                del self.pool[self.key]
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do for port-forwarding

    def hold(self, size: int) -> None:
        self.buffered += size
        if self.buffered > _SPDY_BUFFER_LIMIT and not self.held:
            self.held = True
            self.tls.pause_reading()

    def release(self, size: int) -> None:
        self.buffered -= size
        if self.held and self.buffered < _SPDY_BUFFER_LIMIT // 2:
            self.held = False
            self.tls.resume_reading()

    # -- the TLS connection --

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
        if self.pool.get(self.key) is self:
            del self.pool[self.key]
        if not self.upgraded.done():
            self._fail_handshake(exc)
            return
        reason = self._protocol_error or exc
        for stream in list({id(s): s for s in self.streams.values()}.values()):
            stream.connection_gone(reason)
        self.streams.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True
        for stream in list({id(s): s for s in self.streams.values()}.values()):
            stream.pause_app()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for stream in list({id(s): s for s in self.streams.values()}.values()):
            stream.resume_app()


class SpdyStreamTransport(asyncio.Transport):
    """One TCP connection to a pod's port: a SPDY stream pair on the pod's shared connection,
    as an asyncio transport. ``write_eof()`` is a true half-close (a FIN on the data stream)."""

    def __init__(
        self, conn: _SpdyConnection, data_id: int, error_id: int, extra: dict[str, Any]
    ) -> None:
        super().__init__(extra)
        self.conn = conn
        self.data_id = data_id
        self.error_id = error_id
        self.replied: asyncio.Future[None] = conn.loop.create_future()
        self.app: asyncio.BaseProtocol = asyncio.Protocol()
        self.app_views = False
        self.local_fin = False
        self.remote_fin = False
        self.finished = False
        self.paused = True  # until the app is attached: data waits in ``pending``
        self.app_writing_paused = False
        self.pending: collections.deque[Any] = collections.deque()
        self.error = bytearray()
        self.received = 0
        self.data_fin = False
        self.error_fin = False
        self.batch: list[memoryview] = []  # data of the current read, not yet handed on
        self._error_wait: asyncio.TimerHandle | None = None

    # -- from the connection --

    def remote_data(self, chunk: memoryview, fin: bool) -> None:
        if self.finished:
            return
        if chunk:
            self.received += len(chunk)
            if self.paused or self.pending:
                self.flush()
                data = bytes(chunk)
                self.pending.append(data)
                self.conn.hold(len(data))
            else:
                # Collected, and handed on once per read from the API server (however many
                # ~32 KiB frames it held): one send() on the local socket, not one per frame.
                if not self.batch:
                    self.conn.dirty.append(self)
                self.batch.append(chunk)
        if fin:
            self.flush()
            self.data_fin = True
            if not self.error_fin:
                # The error text may still be on its way (the server can end the data stream
                # first): the end is an error or a clean EOF only once the error stream ends.
                self._error_wait = self.conn.loop.call_later(_ERROR_WAIT, self._end_of_data)
            else:
                self._end_of_data()

    def flush(self) -> None:
        batch = self.batch
        if not batch or self.finished:
            batch.clear()
            return
        data: bytes | memoryview = batch[0] if len(batch) == 1 else b"".join(batch)
        batch.clear()
        if not self.app_views and type(data) is not bytes:
            data = bytes(data)
        self.app.data_received(data)  # type: ignore[attr-defined]

    def error_data(self, chunk: memoryview, fin: bool) -> None:
        if len(self.error) < 4096:
            self.error += chunk
        if fin:
            self.error_fin = True
            if self.data_fin and self._error_wait is not None:
                self._error_wait.cancel()
                self._end_of_data()

    def _end_of_data(self) -> None:
        self._error_wait = None
        if self.finished:
            return
        if self.pending or self.paused:
            self.pending.append(_EOF)
        else:
            self._remote_eof()

    def _remote_eof(self) -> None:
        self.remote_fin = True
        if self.error:
            self.conn.retire()
            self._finish(self._error())  # the server ended the stream because of this
            return
        keep_open = False
        with contextlib.suppress(Exception):
            keep_open = bool(self.app.eof_received())  # type: ignore[attr-defined]
        if self.local_fin or not keep_open:
            self.close()

    def reset_by_server(self) -> None:
        if not self.replied.done():
            self.replied.set_exception(
                self._error() or PortForwardError(f"{self.conn.what}: refused")
            )
            self.replied.exception()
        self._finish(self._error() or PortForwardError(f"{self.conn.what}: stream reset"))

    def connection_gone(self, exc: Exception | None) -> None:
        error = self._error() or PortForwardError(
            f"connection to the API server lost: {exc or 'closed'}"
        )
        if not self.replied.done():
            self.replied.set_exception(error)
            self.replied.exception()
        self._finish(error)

    def _error(self) -> PortForwardError | None:
        if not self.error:
            return None
        return PortForwardError(
            f"{self.conn.what}: {self.error.decode('utf-8', 'replace').strip()}"
        )

    def pause_app(self) -> None:
        if self.replied.done() and not self.finished and not self.app_writing_paused:
            self.app_writing_paused = True
            self.app.pause_writing()

    def resume_app(self) -> None:
        if self.app_writing_paused and not self.finished:
            self.app_writing_paused = False
            self.app.resume_writing()

    def _finish(self, exc: Exception | None) -> None:
        if self.finished:
            return
        self.finished = True
        if self._error_wait is not None:
            self._error_wait.cancel()
        tls = self.conn.tls
        if tls is not None and not tls.is_closing():
            # The kubelet hands each stream's frames to one of a few workers; a worker stays
            # stuck on a data frame nobody reads until the stream is reset, stalling every
            # stream it serves. So every stream ends with a reset unless both sides finished
            # cleanly, and the error stream always (as kubectl does).
            if not (self.local_fin and self.remote_fin):
                tls.write(spdy.rst_stream(self.data_id, spdy.CANCEL))
            tls.write(spdy.rst_stream(self.error_id, spdy.CANCEL))
        self.conn.forget(self)
        for item in self.pending:
            if item is not _EOF:
                self.conn.release(len(item))
        self.pending.clear()
        replied = self.replied
        if replied.done() and not replied.cancelled() and replied.exception() is None:
            self.conn.loop.call_soon(self.app.connection_lost, exc)

    # -- asyncio.Transport --

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.finished or self.local_fin:
            return
        size = len(data)
        if 0 < size <= MAX_FRAME:  # the usual case: one frame, one TLS record
            self.conn.tls.write(spdy.data_header(self.data_id, size) + data)
            return
        tls = self.conn.tls
        for start in range(0, size, MAX_FRAME):
            chunk = data[start : start + MAX_FRAME]
            tls.write(spdy.data_header(self.data_id, len(chunk)) + bytes(chunk))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self.finished or self.local_fin:
            return
        self.local_fin = True
        self.conn.tls.write(spdy.data_frame(self.data_id, b"", fin=True))
        if self.remote_fin:
            self._finish(None)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self.conn.tls.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.conn.tls.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # one buffer serves every stream of the connection: its limits stay

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        while self.pending and not self.paused and not self.finished:
            item = self.pending.popleft()
            if item is _EOF:
                self._remote_eof()
                return
            self.conn.release(len(item))
            self.app.data_received(item)  # type: ignore[attr-defined]

    def is_reading(self) -> bool:
        return not self.paused

    def close(self) -> None:
        """End the stream: a FIN for what we wrote (then a reset if the pod still sends)."""
        if self.finished:
            return
        if not self.local_fin and not self.conn.tls.is_closing():
            self.conn.tls.write(spdy.data_frame(self.data_id, b"", fin=True))
        self.local_fin = True
        self._finish(None)

    def abort(self) -> None:
        self.remote_fin = False  # whatever came, end with a reset
        self._finish(None)

    def is_closing(self) -> bool:
        return self.finished or self.local_fin

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.app = protocol
        self.app_views = bool(getattr(protocol, "accepts_memoryview", False))

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.app


async def _spdy_connection(
    api: ApiServer, namespace: str, pod: str, what: str, connect_timeout: float
) -> _SpdyConnection:
    """The pooled SPDY connection to ``pod``, opened when there is none (or it is going)."""
    key = (namespace, pod)
    pool, locks = api.spdy_pool()
    conn = pool.get(key)
    if conn is not None and conn.usable:
        return conn
    lock = locks.setdefault(key, asyncio.Lock())
    async with lock:
        conn = pool.get(key)
        if conn is not None and conn.usable:
            return conn
        target = (
            f"{api.base_path}/api/v1/namespaces/{quote(namespace, safe='')}"
            f"/pods/{quote(pod, safe='')}/portforward"
        )
        headers = await api.headers()
        request = [
            f"POST {target} HTTP/1.1",
            f"Host: {api.authority}",
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            f"X-Stream-Protocol-Version: {_SPDY_PROTOCOL}",
            "Content-Length: 0",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        opened = await _open_upgraded(
            api,
            lambda: _SpdyConnection(f"pod '{pod}' in namespace '{namespace}'", pool, key),
            ("\r\n".join(request) + "\r\n\r\n").encode("latin-1"),
            what,
            connect_timeout,
            read_size=_SPDY_READ_SIZE,
        )
        assert isinstance(opened, _SpdyConnection)
        pool[key] = opened
        if opened.rest:
            opened.data_received(opened.rest)
        return opened


class UpgradeRefusedError(PortForwardError):
    """The API server does not speak the streaming protocol asked for."""


async def _open_upgraded(
    api: ApiServer,
    factory: Callable[[], _Upgraded],
    request: bytes,
    what: str,
    connect_timeout: float,
    *,
    read_size: int = _READ_SIZE,
) -> _Upgraded:
    """A TLS connection to the API server, upgraded by ``request``; errors in one line."""
    conn: _Upgraded | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            try:
                tls, conn = await open_tls(
                    factory,
                    api.host,
                    api.port,
                    ssl_context=api.ssl,
                    server_hostname=api.server_hostname,
                    read_size=read_size,
                )
            except (OSError, ssl.SSLError) as exc:
                raise PortForwardError(
                    f"cannot reach the API server at {api.authority}: {exc}"
                ) from exc
            tls.write(request)
            conn.rest = await conn.upgraded
    except TimeoutError:
        if conn is not None and conn.tls is not None:
            conn.tls.abort()
        raise PortForwardError(
            f"port-forward to {what}: no answer within {connect_timeout:g} s"
        ) from None
    except BaseException:
        if conn is not None and conn.tls is not None:
            conn.tls.abort()
        raise
    tls.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    return conn


async def connect_pod_port(
    api: ApiServer,
    namespace: str,
    pod: str,
    port: int,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    *,
    connect_timeout: float = 10.0,
    transport: str | None = None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """Open a stream to ``pod``'s ``port`` and run ``protocol_factory()`` on it.

    ``transport``: "spdy" (a stream pair on one shared connection per pod, as kubectl) or
    "websocket" (a connection per stream); default ``api.transport``, and an API server that
    refuses SPDY makes it "websocket" from then on. Raises NotFoundError (no such pod),
    AccessDeniedError, or PortForwardError (pod not running, API server unreachable,
    timeout), each with one line.
    """
    what = f"pod '{pod}' port {port} in namespace '{namespace}'"
    kind = transport or api.transport
    if kind == "spdy":
        try:
            return await _connect_spdy(
                api, namespace, pod, port, protocol_factory, connect_timeout, what
            )
        except UpgradeRefusedError:
            if transport == "spdy":
                raise
            log.info("the API server refused SPDY port-forwarding; using websockets")
            api.transport = "websocket"
    return await _connect_websocket(
        api, namespace, pod, port, protocol_factory, connect_timeout, what
    )


async def _connect_spdy(
    api: ApiServer,
    namespace: str,
    pod: str,
    port: int,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    connect_timeout: float,
    what: str,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    extra = {"peername": (pod, port), "pod": pod, "namespace": namespace, "port": port}
    stream: SpdyStreamTransport | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            conn = await _spdy_connection(api, namespace, pod, what, connect_timeout)
            stream = conn.open(port, extra)
            await stream.replied
    except TimeoutError:
        if stream is not None:
            stream.abort()
        raise PortForwardError(
            f"port-forward to {what}: no answer within {connect_timeout:g} s"
        ) from None
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    protocol = protocol_factory()
    stream.set_protocol(protocol)
    protocol.connection_made(stream)
    if conn.writing_paused:  # the shared connection's buffer is full right now
        stream.pause_app()
    stream.resume_reading()
    return stream, protocol


async def _connect_websocket(
    api: ApiServer,
    namespace: str,
    pod: str,
    port: int,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    connect_timeout: float,
    what: str,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    key = ws.new_key()
    target = (
        f"{api.base_path}/api/v1/namespaces/{quote(namespace, safe='')}"
        f"/pods/{quote(pod, safe='')}/portforward?ports={port}"
    )
    headers = await api.headers()
    request = ws.handshake_request(api.authority, target, key, (PORTFORWARD_PROTOCOL,), headers)
    conn = await _open_upgraded(
        api, lambda: _PortForwardSocket(key, what), request, what, connect_timeout
    )
    assert isinstance(conn, _PortForwardSocket)
    transport = PodPortTransport(
        conn, {"peername": (pod, port), "pod": pod, "namespace": namespace, "port": port}
    )
    protocol = protocol_factory()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if conn.rest:
        conn.data_received(conn.rest)
    return transport, protocol


async def open_pod_stream(
    api: ApiServer,
    namespace: str,
    pod: str,
    port: int,
    *,
    limit: int = 256 * 1024,
    connect_timeout: float = 10.0,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A StreamReader/StreamWriter pair to ``pod``'s ``port``, as ``asyncio.open_connection``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await connect_pod_port(
        api, namespace, pod, port, lambda: protocol, connect_timeout=connect_timeout
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class PodTunnel:
    """An asyncssh ``tunnel=`` that reaches a pod's port without any local listener:
    ``asyncssh.connect("agent", 2222, tunnel=PodTunnel(api, "shop", "cockpit-agent-x"))``.
    The host passed by asyncssh is only a label; ``port`` is the pod's port."""

    def __init__(self, api: ApiServer, namespace: str, pod: str, *, timeout: float = 10.0) -> None:
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.timeout = timeout

    async def create_connection(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        return await connect_pod_port(
            self.api, self.namespace, self.pod, port, protocol_factory, connect_timeout=self.timeout
        )

    def __str__(self) -> str:
        return f"port-forward to {self.namespace}/{self.pod}"
