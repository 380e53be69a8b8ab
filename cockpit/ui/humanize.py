"""Short human forms of sizes, ages and durations for narrow table cells."""

from __future__ import annotations


def size(count: int) -> str:
    """1023 -> "1023B", 1536 -> "1.5K", 3 * 2**20 -> "3.0M"."""
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"  # pragma: no cover - the loop returns at G


def ago(then: float | None, now: float) -> str:
    """Seconds between ``then`` and ``now`` as "4s", "3m", "2h", "5d"; "—" when never."""
    if then is None:
        return "—"
    seconds = max(0.0, now - then)
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def duration(seconds: float | None) -> str:
    """0.042 -> "42ms", 3.5 -> "3.5s"; "—" when unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def count(value: int) -> str:
    """12345 -> "12,345"."""
    return f"{value:,}"
