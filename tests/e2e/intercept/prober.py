"""An HTTP client that runs INSIDE the cluster (a pod on the python image, stdlib only) and
calls services by name, so tests see what in-cluster callers see.

Its control API (reached through a port-forward), JSON in and out:
  POST /probe {"url", "n", "headers", "keepalive"}  -> n sequential requests, their results
  POST /load  {"url", "rate", "seconds", "headers"} -> {"id"}: paced requests in the background
  GET  /load/<id>                                   -> {"done", "results"}
  POST /fetch {"url", "headers"}                    -> {"status", "body"} of one request
  POST /download {"host", "port", "size"}          -> {"mbps"}: one GET /bytes?n=size
  POST /upload {"host", "port", "size"}            -> {"mbps"}: one POST /echo of size bytes
  POST /rate {"host", "port", "seconds", "connections"} -> {"rps"}: GET /healthz, keep-alive
  POST /mark                                        -> {"t"}: now, on the results' clock
  POST /raw {"host", "port", "data"}               -> {"data"}: ``data`` (latin-1) sent in one
                                                      write, all that came back until EOF
Each result: [t_start, status, served_by, pod, seconds, error].
It runs as ``python3 -c <this file>`` in a bare python pod: stdlib only and self-contained, so
its /download, /upload and /rate clients are copies of bench/portforward.py's, kept in step.
"""

import asyncio
import hashlib
import http.client
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

T0 = time.monotonic()
LOADS = {}


def now():
    return time.monotonic() - T0


def one(url, headers, conn=None):
    parts = urlsplit(url)
    started = now()
    try:
        c = conn or http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        c.request("GET", parts.path or "/", headers=headers)
        r = c.getresponse()
        body = r.read()
        if conn is None:
            c.close()
        try:
            data = json.loads(body)
            who = (data.get("served_by"), data.get("pod"))
        except ValueError:
            who = (None, None)
        return [round(started, 4), r.status, who[0], who[1], round(now() - started, 4), ""]
    except Exception as exc:
        if conn is not None:
            conn.close()
        err = f"{type(exc).__name__}: {exc}"[:120]
        return [round(started, 4), 0, None, None, round(now() - started, 4), err]


def probe(spec):
    url, headers = spec["url"], spec.get("headers") or {}
    conn = None
    if spec.get("keepalive"):
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
    out = [one(url, headers, conn) for _ in range(int(spec.get("n", 1)))]
    if conn is not None:
        conn.close()
    return out


def load(lid, spec):
    url, headers = spec["url"], spec.get("headers") or {}
    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    total = int(rate * seconds)
    results = [None] * total
    counter = iter(range(total))
    lock = threading.Lock()
    start = time.monotonic() + 0.05

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            results[i] = one(url, headers)

    workers = int(spec.get("workers", 48))
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    LOADS[lid] = {"done": True, "results": results}


def download(host, port, size):
    """MB/s of one GET /bytes?n=size, timed from request to last byte (as bench/portforward)."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with socket.create_connection((host, port), timeout=60) as sock:
        t0 = time.perf_counter()
        sock.sendall(f"GET /bytes?n={size} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError("closed before the answer's head")
            head += bytes(view[:n])
        got = len(head) - head.index(b"\r\n\r\n") - 4
        while got < size:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError(f"closed after {got} of {size} bytes")
            got += n
        elapsed = time.perf_counter() - t0
    return size / elapsed / 1e6


UPLOAD_BLOCK = bytes(range(256)) * 4096
UPLOAD_DIGESTS = {}


def upload(host, port, size):
    """MB/s of one POST /echo of size bytes, timed from request to the app's answer; the
    answer's byte count and sha256 must match what was sent (as bench/portforward)."""
    if size not in UPLOAD_DIGESTS:
        digest = hashlib.sha256()
        whole, rest = divmod(size, len(UPLOAD_BLOCK))
        for _ in range(whole):
            digest.update(UPLOAD_BLOCK)
        digest.update(UPLOAD_BLOCK[:rest])
        UPLOAD_DIGESTS[size] = digest.hexdigest()
    block = memoryview(UPLOAD_BLOCK)
    with socket.create_connection((host, port), timeout=60) as sock:
        t0 = time.perf_counter()
        sock.sendall(
            f"POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        sent = 0
        while sent < size:
            step = min(len(block), size - sent)
            sock.sendall(block[:step])
            sent += step
        answer = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = answer.readline()
            if not line:
                raise ConnectionError("closed before the answer's head")
            head += line
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = answer.read(int(m[1]) if m else 0)
        elapsed = time.perf_counter() - t0
    got = json.loads(body)
    if not head.startswith(b"HTTP/1.1 200") or got.get("bytes") != size:
        raise ConnectionError(f"upload answered {head.split(b' ', 2)[1:2]} {got}")
    if got.get("sha256") != UPLOAD_DIGESTS[size]:
        raise ConnectionError("upload: the app hashed other bytes than were sent")
    return size / elapsed / 1e6


async def _rate(host, port, seconds, connections):
    """Requests/s of GET /healthz over keep-alive connections (as bench/portforward)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    counts = []
    started = asyncio.Event()
    stop_at = [0.0]

    async def answer(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        await reader.readexactly(int(m[1]) if m else 0)

    async def worker():
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(3):
            writer.write(request)
            await answer(reader)
        await started.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            writer.write(request)
            await answer(reader)
            n += 1
        counts.append(n)
        writer.close()

    tasks = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    started.set()
    await asyncio.gather(*tasks)
    return sum(counts) / (time.perf_counter() - t0)


def raw(host, port, data, seconds=20.0):
    """Send ``data`` in one write on a new connection; what comes back until the server closes
    (or ``seconds`` pass with nothing more)."""
    out = []
    with socket.create_connection((host, port), timeout=seconds) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                out.append(chunk)
        except TimeoutError:
            pass
    return b"".join(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.reply({"ok": True})
        elif path.startswith("/load/"):
            self.reply(LOADS.get(path.rsplit("/", 1)[1], {"done": False}))
        else:
            self.send_error(404)

    def do_POST(self):
        spec = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        path = urlsplit(self.path).path
        if path == "/probe":
            self.reply(probe(spec))
        elif path == "/load":
            lid = str(len(LOADS) + 1)
            LOADS[lid] = {"done": False}
            threading.Thread(target=load, args=(lid, spec), daemon=True).start()
            self.reply({"id": lid})
        elif path == "/fetch":
            parts = urlsplit(spec["url"])
            c = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
            c.request("GET", parts.path or "/", headers=spec.get("headers") or {})
            r = c.getresponse()
            self.reply({"status": r.status, "body": r.read().decode(errors="replace")})
            c.close()
        elif path == "/download":
            self.reply({"mbps": download(spec["host"], spec["port"], spec["size"])})
        elif path == "/upload":
            self.reply({"mbps": upload(spec["host"], spec["port"], spec["size"])})
        elif path == "/rate":
            rps = asyncio.run(
                _rate(spec["host"], spec["port"], spec["seconds"], spec["connections"])
            )
            self.reply({"rps": rps})
        elif path == "/raw":
            data = raw(spec["host"], spec["port"], spec["data"].encode("latin-1"))
            self.reply({"data": data.decode("latin-1")})
        elif path == "/mark":
            self.reply({"t": now()})
        else:
            self.send_error(404)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 9000), Handler).serve_forever()
