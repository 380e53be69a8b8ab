"""The engine's event fan-out: a bounded queue per subscriber, so none can block the engine.

A subscriber that falls behind loses log batches first (the log ring still has the lines),
and is told how many with a ``Notice``; other events are kept as long as there is room.
"""

from __future__ import annotations

import asyncio
from collections import deque

from cockpit.core.events import Event, Level, LogBatch, Notice

DROPPED_NOTICE_KEY = "events-dropped"


class Subscription:
    """Events published after it was made, in order; ends once the bus closes and it is drained."""

    def __init__(
        self, bus: EventBus, *, max_events: int, max_lines: int, max_batch_lines: int
    ) -> None:
        self._bus = bus
        self._max_events = max_events
        self._max_lines = max_lines
        self._max_batch_lines = max_batch_lines
        self._queue: deque[Event] = deque()
        self._queued_lines = 0
        self._dropped_lines = 0
        self._dropped_events = 0
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def dropped(self) -> tuple[int, int]:
        """(log lines, other events) dropped for this subscriber so far and not yet reported."""
        return self._dropped_lines, self._dropped_events

    def put(self, event: Event) -> None:
        """Queue ``event`` without ever blocking; make room by dropping the oldest log lines."""
        if self._closed:
            return
        queue = self._queue
        if isinstance(event, LogBatch):
            queue.append(event)
            self._queued_lines += len(event.lines)
            while self._queued_lines > self._max_lines and self._drop_oldest_lines(
                self._queued_lines - self._max_lines
            ):
                pass
        else:
            if len(queue) >= self._max_events and not self._drop_oldest_lines(None):
                queue.popleft()
                self._dropped_events += 1
            queue.append(event)
        self._wakeup.set()

    def _drop_oldest_lines(self, count: int | None) -> bool:
        """Drop ``count`` of the oldest queued lines (None: the whole oldest batch)."""
        for index, queued in enumerate(self._queue):
            if not isinstance(queued, LogBatch):
                continue
            lines = queued.lines
            if count is None or count >= len(lines):
                del self._queue[index]
                dropped = len(lines)
            else:
                self._queue[index] = LogBatch(lines[count:], queued.dropped_total)
                dropped = count
            self._queued_lines -= dropped
            self._dropped_lines += dropped
            return True
        return False

    def close(self) -> None:
        """No more events; iteration ends once the queue is drained."""
        self._closed = True
        self._wakeup.set()

    async def aclose(self) -> None:
        """Stop receiving events (for a consumer that leaves before the engine stops)."""
        self._bus.unsubscribe(self)
        self.close()
        self._queue.clear()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._dropped_lines or self._dropped_events:
            return self._dropped_notice()
        event = self._queue.popleft()
        if isinstance(event, LogBatch):
            self._queued_lines -= len(event.lines)
            event = self._merge_following(event)
        return event

    def _merge_following(self, batch: LogBatch) -> LogBatch:
        # A consumer that was busy gets one batch for everything waiting, not many small ones.
        queue = self._queue
        parts = [batch]
        size = len(batch.lines)
        while queue and isinstance(following := queue[0], LogBatch):
            if size + len(following.lines) > self._max_batch_lines:
                break
            queue.popleft()
            self._queued_lines -= len(following.lines)
            size += len(following.lines)
            parts.append(following)
        if len(parts) == 1:
            return batch
        lines = tuple(line for part in parts for line in part.lines)
        return LogBatch(lines, parts[-1].dropped_total)

    def _dropped_notice(self) -> Notice:
        lines, events = self._dropped_lines, self._dropped_events
        self._dropped_lines = self._dropped_events = 0
        parts = [f"{lines} log line{'s' if lines != 1 else ''}"] if lines else []
        if events:
            parts.append(f"{events} event{'s' if events != 1 else ''}")
        return Notice(
            DROPPED_NOTICE_KEY,
            f"skipped {' and '.join(parts)}: this view fell behind (the log keeps the lines)",
            Level.WARNING,
        )


class EventBus:
    """Publishes each event to every subscription; publishing never waits."""

    def __init__(
        self, *, max_events: int = 1_000, max_lines: int = 20_000, max_batch_lines: int = 2_000
    ) -> None:
        self._max_events = max_events
        # Room for at least one whole batch, or a subscriber that keeps up would lose lines.
        self._max_lines = max(max_lines, max_batch_lines)
        self._max_batch_lines = max_batch_lines
        self._subscriptions: list[Subscription] = []
        self._closed = False

    def subscribe(self) -> Subscription:
        subscription = Subscription(
            self,
            max_events=self._max_events,
            max_lines=self._max_lines,
            max_batch_lines=self._max_batch_lines,
        )
        if self._closed:
            subscription.close()
        else:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish(self, event: Event) -> None:
        for subscription in self._subscriptions:
            subscription.put(event)

    def close(self) -> None:
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
