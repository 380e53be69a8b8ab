"""The bounded, sequenced store of log lines every view reads from.

Bounded by line count and by text size; each appended line gets the next ``seq`` (1, 2, 3...),
so a consumer can resume with ``since(seq)`` and an alert can point at its line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING

from cockpit.core.events import LogLine

if TYPE_CHECKING:
    from cockpit.core.query import Query

# Writes straight into LogLine's slots. A frozen dataclass costs ~10x more to build than
# to stamp, and this is the one place a line gets its seq, before anyone else has seen it
# (seq == 0 says so). Lines that already carry a seq are copied instead.
_set_seq = LogLine.__dict__["seq"].__set__
_seq_of = attrgetter("seq")
_text_of = attrgetter("text")
_SINK: deque[None] = deque(maxlen=0)
_consume = _SINK.extend  # runs an iterator to its end, keeping nothing


def _with_seq(line: LogLine, seq: int) -> LogLine:
    if line.seq == 0:
        _set_seq(line, seq)
        return line
    return LogLine(
        line.source, line.service, line.kind, line.text, line.ts, line.stream, line.level, seq
    )


class LogRing:
    """The newest lines, at most ``max_lines`` of them and at most ``max_bytes`` of text.

    Text size is counted as ``len(text)`` (characters), a close enough proxy for memory.
    A line longer than ``max_bytes`` by itself gets its seq and is dropped at once.
    ``append`` stamps ``seq`` into the line it is given when that line has none yet (see
    ``_set_seq``); don't hand the same unsequenced object to two rings.
    """

    __slots__ = ("_bytes", "_dropped", "_last_seq", "_lines", "max_bytes", "max_lines")

    def __init__(self, max_lines: int = 100_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        if max_lines < 1 or max_bytes < 1:
            raise ValueError("LogRing needs room for at least one line and one byte")
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: deque[LogLine] = deque()
        self._bytes = 0
        self._dropped = 0
        self._last_seq = 0

    def append(self, line: LogLine) -> LogLine:
        """Store ``line`` as the newest one; returns it with its ``seq`` assigned."""
        seq = self._last_seq + 1
        self._last_seq = seq
        line = _with_seq(line, seq)
        lines = self._lines
        lines.append(line)
        self._bytes += len(line.text)
        if len(lines) > self.max_lines or self._bytes > self.max_bytes:
            self._evict()
        return line

    def extend(self, lines: Iterable[LogLine]) -> list[LogLine]:
        """Append each line in order; returns them with their seqs assigned."""
        batch = list(lines)
        if not batch:
            return batch
        first = self._last_seq + 1
        if any(map(_seq_of, batch)):
            # Some lines were sequenced before (by another ring): those are copied.
            batch = [_with_seq(line, seq) for seq, line in enumerate(batch, first)]
        else:
            # The common case runs in C (map, sum, deque.extend): no Python code per line.
            _consume(map(_set_seq, batch, range(first, first + len(batch))))
        self._last_seq = first + len(batch) - 1
        self._bytes += sum(map(len, map(_text_of, batch)))
        self._lines.extend(batch)
        if len(self._lines) > self.max_lines or self._bytes > self.max_bytes:
            self._evict()
        return batch

    def _evict(self) -> None:
        lines = self._lines
        size = self._bytes
        dropped = 0
        max_lines, max_bytes = self.max_lines, self.max_bytes
        while lines and (len(lines) > max_lines or size > max_bytes):
            size -= len(lines.popleft().text)
            dropped += 1
        self._bytes = size
        self._dropped += dropped

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def dropped(self) -> int:
        """Lines evicted so far (to stay within either bound)."""
        return self._dropped

    @property
    def last_seq(self) -> int:
        """The seq of the newest line appended (0 before the first)."""
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """The seq of the oldest line still held (``last_seq + 1`` when empty)."""
        return self._last_seq - len(self._lines) + 1

    @property
    def size(self) -> int:
        """Text held, as counted against ``max_bytes``."""
        return self._bytes

    def get(self, seq: int) -> LogLine | None:
        """The line with this seq, or None if it was dropped or does not exist yet."""
        index = seq - self.first_seq
        if 0 <= index < len(self._lines):
            return self._lines[index]
        return None

    def since(self, seq: int) -> list[LogLine]:
        """Lines with a seq greater than ``seq``, oldest first (those still held)."""
        count = min(self._last_seq - seq, len(self._lines))
        return self.tail(count)

    def tail(self, n: int) -> list[LogLine]:
        """The newest ``n`` lines, oldest first."""
        if n <= 0:
            return []
        lines = self._lines
        if n >= len(lines):
            return list(lines)
        # Walk from the new end: deque slicing from the left would cost len - n steps.
        newest = list(islice(reversed(lines), n))
        newest.reverse()
        return newest

    def filtered(self, query: Query, limit: int | None = None) -> list[LogLine]:
        """The newest ``limit`` lines (all if None) that match ``query``, oldest first."""
        if limit is not None and limit <= 0:
            return []
        if query.is_empty:
            return list(self._lines) if limit is None else self.tail(limit)
        match = query.predicate()
        if limit is None:
            return [line for line in self._lines if match(line)]
        found: list[LogLine] = []
        for line in reversed(self._lines):
            if match(line):
                found.append(line)
                if len(found) == limit:
                    break
        found.reverse()
        return found

    def clear(self) -> None:
        """Forget every line (seqs keep counting; the forgotten lines count as dropped)."""
        self._dropped += len(self._lines)
        self._lines.clear()
        self._bytes = 0
