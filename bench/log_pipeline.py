"""Benchmark: log pipeline throughput (parse + filter + alert rules + ring) against bare reading.

Goal: >= 200k lines/s with a regex filter active, and >= 0.3 of the rate of reading the same
lines with no processing. Prints human lines, then one JSON object as the last line.

Baseline ("reading the same lines with no processing"): what every producer must do to
hand lines over at all. From in-memory byte chunks as a pod log stream delivers them,
decode, split into lines and wrap each in a LogLine. Iterating already-built LogLine objects
would time the interpreter's for loop, not reading.
Measured: the same reading, then ``LogPipeline.ingest`` on batches of 512 lines (level
detection, seq, ring, alert rules) and the regex filter on every stored line, as the log
pane re-filters each batch. The filter is a regex a user would type; the query compiler
skips the regex engine on lines that lack its literals, so a regex without any literal
("regex without literals" below) is slower and reported for comparison, not as the goal.
Timing: the best of 7 runs of each ~2,500-line slice (see ``rates``).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cockpit.core.alerts import AlertRules
from cockpit.core.events import LogLine, SourceKind
from cockpit.core.logring import LogRing
from cockpit.core.pipeline import LogPipeline
from cockpit.core.query import Query, parse_query

LINES = 200_000
CHUNK_LINES = 64  # lines per read from one stream
BATCH_LINES = 512  # lines per ingest (the engine flushes every ~50 ms or N lines)
SLICE_CHUNKS = 40  # ~2,500 lines timed at a time
REPEATS = 7
QUERY = r"/timeout after \d+ms|connection refused/"

Chunk = tuple[str, str, SourceKind, bytes]

_PATHS = ["/api/v1/items", "/api/v1/cart", "/healthz", "/api/v1/orders/{}", "/static/app.js"]
_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/server.py", line 88, in handle',
    "    response = await self.route(request)",
    '  File "/app/routes/orders.py", line {n}, in create_order',
    "    total = sum(item.price for item in cart.items)",
    "TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'",
]


def _python_style(rng: random.Random, n: int) -> list[str]:
    """The local 'api' process: Python logging, access lines, now and then a traceback."""
    out: list[str] = []
    while len(out) < n:
        clock = f"10:{rng.randrange(60):02d}:{rng.randrange(60):02d},{rng.randrange(1000):03d}"
        stamp = f"2024-05-01 {clock}"
        roll = rng.random()
        if roll < 0.004:
            out.extend(t.format(n=rng.randrange(10, 99)) for t in _TRACEBACK)
        elif roll < 0.03:
            millis = rng.randrange(20, 900)
            out.append(f"{stamp} ERROR api.db timeout after {millis}ms talking to store")
        elif roll < 0.10:
            out.append(f"{stamp} WARNING api.cache miss for key user:{rng.randrange(10**6)}")
        elif roll < 0.25:
            item = rng.randrange(10**5)
            out.append(f"{stamp} DEBUG api.sql SELECT * FROM items WHERE id = {item}")
        else:
            path = rng.choice(_PATHS).format(rng.randrange(10**4))
            peer = f"10.244.0.{rng.randrange(255)}:{rng.randrange(30000, 60000)}"
            out.append(f'{stamp} INFO uvicorn.access {peer} - "GET {path} HTTP/1.1" 200')
    return out[:n]


def _go_logfmt(rng: random.Random, n: int) -> list[str]:
    """The 'store' pods: Go slog text output."""
    out = []
    for _ in range(n):
        roll = rng.random()
        stamp = f"time=2024-05-01T10:00:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}Z"
        if roll < 0.02:
            peer = f"10.96.0.{rng.randrange(255)}:5432"
            error = f"dial tcp {peer}: connect: connection refused"
            out.append(f'{stamp} level=ERROR msg="query failed" err="{error}"')
        elif roll < 0.08:
            out.append(f'{stamp} level=WARN msg="slow query" duration={rng.randrange(200, 3000)}ms')
        else:
            request = f"method=GET path=/items/{rng.randrange(10**4)} status=200"
            took = f"duration={rng.randrange(1, 90)}ms"
            out.append(f'{stamp} level=INFO msg="request" {request} {took}')
    return out


def _json_lines(rng: random.Random, n: int) -> list[str]:
    """The 'web' pods: pino JSON."""
    out = []
    for _ in range(n):
        roll = rng.random()
        level = 50 if roll < 0.02 else 40 if roll < 0.06 else 30
        msg = (
            f"upstream timeout after {rng.randrange(100, 5000)}ms"
            if level == 50
            else "request completed"
        )
        out.append(
            json.dumps(
                {
                    "level": level,
                    "time": 1714557600000 + rng.randrange(10**6),
                    "pid": 1,
                    "hostname": "web-6b7c9d8f5-q8wz2",
                    "reqId": f"req-{rng.randrange(10**6):x}",
                    "msg": msg,
                    "responseTime": rng.randrange(1, 400),
                },
                separators=(",", ":"),
            )
        )
    return out


def _events(rng: random.Random, n: int) -> list[str]:
    reasons = [
        "BackOff Back-off restarting failed container app in pod store-7d9f8c6b5-x2k4p",
        "Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 503",
        'Pulled Container image "store:dev" already present on machine',
    ]
    return [f"Warning {rng.choice(reasons)}" for _ in range(n)]


def make_chunks(total: int, seed: int = 7) -> list[Chunk]:
    """Byte chunks from several streams, interleaved the way the engine's readers see them."""
    rng = random.Random(seed)
    streams: list[tuple[str, str, SourceKind, list[str]]] = [
        ("api", "api", SourceKind.LOCAL, _python_style(rng, total * 30 // 100)),
        ("store-7d9f8c6b5-x2k4p/app", "store", SourceKind.POD, _go_logfmt(rng, total * 25 // 100)),
        ("store-7d9f8c6b5-m4n7z/app", "store", SourceKind.POD, _go_logfmt(rng, total * 15 // 100)),
        ("web-6b7c9d8f5-q8wz2/web", "web", SourceKind.POD, _json_lines(rng, total * 29 // 100)),
        ("events", "store", SourceKind.EVENT, _events(rng, total // 100)),
    ]
    chunks: list[Chunk] = []
    for source, service, kind, lines in streams:
        for start in range(0, len(lines), CHUNK_LINES):
            text = "\n".join(lines[start : start + CHUNK_LINES]) + "\n"
            chunks.append((source, service, kind, text.encode()))
    rng.shuffle(chunks)
    return chunks


def read_only(chunks: list[Chunk]) -> int:
    """Baseline: decode, split, build LogLines; nothing else."""
    count = 0
    ts = 1714557600.0
    for source, service, kind, raw in chunks:
        batch = [LogLine(source, service, kind, text, ts) for text in raw.decode().splitlines()]
        count += len(batch)
    return count


def read_and_process(chunks: list[Chunk], pipeline: LogPipeline, query: Query) -> Stats:
    """Measured: the same reading, then ingest and filter in batches."""
    match = query.predicate()
    ingest = pipeline.ingest
    stats = Stats()
    ts = 1714557600.0
    pending: list[LogLine] = []
    last = len(chunks) - 1
    for index, (source, service, kind, raw) in enumerate(chunks):
        pending.extend(
            [LogLine(source, service, kind, text, ts) for text in raw.decode().splitlines()]
        )
        if len(pending) >= BATCH_LINES or index == last:
            stored, raised = ingest(pending)
            stats.shown += len([line for line in stored if match(line)])
            stats.alerts += len(raised)
            stats.lines += len(stored)
            pending = []
    return stats


@dataclass
class Stats:
    lines: int = 0
    shown: int = 0
    alerts: int = 0


def rates(chunks: list[Chunk], query: Query, repeats: int) -> tuple[float, float]:
    """(baseline, measured) lines/s: the best of ``repeats`` runs of each slice, summed.

    Other processes share this machine's cores; timing short slices many times and keeping
    each one's best run measures the code rather than the neighbours. Baseline and pipeline
    runs alternate, so both see the same conditions. The pipeline keeps its state across
    runs: after the warm-up pass its ring is full, so every append also evicts.
    """
    pipeline = LogPipeline(LogRing(), AlertRules())
    read_and_process(chunks, pipeline, query)  # warm-up: fills the ring
    slices = [chunks[i : i + SLICE_CHUNKS] for i in range(0, len(chunks), SLICE_CHUNKS)]
    best_read = [float("inf")] * len(slices)
    best_process = [float("inf")] * len(slices)
    lines = 0
    for _ in range(repeats):
        lines = 0
        for index, part in enumerate(slices):
            start = time.perf_counter()
            lines += read_only(part)
            middle = time.perf_counter()
            read_and_process(part, pipeline, query)
            end = time.perf_counter()
            best_read[index] = min(best_read[index], middle - start)
            best_process[index] = min(best_process[index], end - middle)
    return lines / sum(best_read), lines / sum(best_process)


def parsed(text: str) -> Query:
    query = parse_query(text)
    if not isinstance(query, Query):
        raise SystemExit(f"bad benchmark query {text!r}: {query.message}")
    return query


def main() -> None:
    chunks = make_chunks(LINES)
    query = parsed(QUERY)
    stats = read_and_process(chunks, LogPipeline(LogRing(), AlertRules()), query)
    print(
        f"{stats.lines} lines from 5 streams, filter {QUERY}: "
        f"{stats.shown} lines shown, {stats.alerts} alert updates"
    )
    baseline, value = rates(chunks, query, REPEATS)
    ratio = value / baseline
    print(f"baseline (read + build LogLine): {baseline:12,.0f} lines/s")
    print(f"pipeline + regex filter:         {value:12,.0f} lines/s  (ratio {ratio:.2f})")
    for label, text in (("no filter", ""), ("regex without literals", r"/\d{3,}ms/")):
        _, rate = rates(chunks, parsed(text), 3)
        print(f"pipeline, {label + ':':28s} {rate:12,.0f} lines/s")

    passed = ratio >= 0.3 and value >= 200_000
    print(
        json.dumps(
            {
                "bench": "log_pipeline",
                "value": round(value),
                "baseline": round(baseline),
                "unit": "lines/s",
                "ratio": round(ratio, 3),
                "goal": ">= 0.3 and value >= 200000",
                "pass": passed,
            }
        )
    )


if __name__ == "__main__":
    main()
