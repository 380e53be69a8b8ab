"""Run the cockpit over the scripted engine: for the tmux tests and for looking at the UI.

.venv/bin/python tests/ui/run_fake.py [--rate 200] [--theme light] [--key restart=R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes import FakeEngine, demo_engine, demo_session, log_line

from cockpit.core.events import (
    Alert,
    ForwardChanged,
    Level,
    LogBatch,
    LogLine,
    SourceKind,
)
from cockpit.ui.app import run_ui

SOURCES = [
    ("api", "api", SourceKind.LOCAL),
    ("web", "web-5c9d7b-x2x4k/web", SourceKind.POD),
    ("web", "web-5c9d7b-q8m2n/web", SourceKind.POD),
    ("store", "store-7d9f8c-abcde/app", SourceKind.POD),
]
PATHS = ["/api/cart", "/api/item/17", "/healthz", "/api/checkout", "/static/app.js"]


class StreamingEngine(FakeEngine):
    """The demo session plus a steady stream of log lines and counters."""

    def __init__(self, rate: float, **kwargs: object) -> None:
        base = demo_engine(**kwargs)
        super().__init__(initial=demo_session(time.time()), answers=base.answers)
        self.rate = rate
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        if self.rate > 0:
            self._task = asyncio.create_task(self._stream())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await super().stop()
        marker = os.environ.get("COCKPIT_FAKE_STOPPED")
        if marker:  # the tmux tests check that a closed terminal still cleans up
            await asyncio.to_thread(Path(marker).write_text, "stopped\n")

    async def _stream(self) -> None:
        seq = 100
        rng = random.Random(7)
        bytes_in = 0
        while True:
            await asyncio.sleep(0.05)
            count = (
                max(1, int(self.rate * 0.05))
                if self.rate >= 20
                else int(rng.random() < self.rate * 0.05)
            )
            lines: list[LogLine] = []
            now = time.time()
            for _ in range(count):
                seq += 1
                service, source, kind = rng.choice(SOURCES)
                status = rng.choice([200, 200, 200, 201, 404, 500])
                level = Level.ERROR if status == 500 else Level.INFO
                verb, path, took = (
                    rng.choice(["GET", "POST"]),
                    rng.choice(PATHS),
                    rng.randint(1, 90),
                )
                text = f"{verb} {path} {status} {took}ms"
                line = log_line(
                    text, service=service, source=source, kind=kind, level=level, ts=now
                )
                lines.append(
                    LogLine(
                        line.source,
                        line.service,
                        line.kind,
                        line.text,
                        line.ts,
                        line.stream,
                        line.level,
                        seq,
                    )
                )
            if lines:
                self.emit(LogBatch(tuple(lines)))
            bytes_in += rng.randint(0, 4096)
            self.emit(
                ForwardChanged(
                    "web:8080",
                    "127.0.0.2:8080",
                    "web-5c9d7b-x2x4k:8080",
                    "listening",
                    2,
                    bytes_in,
                    bytes_in * 8,
                )
            )
            if lines and any(line.level >= Level.ERROR for line in lines) and rng.random() < 0.05:
                bad = next(line for line in lines if line.level >= Level.ERROR)
                self.emit(
                    Alert(
                        key=f"http500:{bad.service}",
                        service=bad.service,
                        title=f"HTTP 500 from {bad.service}",
                        detail=bad.text,
                        level=Level.ERROR,
                        count=seq,
                        first_seen=now,
                        last_seen=now,
                        log_seq=bad.seq,
                    )
                )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=5.0, help="log lines per second")
    parser.add_argument("--theme", default=None)
    parser.add_argument("--key", action="append", default=[], help="binding_id=key")
    args = parser.parse_args()
    keys = dict(item.split("=", 1) for item in args.key)
    engine = StreamingEngine(args.rate)
    return run_ui(
        engine,
        keys=keys,
        theme=args.theme,
        title_info={"context": "kind-dev", "namespace": "shop", "service": "api"},
        shell=lambda service: ["sh", "-c", f"echo shell into {service}; sleep 1"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
