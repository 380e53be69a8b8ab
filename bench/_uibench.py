"""What the UI benchmarks share: frame timestamps, keypress -> frame latency, process memory."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from textual import events
from textual.widgets import DataTable


def watch_frames(app: Any) -> list[float]:
    """A list that gets the perf_counter time of every frame the app composes from now on."""
    frames: list[float] = []
    original_display = app._display

    def display(screen: Any, renderable: Any) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
        original_display(screen, renderable)

    app._display = display
    return frames


async def keypress_latencies(
    app: Any, table: DataTable[Any], frames: list[float], seconds: float, every: float = 0.1
) -> list[float]:
    """Move ``table``'s cursor up/down every ``every`` s for ``seconds``; each sample is the
    ms from posting the key to the first frame composed with the cursor moved."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    step = 1
    while time.perf_counter() < deadline:
        before = table.cursor_row
        target = before + step if 0 <= before + step < table.row_count else before - step
        step = -step if target < before else step
        frames_before = len(frames)
        pressed = time.perf_counter()
        app.post_message(events.Key("down" if target > before else "up", None))
        while table.cursor_row != target or len(frames) == frames_before:
            await asyncio.sleep(0.0005)
            if time.perf_counter() - pressed > 2:
                break
        frame = next((t for t in frames[frames_before:] if t >= pressed), None)
        if frame is not None and table.cursor_row == target:
            samples.append((frame - pressed) * 1000)
        await asyncio.sleep(every)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("inf")
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (default: this process) in MB, from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds ``pid`` (default: this process, every thread) used so far."""
    with open(f"/proc/{pid or os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
