"""Pod log streams as lines: split the kubelet's ``timestamps=true`` output, resume a broken
stream with no gap and no duplicate, and give each pod a stable colour.

Pure: the follower in ``cockpit.engine.logs`` feeds raw chunks in and gets LogLines out.
"""

from __future__ import annotations

import calendar
import zlib
from dataclasses import dataclass, field

from cockpit.core.events import LogLine, SourceKind

# LogLine is frozen; building ~100k of them a second through the dataclass __init__ costs
# more than the rest of the parsing, so lines are built with the slot setters (as LogRing).
_new_line = object.__new__
_SLOTS = {name: LogLine.__dict__[name].__set__ for name in LogLine.__slots__}
_SET_SOURCE = _SLOTS["source"]
_SET_SERVICE = _SLOTS["service"]
_SET_KIND = _SLOTS["kind"]
_SET_TEXT = _SLOTS["text"]
_SET_TS = _SLOTS["ts"]
_SET_STREAM = _SLOTS["stream"]
_SET_LEVEL = _SLOTS["level"]
_SET_SEQ = _SLOTS["seq"]
_DEFAULT_LEVEL = LogLine.__dataclass_fields__["level"].default


def _make_line(source: str, service: str, text: str, ts: float, stream: str) -> LogLine:
    line: LogLine = _new_line(LogLine)
    _SET_SOURCE(line, source)
    _SET_SERVICE(line, service)
    _SET_KIND(line, SourceKind.POD)
    _SET_TEXT(line, text)
    _SET_TS(line, ts)
    _SET_STREAM(line, stream)
    _SET_LEVEL(line, _DEFAULT_LEVEL)
    _SET_SEQ(line, 0)
    return line


class TimestampParser:
    """RFC 3339 timestamps as the kubelet writes them -> unix time, fast: the date and time
    to the second are converted once per distinct second."""

    __slots__ = ("_epoch", "_second")

    def __init__(self) -> None:
        self._second = ""
        self._epoch = 0

    def __call__(self, stamp: str) -> float:
        second = stamp[:19]
        if second != self._second:
            try:
                self._epoch = calendar.timegm(
                    (
                        int(second[0:4]),
                        int(second[5:7]),
                        int(second[8:10]),
                        int(second[11:13]),
                        int(second[14:16]),
                        int(second[17:19]),
                        0,
                        0,
                        0,
                    )
                )
            except ValueError:
                return 0.0
            self._second = second
        rest = stamp[19:]
        if rest.startswith(".") and rest.endswith("Z"):
            return self._epoch + float("0" + rest[:-1])
        if rest == "Z":
            return float(self._epoch)
        return _with_offset(self._epoch, rest)


def _with_offset(epoch: int, rest: str) -> float:
    frac = 0.0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac = float("0" + rest[:end])
        rest = rest[end:]
    if len(rest) == 6 and rest[0] in "+-":
        sign = -1 if rest[0] == "-" else 1
        return epoch - sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) + frac
    return epoch + frac


def _order_key(stamp: str) -> str:
    """``2024-05-01T10:00:00.5Z`` -> ``2024-05-01T10:00:00.500000000``: comparable as text
    (the kubelet trims trailing zeros from the nanoseconds)."""
    frac = stamp[20:-1] if len(stamp) > 20 and stamp[19] == "." and stamp[-1] == "Z" else ""
    return stamp[:19] + "." + frac.ljust(9, "0")


@dataclass(slots=True)
class LogCursor:
    """Where a container's log stream has got to, so a new request resumes it exactly.

    The log API's ``sinceTime`` has one-second precision, so a resumed stream repeats the
    lines of that second: those seen are recognised by (timestamp, text), and those before
    the last line seen (skipped by a ``tailLines`` start) by their time; both are dropped.
    Everything after is new. One cursor spans a container's instances too: a restarted
    container's lines are all later than its predecessor's.
    """

    second: str = ""  # "2024-05-01T10:00:00": the second of the latest line accepted
    latest: str = ""  # _order_key of the latest line accepted
    resuming: bool = False  # between resume() and the first line after ``latest``
    _seen: set[tuple[str, str]] = field(default_factory=set)

    @property
    def started(self) -> bool:
        return bool(self.second)

    def since_time(self) -> str:
        """The ``sinceTime`` that resumes the stream ("" before the first line)."""
        return self.second + "Z" if self.second else ""

    def resume(self) -> str:
        """Prepare for a new request that repeats from ``since_time()``; returns it."""
        self.resuming = self.started
        return self.since_time()

    def accept(self, stamp: str, text: str) -> bool:
        """Whether a line is new (and, if so, remember it)."""
        second = stamp[:19]
        if second < self.second:
            # Older than the second resumed from: never sent again by a resumed stream, so
            # this is a line written a little out of order (stdout and stderr interleave).
            return not self.resuming
        key = (stamp, text)
        if second == self.second:
            if key in self._seen:
                return False
            order = _order_key(stamp)
            if self.resuming and order < self.latest:
                return False  # before the last line seen: a line a tail start skipped
            self._seen.add(key)
        else:
            self.second = second
            self._seen = {key}
            order = _order_key(stamp)
        if order > self.latest:
            self.latest = order
            self.resuming = False
        return True


class LogSplitter:
    """Turns the chunks of one container's ``timestamps=true`` log stream into LogLines.

    A chunk may end in the middle of a line (even of a UTF-8 sequence): the tail is kept
    for the next chunk. Lines the cursor has seen are dropped.
    """

    __slots__ = ("_parse", "_rest", "cursor", "foreign", "service", "source", "stream")

    def __init__(
        self, source: str, service: str, cursor: LogCursor | None = None, stream: str = "stdout"
    ) -> None:
        self.source = source
        self.service = service
        self.stream = stream
        self.cursor = cursor if cursor is not None else LogCursor()
        self._rest = b""
        self._parse = TimestampParser()
        # Lines without a timestamp are the kubelet's, not the container's: it writes errors
        # into a stream it already answered 200 ("unable to retrieve container logs ...").
        self.foreign: list[str] = []

    def feed(self, chunk: bytes) -> list[LogLine]:
        data = self._rest + chunk if self._rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return []
        self._rest = data[cut + 1 :]
        return self._lines(data[:cut])

    def finish(self) -> list[LogLine]:
        """The last line of a stream that ended without a newline."""
        rest, self._rest = self._rest, b""
        return self._lines(rest) if rest else []

    def reset(self) -> None:
        """Forget a partial line (the stream broke: the resumed one sends it whole)."""
        self._rest = b""

    def _lines(self, data: bytes) -> list[LogLine]:
        out = []
        accept = self.cursor.accept
        parse = self._parse
        source, service, stream = self.source, self.service, self.stream
        for raw in data.decode("utf-8", "replace").split("\n"):
            stamp, _, text = raw.partition(" ")
            if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
                self.foreign.append(raw)
                continue
            if text.endswith("\r"):
                text = text[:-1]
            if not accept(stamp, text):
                continue
            out.append(_make_line(source, service, text, parse(stamp), stream))
        return out


def pod_of_source(source: str) -> str:
    """``store-7d9f-x2k4p/store`` -> ``store-7d9f-x2k4p``."""
    return source.partition("/")[0]


def pod_colour(pod: str, palette_size: int) -> int:
    """A stable palette index for a pod: the same pod name gets the same colour in every run
    (a CRC, not ``hash()``, which Python salts per process)."""
    if palette_size <= 0:
        raise ValueError("palette_size must be positive")
    return zlib.crc32(pod.encode()) % palette_size


def source_colour(source: str, palette_size: int) -> int:
    """The colour of a log source: its pod's colour for ``pod/container`` sources."""
    return pod_colour(pod_of_source(source), palette_size)
