"""The shop demo: one stdlib-only HTTP program that is `web`, `api` or `store` by env SERVICE.

Traffic flows web -> api -> store; every answer carries the service, pod and where it
ran (cluster or local), so a caller of `web` sees which pod of each service served it.
The program writes steady logs (with the odd WARNING, ERROR and traceback) to stdout
and never writes a file, so it runs under a read-only root filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICES = ("web", "api", "store")
# The next hop of each service: (env var holding its base URL, default URL).
UPSTREAM = {"web": ("API_URL", "http://api:8080"), "api": ("STORE_URL", "http://store:8080")}
# Request headers copied from the inbound request onto the upstream call, so that
# OpenTelemetry-style context (and cockpit's personal routing on `baggage`) follows the chain.
PROPAGATED_HEADERS = ("baggage", "traceparent", "tracestate")
# Headers never echoed back by /echo: they may carry secrets.
REDACTED_HEADERS = frozenset({"authorization", "x-store-token"})
TOKEN_HEADER = "X-Store-Token"
CHUNK = 64 * 1024
MAX_BYTES = 64 * 1024**3
# A fixed, non-trivial pattern, so a reader of /bytes can check what arrived.
PATTERN = bytes(range(256)) * (CHUNK // 256)
DRAIN_SECONDS = 1.0  # after SIGTERM, how long the requests in flight may take to finish

ITEMS: tuple[dict[str, Any], ...] = (
    {"sku": "tea-001", "name": "Green tea", "price_cents": 450, "stock": 12},
    {"sku": "cof-002", "name": "Espresso beans", "price_cents": 1290, "stock": 4},
    {"sku": "mug-003", "name": "Enamel mug", "price_cents": 900, "stock": 27},
)


class Settings:
    """Everything the program reads from its environment, read once at start."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.service = env.get("SERVICE", "web").strip().lower()
        if self.service not in SERVICES:
            raise ValueError(f"SERVICE must be one of {', '.join(SERVICES)}, not {self.service!r}")
        self.bind = env.get("BIND", "0.0.0.0")
        try:
            self.port = int(env.get("PORT", "8080"))
            # A floor, so that LOG_INTERVAL=0 means "very often" rather than a busy loop.
            self.log_interval = max(0.001, float(env.get("LOG_INTERVAL", "2")))
            self.upstream_timeout = float(env.get("UPSTREAM_TIMEOUT", "5"))
        except ValueError as exc:
            raise ValueError(f"PORT, LOG_INTERVAL, UPSTREAM_TIMEOUT: {exc}") from exc
        seed = env.get("LOG_SEED")
        self.log_seed = int(seed) if seed not in (None, "") else None
        self.pod = env.get("POD_NAME") or socket.gethostname()
        self.served_by = "local" if env.get("COCKPIT_LOCAL") == "1" else "cluster"
        self.greeting = env.get("GREETING", "")
        self.store_token = env.get("STORE_TOKEN", "")
        self.store_health_url = env.get("STORE_HEALTH_URL", "")
        self.upstream_url = ""
        if self.service in UPSTREAM:
            name, default = UPSTREAM[self.service]
            self.upstream_url = env.get(name, default).rstrip("/") + "/"


class Log:
    """Line-oriented logging to stdout: `<ts> LEVEL service message pod=<pod>`."""

    def __init__(self, service: str, pod: str) -> None:
        self.service = service
        self.pod = pod
        # One lock for stdout, so a multi-line traceback is never split by other lines.
        # Re-entrant: the signal handler may log while the main thread holds it.
        self.lock = threading.RLock()

    @staticmethod
    def timestamp() -> str:
        now = datetime.now(UTC)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"

    def line(self, level: str, message: str) -> None:
        text = f"{self.timestamp()} {level} {self.service} {message} pod={self.pod}\n"
        with self.lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    def info(self, message: str) -> None:
        self.line("INFO", message)

    def warning(self, message: str) -> None:
        self.line("WARNING", message)

    def error(self, message: str) -> None:
        self.line("ERROR", message)

    def traceback(self, message: str) -> None:
        """Log an ERROR line followed by the traceback of the exception being handled."""
        with self.lock:
            sys.stdout.write(f"{self.timestamp()} ERROR {self.service} {message} pod={self.pod}\n")
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()


class UpstreamError(Exception):
    """The next hop could not be reached or did not answer with JSON."""

    def __init__(self, url: str, reason: str, answer: Any = None) -> None:
        super().__init__(f"upstream {url} failed: {reason}")
        self.url = url
        self.reason = reason
        self.answer = answer


class Shop:
    """The state shared by request handlers and the heartbeat thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = Log(settings.service, settings.pod)
        self.requests = 0
        # Requests being answered, from the connection's accept on (so that a graceful stop
        # cannot miss one a thread has not started on yet); an idle keep-alive connection
        # does not count.
        self.in_flight = 0
        self._count_lock = threading.Condition()
        self.stopping = threading.Event()

    def count_request(self) -> None:
        with self._count_lock:
            self.requests += 1

    def request_begins(self) -> None:
        with self._count_lock:
            self.in_flight += 1

    def request_ends(self) -> None:
        with self._count_lock:
            self.in_flight -= 1
            self._count_lock.notify_all()

    def drained(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the requests in flight to finish."""
        with self._count_lock:
            return self._count_lock.wait_for(lambda: self.in_flight == 0, within)

    def identity(self) -> dict[str, Any]:
        s = self.settings
        return {"service": s.service, "pod": s.pod, "served_by": s.served_by}

    def call(self, url: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        try:
            # urllib honours HTTP(S)_PROXY / NO_PROXY, which is how a process run
            # locally can reach cluster service names through a proxy.
            with urllib.request.urlopen(request, timeout=self.settings.upstream_timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            answer = None
            with contextlib.suppress(ValueError, OSError):
                answer = json.loads(exc.read())
            raise UpstreamError(url, f"HTTP {exc.code}", answer) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpstreamError(url, str(reason) or type(exc).__name__) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise UpstreamError(url, "answer is not JSON") from exc

    def answer(self, inbound: dict[str, str]) -> dict[str, Any]:
        """The JSON answer of GET /; raises UpstreamError when the next hop fails."""
        s = self.settings
        result: dict[str, Any] = {
            **self.identity(),
            "greeting": s.greeting,
            "baggage": inbound.get("baggage"),
        }
        chain = [self.identity()]
        if s.service == "store":
            result["items"] = list(ITEMS)
            result["token"] = self.check_token(inbound.get(TOKEN_HEADER.lower()))
        else:
            headers = {k: v for k, v in inbound.items() if k in PROPAGATED_HEADERS}
            if s.service == "api":
                if s.store_token:
                    headers[TOKEN_HEADER] = s.store_token
                if s.store_health_url:
                    result["store_health"] = self.store_health()
            upstream = self.call(s.upstream_url, headers)
            result["upstream"] = upstream
            if isinstance(upstream, dict):
                chain.extend(upstream.get("chain", []))
        result["chain"] = chain
        return result

    def check_token(self, presented: str | None) -> str:
        expected = self.settings.store_token
        if not expected:
            return "unchecked"
        if presented is None:
            self.log.warning("request without store token")
            return "missing"
        if hmac.compare_digest(presented.encode(), expected.encode()):
            return "valid"
        self.log.warning("request with an invalid store token")
        return "invalid"

    def store_health(self) -> str:
        url = self.settings.store_health_url
        try:
            with urllib.request.urlopen(url, timeout=self.settings.upstream_timeout) as resp:
                resp.read()
            return "ok"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            self.log.warning(f"store health check {url} failed: {reason}")
            return f"unreachable: {reason}"


class Handler(BaseHTTPRequestHandler):
    """One request; `self.server.shop` holds the shared state."""

    protocol_version = "HTTP/1.1"
    server_version = "shop/1"
    # Headers and body go out in separate writes; without TCP_NODELAY a keep-alive
    # client waits for a delayed ACK (~40 ms) on every small answer.
    disable_nagle_algorithm = True
    server: ShopServer

    # -- plumbing ---------------------------------------------------------------------

    @property
    def shop(self) -> Shop:
        return self.server.shop

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes to stderr; errors it reports (bad request lines) go to our log.
        self.shop.log.warning(format % args)

    def end_headers(self) -> None:
        if self.shop.stopping.is_set():
            # Shutting down: the last answer on this connection (send_header closes it after).
            self.send_header("Connection", "close")
        super().end_headers()

    def inbound_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    def send_json(self, status: int, payload: Any) -> None:
        body = (json.dumps(payload, indent=None) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_text(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        self._status = 0
        self._started = time.perf_counter()
        try:
            super().handle_one_request()
            if self._status:
                self.log_request_line()
        finally:
            if self._in_flight:
                self._in_flight = False
                self.shop.request_ends()

    def parse_request(self) -> bool:
        # Time from the request line on; idle time on a keep-alive connection is not latency.
        self._started = time.perf_counter()
        if not self._in_flight:  # the next request on a keep-alive connection
            self._in_flight = True
            self.shop.request_begins()
        return super().parse_request()

    # The connection's first request was counted by the server at its accept.
    _in_flight = True

    def log_request_line(self) -> None:
        elapsed = (time.perf_counter() - self._started) * 1000
        level = "INFO" if self._status < 400 else "WARNING" if self._status < 500 else "ERROR"
        path = urlsplit(self.path).path
        self.shop.log.line(level, f"{self.command} {path} {self._status} {elapsed:.1f}ms")
        self.shop.count_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # handle_one_request logs one line per request, with the elapsed time

    def read_body_chunks(self) -> Iterator[bytes]:
        """Yield the request body in chunks (Content-Length or chunked encoding)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise ConnectionError("body ended early")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(1024)
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("body ended early")
            remaining -= len(data)
            yield data

    # -- endpoints --------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.send_text(HTTPStatus.OK, "ok")
        elif url.path == "/":
            self.get_root()
        elif url.path == "/echo":
            headers = {
                k: ("<redacted>" if k in REDACTED_HEADERS else v)
                for k, v in self.inbound_headers().items()
            }
            self.send_json(
                HTTPStatus.OK,
                {**self.shop.identity(), "method": "GET", "path": self.path, "headers": headers},
            )
        elif url.path == "/bytes":
            self.get_bytes(parse_qs(url.query))
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {**self.shop.identity(), "error": "not found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/echo":
            # The body is left unread, so this connection cannot carry another request.
            self.close_connection = True
            self.send_json(
                HTTPStatus.METHOD_NOT_ALLOWED, {**self.shop.identity(), "error": "POST /echo only"}
            )
            return
        digest = hashlib.sha256()
        count = 0
        try:
            for data in self.read_body_chunks():
                digest.update(data)
                count += len(data)
        except (ValueError, ConnectionError) as exc:
            self.close_connection = True
            self.send_json(HTTPStatus.BAD_REQUEST, {**self.shop.identity(), "error": str(exc)})
            return
        self.send_json(
            HTTPStatus.OK, {**self.shop.identity(), "bytes": count, "sha256": digest.hexdigest()}
        )

    def get_root(self) -> None:
        shop = self.shop
        try:
            payload = shop.answer(self.inbound_headers())
        except UpstreamError as exc:
            shop.log.error(str(exc))
            error: dict[str, Any] = {**shop.identity(), "error": str(exc), "upstream_url": exc.url}
            if exc.answer is not None:
                error["upstream"] = exc.answer
            self.send_json(HTTPStatus.BAD_GATEWAY, error)
            return
        self.send_json(HTTPStatus.OK, payload)

    def get_bytes(self, query: dict[str, list[str]]) -> None:
        try:
            n = int(query.get("n", ["0"])[0])
            if not 0 <= n <= MAX_BYTES:
                raise ValueError
        except ValueError:
            self.send_json(
                HTTPStatus.BAD_REQUEST,
                {**self.shop.identity(), "error": f"n must be an integer in 0..{MAX_BYTES}"},
            )
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        view = memoryview(PATTERN)
        remaining = n
        while remaining:
            step = min(CHUNK, remaining)
            self.wfile.write(view[:step])
            remaining -= step


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], shop: Shop) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.shop = shop
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.shop.request_begins()  # on the accepting thread: see Shop.in_flight
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # the client went away mid-answer: nothing to report
        self.shop.log.traceback(f"request from {client_address[0]} failed")


# -- background log noise ---------------------------------------------------------------

WARNINGS = (
    "slow response from payment provider took {ms}ms",
    "cache miss ratio high: {pct}%",
    "retrying connection to metrics backend (attempt {n}/3)",
    "request queue depth {n} above soft limit",
)
ERRORS = (
    "failed to flush metrics: connection reset by peer",
    "inventory sync timed out after {ms}ms",
    "could not refresh price list: upstream returned 503",
)


def _reserve(stock: dict[str, int], sku: str) -> int:
    return stock[sku] - 1


def _reconcile_inventory(rng: random.Random) -> None:
    stock = {item["sku"]: item["stock"] for item in ITEMS}
    missing = f"sku-{rng.randrange(100, 999)}"
    _reserve(stock, missing)  # raises KeyError: the point is a real traceback


def heartbeat(shop: Shop) -> None:
    """Write one log line per tick: mostly INFO, sometimes WARNING, ERROR or a traceback."""
    s = shop.settings
    rng = random.Random(s.log_seed)
    tick = 0
    while not shop.stopping.wait(s.log_interval):
        tick += 1
        roll = rng.random()
        fill = {
            "ms": rng.randrange(800, 5000),
            "pct": rng.randrange(40, 95),
            "n": rng.randrange(2, 9),
        }
        if roll < 1 / 30:
            try:
                _reconcile_inventory(rng)
            except KeyError:
                shop.log.traceback(f"background inventory reconcile failed tick={tick}")
        elif roll < 1 / 30 + 0.03:
            shop.log.error(rng.choice(ERRORS).format(**fill) + f" tick={tick}")
        elif roll < 1 / 30 + 0.03 + 0.10:
            shop.log.warning(rng.choice(WARNINGS).format(**fill) + f" tick={tick}")
        else:
            shop.log.info(f"heartbeat tick={tick} requests={shop.requests}")


# -- entry point ----------------------------------------------------------------------


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        settings = Settings(os.environ)
    except ValueError as exc:
        print(f"shop: {exc}", file=sys.stderr)
        return 2
    shop = Shop(settings)
    log = shop.log
    try:
        server = ShopServer((settings.bind, settings.port), shop)
    except OSError as exc:
        log.error(f"cannot listen on {settings.bind}:{settings.port}: {exc}")
        return 1

    # SIGTERM and SIGINT are taken by this thread's sigwait below, never by a handler: a
    # process-directed signal may land on any thread, and a handler would then wait for the
    # main thread to run Python code, which it does not while it blocks. Threads started
    # from here on inherit the mask.
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)

    host = f"[{settings.bind}]" if ":" in settings.bind else settings.bind
    upstream = f" upstream={settings.upstream_url}" if settings.upstream_url else ""
    log.info(f"starting service={settings.service} served_by={settings.served_by}{upstream}")
    log.info(f"GREETING={settings.greeting!r}")
    if settings.service in ("api", "store"):
        # Only whether the secret is there, never its value.
        log.info(f"STORE_TOKEN is {'set' if settings.store_token else 'not set'}")
    log.info(f"listening on http://{host}:{server.server_port}")
    threading.Thread(target=heartbeat, args=(shop,), name="heartbeat", daemon=True).start()
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    serving.start()
    signum = signal.sigwait(stops)
    shop.stopping.set()
    log.info(f"received {signal.Signals(signum).name}, shutting down")
    # Gracefully, as a server behind a load balancer or a hot reload should: stop accepting
    # first (the port is free for the next instance at once), then finish what is in flight.
    stop_listening(server)
    server.shutdown()
    server.server_close()
    if not shop.drained(DRAIN_SECONDS):
        log.warning(f"{shop.in_flight} requests still in flight after {DRAIN_SECONDS:g} s")
    log.info("stopped")
    return 0


def stop_listening(server: ShopServer) -> None:
    """Take the listening socket out of LISTEN at once. On Linux, shutdown() of a listening
    socket does that and wakes serve_forever() (no wait for its poll interval); elsewhere it
    may fail, and server_close() right after closes the socket anyway."""
    with contextlib.suppress(OSError):
        server.socket.shutdown(socket.SHUT_RDWR)


if __name__ == "__main__":
    sys.exit(main())
