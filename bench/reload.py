"""Benchmark: hot reload, save -> new code serving locally, against a bare start of the process.

Goal: <= 1.2x a bare start. Prints human lines, then one JSON object as the last line.

The process: the shop demo (examples/shop/app.py, SERVICE=store: no upstream) copied into
a temporary directory, as the local service of a cockpit session with hot reload on and
cockpit.yaml's default watch settings (so the default debounce is what is measured).
Baseline ("a bare start"): spawn the same command with the same environment and time until
GET /healthz answers 200; then SIGTERM it. Measured: write a changed app.py (the /healthz text
carries a counter) and time from the write until GET /healthz answers with the new text;
that covers noticing the change, the debounce, stopping the old process (until it no longer
listens on the port: the shop closes its listener first on SIGTERM) and starting the new
one. Both are polled by the same client every 5 ms from a thread. Median of ``ROUNDS`` of
each, alternated so that load on the machine hits both alike.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cockpit.core.config import parse_config

REPO = Path(__file__).resolve().parent.parent
COCKPIT = Path(sys.executable).parent / "cockpit"
ROUNDS = 7
POLL = 0.005
GOAL = 1.2
HEALTH = 'self.send_text(HTTPStatus.OK, "ok")'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll_until(port: int, text: str, within: float = 30.0) -> float:
    """Poll GET /healthz until it answers ``text``; the time.monotonic() it did."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.read().decode() == text:
                    return time.monotonic()
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(POLL)
    raise SystemExit(f"bench/reload: /healthz never answered {text!r}")


def app_source(version: int) -> str:
    source = (REPO / "examples" / "shop" / "app.py").read_text()
    assert HEALTH in source, "examples/shop/app.py no longer has the /healthz line"
    return source.replace(HEALTH, f'self.send_text(HTTPStatus.OK, "ok v{version}")')


def bare_start(workdir: Path, env: dict[str, str], port: int, version: int) -> float:
    """Seconds from spawning the command to /healthz answering."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return poll_until(port, f"ok v{version}") - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


class Cockpit:
    """`cockpit up store --headless` in its own process (as a developer runs it); its JSON
    lines read by a thread."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(cwd / "no-kubeconfig")}  # the local loop only
        self.proc = subprocess.Popen(
            [str(COCKPIT), "up", "store", "--headless"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def until(self, match: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]]) -> None:
        if any(match(event) for event in seen):
            return
        deadline = time.monotonic() + 60
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                last = seen[-3:]
                raise SystemExit(f"bench/reload: cockpit never got there; last: {last}") from None
            seen.append(event)
            if match(event):
                return

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def phases(seen: list[dict[str, Any]], saved: float, served: float) -> tuple[float, float, float]:
    """(save -> reload begins, -> new process spawned, -> serving) from cockpit's own log
    lines' timestamps: where the time of a reload goes."""
    texts = [(e["ts"], e["text"]) for e in seen if e["type"] == "LogLine" and e["ts"] >= saved]
    begun = next(ts for ts, text in texts if text.endswith("changed; reloading"))
    spawned = next(ts for ts, text in texts if text.startswith("started store (pid"))
    return begun - saved, spawned - begun, served - spawned


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cockpit-bench-reload-"))
    cockpit: Cockpit | None = None
    try:
        app = root / "app"
        app.mkdir()
        (app / "app.py").write_text(app_source(0))
        port, bare_port = free_port(), free_port()
        service_env = {"SERVICE": "store", "PORT": str(port), "BIND": "127.0.0.1"}
        (root / "cockpit.yaml").write_text(
            "services:\n"
            "  store:\n"
            f"    command: [{sys.executable!r}, app.py]\n"
            "    cwd: app\n"
            f"    port: {port}\n"
            f"    env: {json.dumps(service_env)}\n"
        )
        debounce = parse_config((root / "cockpit.yaml").read_text()).services["store"].watch
        print(
            f"process: examples/shop/app.py (SERVICE=store) under `cockpit up --headless`; "
            f"watch.debounce={debounce.debounce:g} s (the default)"
        )
        # The bare start gets the environment cockpit gives its process.
        bare_env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "COCKPIT_LOCAL": "1", **service_env,
            "PORT": str(bare_port),
        }  # fmt: skip
        starts: list[float] = []
        reloads: list[float] = []
        split: list[tuple[float, float, float]] = []
        seen: list[dict[str, Any]] = []
        cockpit = Cockpit(root)
        cockpit.until(lambda e: e["type"] == "ProcessChanged" and e["status"] == "ready", seen)
        cockpit.until(lambda e: e["type"] == "SyncChanged" and e["state"] == "watching", seen)
        poll_until(port, "ok v0")
        for version in range(1, ROUNDS + 1):
            # measured: save -> serving the new code
            source = app_source(version)
            saved_at = time.time()
            written = time.monotonic()
            (app / "app.py").write_text(source)
            served = poll_until(port, f"ok v{version}")
            served_at = time.time()
            reloads.append(served - written)
            cockpit.until(
                lambda e: (
                    e["type"] == "SyncChanged"
                    and e["state"] in ("in-sync", "failed")
                    and (e["last_sync"] or 0) > saved_at  # noqa: B023 (called at once)
                ),
                seen,
            )
            split.append(phases(seen, saved_at, served_at))
            # baseline: the same command, same directory, started fresh on a port of its own
            starts.append(bare_start(app, bare_env, bare_port, version))
            seen_ms, stopped_ms, up_ms = (phase * 1000 for phase in split[-1])
            print(
                f"round {version}: reload {reloads[-1] * 1000:.0f} ms "
                f"(change seen {seen_ms:.0f} + old process off the port, new one spawned "
                f"{stopped_ms:.0f} + new one serving {up_ms:.0f}), "
                f"bare start {starts[-1] * 1000:.0f} ms"
            )
    finally:
        if cockpit is not None:
            cockpit.stop()
        shutil.rmtree(root, ignore_errors=True)
    value, baseline = statistics.median(reloads), statistics.median(starts)
    ratio = value / baseline
    print(
        f"save -> serving (median of {ROUNDS}): {value * 1000:.0f} ms "
        f"(min {min(reloads) * 1000:.0f}, max {max(reloads) * 1000:.0f})"
    )
    print(
        f"bare start -> serving (median of {ROUNDS}): {baseline * 1000:.0f} ms "
        f"(min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f})"
    )
    names = ("change seen", "old process off the port, new one spawned", "new one serving")
    for index, what in enumerate(names):
        median = statistics.median(phase[index] for phase in split)
        print(f"  of which {what}: median {median * 1000:.0f} ms")
    print(f"ratio {ratio:.2f} (goal <= {GOAL})")
    result = {
        "bench": "reload",
        "value": round(value * 1000, 1),
        "baseline": round(baseline * 1000, 1),
        "unit": "ms",
        "ratio": round(ratio, 3),
        "goal": f"<= {GOAL}",
        "pass": ratio <= GOAL,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
