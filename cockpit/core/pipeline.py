"""The log hot path: sequence lines into the ring, settle their level, run the alert rules.

The engine hands every batch of lines from its producers to ``LogPipeline.ingest`` and
publishes what comes back (the lines in a ``LogBatch``, the alerts as ``Alert`` events).
"""

from __future__ import annotations

from collections.abc import Iterable

from cockpit.core.alerts import AlertRules
from cockpit.core.events import Alert, Level, LogLine
from cockpit.core.levels import detect_level
from cockpit.core.logring import LogRing

# See LogRing: a line is stamped in place while only the ring and this pipeline hold it.
_set_level = LogLine.__dict__["level"].__set__

_INFO, _WARNING, _ERROR = Level.INFO, Level.WARNING, Level.ERROR


class LogPipeline:
    """Ring buffer plus alert rules, fed batch by batch.

    Levels: a producer that knows a line's level (a Kubernetes event's type, cockpit's own
    warnings) sets it; a producer that does not leaves the default, INFO. For INFO lines
    the level the text states (``detect_level``) wins, so "ERROR ..." becomes ERROR and
    "DEBUG ..." becomes DEBUG. Lines that belong to a Python traceback (frames, code, the
    exception line) become ERROR too, so ``level:error`` shows whole tracebacks.
    """

    __slots__ = ("ring", "rules")

    def __init__(self, ring: LogRing, rules: AlertRules) -> None:
        self.ring = ring
        self.rules = rules

    def ingest(self, lines: Iterable[LogLine]) -> tuple[list[LogLine], list[Alert]]:
        """Store ``lines``; returns them (seq and level assigned) and the alerts they raised."""
        stored = self.ring.extend(lines)
        alerts: list[Alert] = []
        feed = self.rules.feed_leveled
        tracebacks = self.rules.tracebacks
        detect = detect_level
        set_level = _set_level
        for line in stored:
            level = line.level
            if level is _INFO:
                detected = detect(line.text)
                if detected is not None and detected is not _INFO:
                    set_level(line, detected)
                    level = detected
            # Below WARNING, only a line of a traceback in progress on its source can
            # matter to the rules (a traceback's first line is ERROR): most lines skip
            # the call.
            if level >= _WARNING or (tracebacks and line.source in tracebacks):
                raised = feed(line)
                if raised:
                    alerts.extend(raised)
                if level < _ERROR and line.source in tracebacks:
                    set_level(line, _ERROR)
        return stored, alerts

    def flush(self, source: str | None = None) -> list[Alert]:
        """Alerts of tracebacks cut off by the end of their stream (call when one ends)."""
        return self.rules.flush(source)
