"""Severity detection from a log line's text: the level a line says it has, if any.

Runs on every line of every stream, so the common formats are recognised by ONE compiled
pattern searched over the start of the line (one call into the regex engine per line); the
first level-looking token wins, since a line's level field comes before its message.
"""

from __future__ import annotations

import re

from cockpit.core.events import Level

_DEBUG, _INFO, _WARNING, _ERROR, _FATAL = (
    Level.DEBUG,
    Level.INFO,
    Level.WARNING,
    Level.ERROR,
    Level.FATAL,
)

# Words (lowercased) that name a level in logfmt values, JSON values and [brackets].
LEVEL_NAMES: dict[str, Level] = {
    "trace": _DEBUG,
    "trc": _DEBUG,
    "debug": _DEBUG,
    "dbug": _DEBUG,
    "dbg": _DEBUG,
    "info": _INFO,
    "inf": _INFO,
    "information": _INFO,
    "notice": _INFO,
    "warn": _WARNING,
    "warning": _WARNING,
    "wrn": _WARNING,
    "error": _ERROR,
    "err": _ERROR,
    "eror": _ERROR,
    "severe": _ERROR,
    "fatal": _FATAL,
    "ftl": _FATAL,
    "critical": _FATAL,
    "crit": _FATAL,
    "panic": _FATAL,
    "dpanic": _FATAL,
    "pnc": _FATAL,
    "alert": _FATAL,
    "emerg": _FATAL,
}

# Bare level words, upper case only: "error" in lower case is usually part of a message
# ("no error"), "ERROR" is a level field. Three-letter forms are zerolog/zap console output.
# Grouped by first letter so every alternative of the pattern starts with a literal: that
# lets the regex engine skip to candidate characters instead of trying every position.
_BARE_WORDS: tuple[tuple[str, tuple[str, ...], Level], ...] = (
    ("T", ("RACE", "RC"), _DEBUG),
    ("D", ("EBUG", "BG"), _DEBUG),
    ("I", ("NFO", "NF"), _INFO),
    ("N", ("OTICE",), _INFO),
    ("W", ("ARNING", "ARN", "RN"), _WARNING),
    ("E", ("RROR", "ROR", "RR"), _ERROR),
    ("S", ("EVERE",), _ERROR),
    ("F", ("ATAL", "TL"), _FATAL),
    ("C", ("RITICAL", "RIT"), _FATAL),
    ("P", ("ANIC", "NC"), _FATAL),
)


def _build_pattern() -> tuple[re.Pattern[str], tuple[Level | None, ...]]:
    """The level pattern, and the level each of its capture groups stands for."""
    group_levels: list[Level | None] = [None]  # group 0 is the whole match
    alternatives: list[str] = []
    for first, rests, level in _BARE_WORDS:
        # (?<!\wX) after the first letter X: the word starts at a word boundary ("XERROR"
        # is no level). A leading \b would hide the literal from the engine's skip.
        alternatives.append(rf"{first}(?<!\w{first})({'|'.join(rests)})\b")
        group_levels.append(level)
    # klog/glog header: "E0501 10:00:00.123456   1 file.go:12] msg"
    for first, level in (("I", _INFO), ("W", _WARNING), ("E", _ERROR), ("F", _FATAL)):
        alternatives.append(rf"{first}(\d{{4}}) \d\d:\d\d:\d\d")
        group_levels.append(level)

    def level_value() -> str:
        groups = []
        for level in (_DEBUG, _INFO, _WARNING, _ERROR, _FATAL):
            names = sorted((n for n, lv in LEVEL_NAMES.items() if lv is level), key=len)
            groups.append(f"({'|'.join(reversed(names))})")
            group_levels.append(level)
        return f"(?i:{'|'.join(groups)})"

    # logfmt (logrus, go-kit, log15, slog): level=error, lvl=eror, level="WARN"; and JSON
    # keys: "level": "error", "lvl": "warn", "level": 50 (pino/bunyan numbers). Anchored on
    # the rare letter "v" (then looking back for "le"/"l"): the engine tries a match at every
    # candidate character, and "l" or '"' would make nearly every line a long walk.
    for head, tail in (("le", "el"), ("l", "l")):
        alternatives.append(
            rf'v(?<={head}v){tail}(?:="?{level_value()}\b|(?:name)?"\s*:\s*(?:"{level_value()}"|(\d+)))'
        )
        group_levels.append(None)  # the number: mapped by _pino_level
    # nginx and friends: [error], <warn>
    alternatives.append(rf"\[{level_value()}\]")
    alternatives.append(rf"<{level_value()}>")
    return re.compile("|".join(alternatives)), tuple(group_levels)


_JSON_KEY = r'"(?:level|severity|lvl|levelname|log\.level|loglevel|@l)"\s*:\s*'
_LEVEL_PATTERN, _GROUP_LEVELS = _build_pattern()
_search = _LEVEL_PATTERN.search
_JSON_LEVEL = re.compile(_JSON_KEY + r'(?:"([A-Za-z]+)"|(\d+))')

# How far into a line a level is looked for: past a timestamp, pid, thread and logger
# name, not deep into the message where "ERROR" is just a word. JSON lines are searched
# whole for their level key (some loggers write it after the message).
_PREFIX = 120

# Line starts that say the level when nothing earlier in the line does (Go, Python, Node).
_LINE_STARTS: dict[str, Level] = {
    "Traceback (most recent call last):": _ERROR,
    "  + Exception Group Traceback (most recent call last):": _ERROR,
    "panic:": _FATAL,
    "fatal error:": _FATAL,  # Go runtime: "fatal error: all goroutines are asleep"
    "error:": _ERROR,
    "Error:": _ERROR,
    "fatal:": _FATAL,
    "Fatal:": _FATAL,
    "warning:": _WARNING,
    "Warning:": _WARNING,
}
_LINE_START_KEYS = tuple(_LINE_STARTS)


def _pino_level(number: int) -> Level | None:
    # pino/bunyan numeric levels: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
    # Numbers below 10 are syslog severities or something else: not guessed at.
    if number >= 60:
        return _FATAL
    if number >= 50:
        return _ERROR
    if number >= 40:
        return _WARNING
    if number >= 30:
        return _INFO
    return _DEBUG if number >= 10 else None


def detect_level(text: str) -> Level | None:
    """The level ``text`` states, or None when nothing in it says.

    Recognised: upper-case level words near the start ("2024-05-01 10:00:00 ERROR ...",
    "WARNING:root:...", "[main] INFO"), logfmt ``level=warn``, ``[error]``, JSON level
    fields (``{"level": "error"}``, ``"severity"``, ``"lvl"``, pino numbers), klog headers
    ("E0501 10:00:00..."), and line starts: "Traceback (most recent call last):" and
    "Error:" are ERROR, "panic:" is FATAL. "FATAL", "CRITICAL" and "PANIC" are FATAL.
    Lower-case words in running text ("no error") say nothing.
    """
    found = _search(text, 0, _PREFIX)
    if found is not None:
        group = found.lastindex or 0
        level = _GROUP_LEVELS[group]
        return level if level is not None else _pino_level(int(found.group(group)))
    if text.startswith(_LINE_START_KEYS):
        for start, level in _LINE_STARTS.items():
            if text.startswith(start):
                return level
    if text.startswith("{"):  # its level key may be past the prefix, or one not above
        json_found = _JSON_LEVEL.search(text)
        if json_found is not None:
            word, number = json_found.groups()
            if word is not None:
                return LEVEL_NAMES.get(word.lower())
            return _pino_level(int(number))
    return None
