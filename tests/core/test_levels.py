"""detect_level: the level a log line's text states, across the formats services write."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.events import Level
from cockpit.core.levels import detect_level

DEBUG, INFO, WARNING, ERROR, FATAL = (
    Level.DEBUG,
    Level.INFO,
    Level.WARNING,
    Level.ERROR,
    Level.FATAL,
)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        # plain level words after a timestamp, logger formats of several ecosystems
        ("ERROR something broke", ERROR),
        ("2024-05-01 10:00:00,123 ERROR api.db timeout after 31ms", ERROR),
        ("2024-05-01T10:00:00.123Z WARN slow query", WARNING),
        ("2024-05-01 10:00:00,123 WARNING [worker-3] cache miss", WARNING),
        ("WARNING:root:disk almost full", WARNING),
        ("ERROR:root:it broke", ERROR),
        ("INFO:     Started server process [1]", INFO),
        ("10:23:45.123 [main] DEBUG c.e.Foo - details", DEBUG),
        ("2024-01-15 10:23:45.123 ERROR 12345 --- [main] o.a.c.Servlet : failed", ERROR),
        ("E, [2024-05-01T10:00:00.123 #1] ERROR -- : boom", ERROR),
        ("2024-05-01 10:00:00.123 UTC [1] FATAL:  terminating connection", FATAL),
        ("SEVERE: servlet failed", ERROR),
        ("CRITICAL:app:out of memory", FATAL),
        ("FATAL could not bind :8080", FATAL),
        ("PANIC at the disco", FATAL),
        ("TRACE entering handler", DEBUG),
        ("NOTICE: config reloaded", INFO),
        # zerolog / zap console three-letter forms
        ("10:00AM ERR query failed", ERROR),
        ("10:00AM WRN slow", WARNING),
        ("10:00AM DBG tick", DEBUG),
        ("10:00AM INF ready", INFO),
        ("10:00AM FTL dead", FATAL),
        ("npm ERR! code E404", ERROR),
        # brackets, any case
        ("[error] upstream timed out", ERROR),
        ("2024/05/01 10:00:00 [error] 29#29: *1 connect() failed", ERROR),
        ("[Warning] deprecated flag", WARNING),
        ("<crit> disk gone", FATAL),
        ("[info] hello", INFO),
        # logfmt
        ("level=warn msg=slow", WARNING),
        ('time=2024-05-01T10:00:00Z level=error msg="query failed"', ERROR),
        ("time=2024-05-01T10:00:00Z level=INFO msg=ok", INFO),
        ('level="debug" msg=x', DEBUG),
        ("lvl=eror msg=x", ERROR),
        ("lvl=crit msg=x", FATAL),
        # JSON
        ('{"level":"error","msg":"query failed"}', ERROR),
        ('{"level": "warning", "msg": "x"}', WARNING),
        ('{"severity":"ERROR","message":"x"}', ERROR),
        ('{"severity":"error","message":"x"}', ERROR),
        ('{"lvl":"dbug","msg":"x"}', DEBUG),
        ('{"levelname": "CRITICAL", "message": "x"}', FATAL),
        ('{"log.level":"warn","message":"x"}', WARNING),
        ('{"level":30,"msg":"pino info"}', INFO),
        ('{"level":40,"msg":"pino warn"}', WARNING),
        ('{"level":50,"msg":"pino error"}', ERROR),
        ('{"level":60,"msg":"pino fatal"}', FATAL),
        ('{"level":20,"msg":"pino debug"}', DEBUG),
        # the level key after a long message (structlog writes it last)
        ('{"event":"' + "x" * 300 + '","level":"error"}', ERROR),
        # klog / glog headers
        ("E0501 10:00:00.123456       1 reflector.go:138] failed to list", ERROR),
        ("W0501 10:00:00.123456       1 warnings.go:70] deprecated", WARNING),
        ("I0501 10:00:00.123456       1 server.go:12] started", INFO),
        ("F0501 10:00:00.123456       1 main.go:9] cannot start", FATAL),
        # line starts that say the level by themselves
        ("Traceback (most recent call last):", ERROR),
        ("  + Exception Group Traceback (most recent call last):", ERROR),
        ("panic: runtime error: index out of range [5] with length 3", FATAL),
        ("fatal error: all goroutines are asleep - deadlock!", FATAL),
        ("Error: connect ECONNREFUSED 127.0.0.1:5432", ERROR),
        ("error: could not read config", ERROR),
        ("warning: unused variable", WARNING),
        ("Warning: something", WARNING),
    ],
)
def test_detects_the_level_the_line_states(text: str, level: Level) -> None:
    assert detect_level(text) is level


@pytest.mark.parametrize(
    "text",
    [
        "",
        "connecting to postgres at db:5432",
        "no error occurred",  # lower case in running text is not a level
        "an error: in the middle is not a line start",
        "the request failed with error code 3",
        '10.0.0.3 - - [01/May/2024:10:00:00 +0000] "GET /healthz HTTP/1.1" 200 2',
        '  File "/app/server.py", line 42, in handle',
        "XERROR glued to a word before it",
        "ERRORS is another word",
        "INFORMATION is another word",
        "the INFO_TABLE constant",
        '{"msg":"no level field here"}',
        '{"level":5,"msg":"syslog-style number: not guessed"}',
        "level=verbose msg=unknown name",
        "[main] started",
        "Warning BackOff back-off restarting failed container",  # event text: producer's job
    ],
)
def test_says_nothing_when_nothing_says(text: str) -> None:
    assert detect_level(text) is None


@pytest.mark.parametrize(
    ("text", "level"),
    [
        # the first level-looking token wins: the level field comes before the message
        ("2024-05-01 INFO retry after ERROR from upstream", INFO),
        ("2024-05-01 ERROR upstream said INFO", ERROR),
        ('level=info msg="saw ERROR in reply"', INFO),
        ("[warn] then ERROR", WARNING),
    ],
)
def test_the_first_level_token_wins(text: str, level: Level) -> None:
    assert detect_level(text) is level


def test_level_words_deep_in_the_message_are_not_levels() -> None:
    # Only the start of a line (where timestamps, pids and logger names are) is searched.
    assert detect_level("x" * 200 + " ERROR") is None
    assert detect_level("x" * 50 + " ERROR") is ERROR


@given(st.text(max_size=300))
def test_never_raises_and_returns_a_level_or_none(text: str) -> None:
    result = detect_level(text)
    assert result is None or isinstance(result, Level)


@given(
    prefix=st.text(alphabet="0123456789-:., T", max_size=30),
    word=st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "FATAL"]),
    message=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=60),
)
def test_a_level_word_after_any_timestamp_is_found(prefix: str, word: str, message: str) -> None:
    text = f"{prefix} {word} {message}"
    assert detect_level(text) is Level[word]
