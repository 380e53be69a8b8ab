"""Log lines leave the engine in batches: every ~50 ms, or at once when 2,000 are waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from cockpit.core.events import LogBatch, LogLine

FLUSH_INTERVAL_SECONDS = 0.05
MAX_BATCH_LINES = 2_000


class LogBatcher:
    """Collects sequenced lines and publishes them as ``LogBatch`` events."""

    def __init__(
        self,
        publish: Callable[[LogBatch], None],
        dropped_total: Callable[[], int],
        *,
        interval: float = FLUSH_INTERVAL_SECONDS,
        max_lines: int = MAX_BATCH_LINES,
    ) -> None:
        self._publish = publish
        self._dropped_total = dropped_total
        self._interval = interval
        self._max_lines = max_lines
        self._pending: list[LogLine] = []
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, lines: Sequence[LogLine]) -> None:
        self._pending.extend(lines)
        if len(self._pending) >= self._max_lines:
            self.flush()
        elif self._pending:
            self._waiting.set()

    def flush(self) -> None:
        """Publish everything waiting now (in batches of at most ``max_lines``)."""
        pending, self._pending = self._pending, []
        step = self._max_lines
        for start in range(0, len(pending), step):
            self._publish(LogBatch(tuple(pending[start : start + step]), self._dropped_total()))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="log batcher")

    async def stop(self) -> None:
        """Stop the timer and publish what is left."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()

    async def _run(self) -> None:
        while True:
            await self._waiting.wait()
            # Wait out the interval so the lines that follow go in the same batch.
            await asyncio.sleep(self._interval)
            self._waiting.clear()
            self.flush()
