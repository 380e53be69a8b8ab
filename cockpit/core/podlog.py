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


@dataclass(slots=True)
class LogCursor:
    """Where a container's log stream has got to, so a new request resumes it exactly.

    The log API's ``sinceTime`` has one-second precision, so a resumed stream repeats the
    lines of the last second already seen: those are recognised by (timestamp, text) and
    dropped. Everything after is new. One cursor spans a container's instances too: a
    restarted container's lines are all later than its predecessor's.
    """

    last_stamp: str = ""  # full RFC 3339 timestamp of the last line accepted
    second: str = ""  # its first 19 characters: "2024-05-01T10:00:00"
    _seen: set[tuple[str, str]] = field(default_factory=set)

    @property
    def started(self) -> bool:
        return bool(self.second)

    def since_time(self) -> str:
        """The ``sinceTime`` to resume from ("" before the first line)."""
        return self.second + "Z" if self.second else ""

    def accept(self, stamp: str, text: str) -> bool:
        """Whether a line is new (and, if so, remember it)."""
        second = stamp[:19]
        key = (stamp, text)
        if second == self.second:
            if key in self._seen:
                return False
            self._seen.add(key)
        elif second > self.second:
            self.second = second
            self._seen = {key}
        # else: a line older than the last second seen (stdout and stderr can interleave a
        # little out of order): it was not seen before, as a resume never goes back that far.
        self.last_stamp = stamp
        return True


class LogSplitter:
    """Turns the chunks of one container's ``timestamps=true`` log stream into LogLines.

    A chunk may end in the middle of a line (even of a UTF-8 sequence): the tail is kept
    for the next chunk. Lines the cursor has seen are dropped.
    """

    __slots__ = ("_parse", "_rest", "cursor", "service", "source", "stream")

    def __init__(
        self, source: str, service: str, cursor: LogCursor | None = None, stream: str = "stdout"
    ) -> None:
        self.source = source
        self.service = service
        self.stream = stream
        self.cursor = cursor if cursor is not None else LogCursor()
        self._rest = b""
        self._parse = TimestampParser()

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
