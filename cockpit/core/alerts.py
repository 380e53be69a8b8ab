"""Alert rules: turn log lines (and engine failures) into de-duplicated, counted alerts.

A line raises an alert when it is at ERROR level or worse, is a Kubernetes Warning event,
or ends a Python traceback (one alert for the whole traceback, chained ones included).
Occurrences that differ only in numbers, ids, timestamps or pod-name hashes share one
alert whose ``count`` grows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cockpit.core.events import Alert, Level, LogLine, SourceKind
from cockpit.core.levels import detect_level

TRACEBACK_STARTS = (
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
)
# Lines Python prints between the parts of a chained traceback.
_CHAIN_MARKERS = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
# "ValueError: bad", "requests.exceptions.HTTPError: 500", "KeyboardInterrupt"
_EXCEPTION_LINE = re.compile(r"((?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*))(?::(?:\s|$)|$)")
_TITLE_LIMIT = 200
# Enum members as module constants: attribute access on an Enum class is slow on a hot path.
_INFO, _WARNING, _ERROR = Level.INFO, Level.WARNING, Level.ERROR
_EVENT = SourceKind.EVENT
_MAX_BLANKS_BEFORE_CHAIN = 2

# Kubernetes' vowel-free alphabet for name suffixes, with every digit (see _ZERO_DIGITS)
_HASH = "[bcdfghjklmnpqrstvwxz0-9]"
# What varies between occurrences of one problem, in one pattern (one pass over the text;
# at each position the first alternative that matches wins, so timestamps and ids are
# taken whole before their digits could be). No placeholder contains a digit or a hex run,
# so normalizing twice changes nothing.
_VARIABLE = re.compile(
    # 2024-05-01T10:00:00.123Z, 2024/05/01 10:00:00,123 +0200, 10:00:00.5
    r"(\d{4}[-/]\d{2}[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?"
    r"(?:Z| ?[+-]\d{2}:?\d{2}\b)?"
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)"
    r"|(\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    # Pod names: Deployment "store-7d9f8c6b5-x2k4p", DaemonSet/Job "agent-x2k4p" (a
    # 5-character suffix needs a digit, so "-check"-like words stay)
    rf"|(-{_HASH}{{6,10}}-{_HASH}{{5}}\b|-(?=[a-z]{{0,4}}\d){_HASH}{{5}}\b)"
    # 0x1f, and hex ids (commit shas, trace ids) with at least one digit and one letter
    r"|(\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b)"
    r"|(\d+)"
)
_PLACEHOLDERS = ("", "<ts>", "<uuid>", "-<pod>", "<hex>", "#")
_SPACES = re.compile(r"\s+")
# Stripped from titles: the alert shows when it was seen, the line's own stamp is noise.
_LEADING_TIMESTAMP = re.compile(
    r"\[?\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?\s+"
)


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDERS[match.lastindex or 0]


# No pattern above tells one ASCII digit from another, so a message normalizes exactly as
# its copy with every digit made 0 does. That copy is cheap to make (str.translate) and is
# the same for every occurrence of a message: it keys a memo, and the regex pass runs once
# per message shape instead of once per error line.
_ZERO_DIGITS = str.maketrans("123456789", "000000000")
_NORMALIZED: dict[str, str] = {}
_NORMALIZED_MAX = 4096


def normalize_message(text: str) -> str:
    """``text`` with what varies between occurrences of one problem replaced by placeholders.

    "timeout after 31ms" and "timeout after 45ms" both become "timeout after #ms".
    """
    shape = text.translate(_ZERO_DIGITS)
    normalized = _NORMALIZED.get(shape)
    if normalized is None:
        normalized = _SPACES.sub(" ", _VARIABLE.sub(_placeholder, shape)).strip()
        if len(_NORMALIZED) >= _NORMALIZED_MAX:
            _NORMALIZED.clear()
        _NORMALIZED[shape] = normalized
    return normalized


def alert_key(service: str, message: str) -> str:
    """The de-duplication key of a log-raised alert: service plus normalized message."""
    return f"{service}|{normalize_message(message)}"


def is_exception_line(text: str) -> bool:
    """True for the last line of a Python traceback: "ValueError: bad", "KeyboardInterrupt"."""
    match = _EXCEPTION_LINE.match(text)
    # Exception classes are CamelCase; "INFO: ..." and "ERROR: ..." are log prefixes.
    return match is not None and not match.group(2).isupper()


def _title(text: str) -> str:
    line = text.strip()
    stamp = _LEADING_TIMESTAMP.match(line)
    if stamp is not None and stamp.end() < len(line):
        line = line[stamp.end() :]
    line = " ".join(line.split())
    return line if len(line) <= _TITLE_LIMIT else line[: _TITLE_LIMIT - 1] + "…"


def _json_title(text: str) -> str:
    """The message of a JSON log line ("msg", "message"; plus its "error"), else the line."""
    try:
        record = json.loads(text)
    except ValueError:
        return _title(text)
    if not isinstance(record, dict):
        return _title(text)
    message = next(
        (record[k] for k in ("msg", "message", "event", "@m") if isinstance(record.get(k), str)),
        "",
    )
    error = next((record[k] for k in ("error", "err", "exception") if k in record), None)
    if isinstance(error, dict):
        error = error.get("message") or error.get("msg") or json.dumps(error)
    if message and error:
        return _title(f"{message}: {error}")
    if message or error:
        return _title(str(message or error))
    return _title(text)


@dataclass(slots=True)
class _Traceback:
    """A Python traceback being collected from one source."""

    service: str
    first_seq: int
    first_ts: float
    lines: list[str]
    last_frame: str = ""  # '  File "app.py", line 9, in handle': part of the dedup key
    # Set once its exception line completed it and the alert was raised; the traceback is
    # kept a few lines longer in case a chained part follows.
    alert_key: str = ""
    chain_key: str = ""  # for a chained part: the alert the first part raised
    held: list[str] = field(default_factory=list)  # blank lines after completion


class AlertRules:
    """Applies the alert rules to a stream of sequenced lines and keeps the alerts.

    Lines from different sources interleave, so tracebacks are collected per source. A
    traceback's alert is raised as soon as its exception line arrives, points at its
    "Traceback" line, and is updated in place (same key and count) if a chained part
    ("During handling of the above exception...") follows. At most ``max_alerts``
    distinct alerts are kept; the least recently seen goes first.
    """

    def __init__(self, traceback_window: int = 200, *, max_alerts: int = 500) -> None:
        if traceback_window < 2 or max_alerts < 1:
            raise ValueError("traceback_window must be >= 2 and max_alerts >= 1")
        self.traceback_window = traceback_window
        self.max_alerts = max_alerts
        # Insertion order = order of last update: the first key is the least recently seen.
        self._alerts: dict[str, Alert] = {}
        self._tracebacks: dict[str, _Traceback] = {}

    @property
    def tracebacks(self) -> Mapping[str, object]:
        """Sources whose last line belongs to a traceback (one mapping object for life)."""
        return self._tracebacks

    def feed(self, line: LogLine) -> list[Alert]:
        """Alerts raised or updated by ``line``; its level is detected when it is INFO."""
        level = line.level
        if level is _INFO:
            level = detect_level(line.text) or level
        return self._feed(line, level)

    def feed_leveled(self, line: LogLine) -> list[Alert]:
        """As ``feed``, for a line whose level is already final (``LogPipeline`` sets it).

        A line below WARNING raises nothing unless it starts a traceback (which
        ``detect_level`` makes ERROR) or a traceback is in progress (``tracebacks``):
        a hot loop may skip such lines without calling this.
        """
        return self._feed(line, line.level)

    def _feed(self, line: LogLine, level: Level) -> list[Alert]:
        if self._tracebacks:
            collecting = self._tracebacks.get(line.source)
            if collecting is not None:
                return self._continue_traceback(collecting, line, level)
        text = line.text
        if text.startswith(TRACEBACK_STARTS):
            self._tracebacks[line.source] = _Traceback(line.service, line.seq, line.ts, [text])
            return []
        if level >= _ERROR:
            return [self._from_line(line, level)]
        if level >= _WARNING and line.kind is _EVENT:
            return [self._from_line(line, _WARNING)]
        return []

    def _from_line(self, line: LogLine, level: Level) -> Alert:
        text = line.text
        title = _json_title(text) if text.startswith("{") else _title(text)
        return self._record(
            alert_key(line.service, title), line.service, title, text, level, line.ts, line.seq
        )

    def _continue_traceback(self, tb: _Traceback, line: LogLine, level: Level) -> list[Alert]:
        text = line.text
        if tb.alert_key:
            if not text.strip() and len(tb.held) < _MAX_BLANKS_BEFORE_CHAIN:
                tb.held.append(text)
                return []
            if text.startswith(_CHAIN_MARKERS):
                tb.lines.extend(tb.held)
                tb.lines.append(text)
                tb.held.clear()
                tb.chain_key, tb.alert_key = tb.alert_key, ""
                return []
            del self._tracebacks[line.source]
            return self._feed(line, level)
        if text[:1] in (" ", "\t", "") or text.startswith((*TRACEBACK_STARTS, *_CHAIN_MARKERS)):
            tb.lines.append(text)
            if text.startswith("  File "):
                tb.last_frame = text.strip()
            if len(tb.lines) >= self.traceback_window:
                del self._tracebacks[line.source]
                return [self._complete(tb, line.ts, None)]
            return []
        if is_exception_line(text):
            tb.lines.append(text)
            return [self._complete(tb, line.ts, text)]
        # Any other line: the traceback ended without its exception line (cut short).
        del self._tracebacks[line.source]
        return [self._complete(tb, line.ts, None), *self._feed(line, level)]

    def _complete(self, tb: _Traceback, ts: float, final: str | None) -> Alert:
        """Raise (or, for a chained part, update) the alert of a finished traceback."""
        title = _title(final if final is not None else _best_title(tb.lines))
        detail = "\n".join(tb.lines)
        if tb.chain_key:
            key = tb.chain_key
            old = self._alerts.pop(key, None)
            if old is not None:
                # The same occurrence, now titled by the exception that propagated.
                alert = Alert(
                    key, old.service, title, detail, old.level, old.count,
                    old.first_seen, max(old.last_seen, ts), tb.first_seq,
                )  # fmt: skip
                self._store(key, alert)
                tb.alert_key = key
                return alert
        else:
            key = alert_key(tb.service, f"{tb.last_frame} {title}")
        alert = self._record(key, tb.service, title, detail, _ERROR, ts, tb.first_seq)
        tb.alert_key = key
        return alert

    def flush(self, source: str | None = None) -> list[Alert]:
        """Alerts of tracebacks cut off by the end of their stream: ``source``'s, or all."""
        if source is None:
            ended = list(self._tracebacks.values())
            self._tracebacks.clear()
        else:
            one = self._tracebacks.pop(source, None)
            ended = [] if one is None else [one]
        return [self._complete(tb, tb.first_ts, None) for tb in ended if not tb.alert_key]

    def raise_alert(
        self,
        key: str,
        service: str,
        title: str,
        detail: str,
        level: Level,
        now: float,
        log_seq: int = 0,
    ) -> Alert:
        """Record an engine-detected problem (process exit, forward failure...) under ``key``."""
        return self._record(key, service, title, detail, level, now, log_seq)

    def _record(
        self, key: str, service: str, title: str, detail: str, level: Level, ts: float, seq: int
    ) -> Alert:
        old = self._alerts.pop(key, None)
        if old is None:
            alert = Alert(key, service, title, detail, level, 1, ts, ts, seq)
        else:
            alert = Alert(
                key, service, title, detail, max(level, old.level), old.count + 1,
                min(old.first_seen, ts), max(old.last_seen, ts), seq or old.log_seq,
            )  # fmt: skip
        self._store(key, alert)
        return alert

    def _store(self, key: str, alert: Alert) -> None:
        alerts = self._alerts
        if len(alerts) >= self.max_alerts:
            del alerts[next(iter(alerts))]
        alerts[key] = alert

    def alerts(self) -> list[Alert]:
        """Every alert kept, most recently seen first."""
        newest_update_first = reversed(self._alerts.values())
        return sorted(newest_update_first, key=lambda alert: alert.last_seen, reverse=True)

    def get(self, key: str) -> Alert | None:
        return self._alerts.get(key)

    def clear(self, key: str | None = None) -> None:
        """Forget one alert, or all of them (tracebacks in progress are kept)."""
        if key is None:
            self._alerts.clear()
        else:
            self._alerts.pop(key, None)

    def __len__(self) -> int:
        return len(self._alerts)


def _best_title(lines: list[str]) -> str:
    """For a traceback without its final line: its first exception-looking line, if any."""
    for text in lines[1:]:
        candidate = text.strip(" \t|+-")
        if is_exception_line(candidate):
            return candidate
    return lines[0]
