"""Alert rules: which lines raise alerts, traceback grouping, de-duplication and bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.alerts import AlertRules, alert_key, is_exception_line, normalize_message
from cockpit.core.events import Alert, Level, LogLine, SourceKind

_seqs = itertools.count(1)

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/server.py", line 88, in handle',
    "    response = await self.route(request)",
    '  File "/app/orders.py", line 12, in create',
    "    total = sum(item.price for item in cart.items)",
    "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    "TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'",
]


def line(
    text: str,
    *,
    service: str = "api",
    source: str = "api",
    kind: SourceKind = SourceKind.LOCAL,
    level: Level = Level.INFO,
    ts: float = 100.0,
) -> LogLine:
    return LogLine(source, service, kind, text, ts, level=level, seq=next(_seqs))


def feed_all(rules: AlertRules, lines: list[LogLine]) -> list[Alert]:
    return [alert for item in lines for alert in rules.feed(item)]


# -- which lines raise alerts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("2024-05-01 10:00:00,123 ERROR db timeout after 31ms", Level.ERROR),
        ("level=error msg=boom", Level.ERROR),
        ("CRITICAL:root:out of memory", Level.FATAL),
        ("panic: runtime error: invalid memory address", Level.FATAL),
        ('{"level":"error","msg":"query failed"}', Level.ERROR),
        ('{"level":50,"msg":"pino error"}', Level.ERROR),
        ("[error] upstream timed out", Level.ERROR),
    ],
)
def test_error_lines_raise_an_alert(text: str, level: Level) -> None:
    rules = AlertRules()
    item = line(text, ts=42.0)
    [alert] = rules.feed(item)
    assert (alert.level, alert.count, alert.service) == (level, 1, "api")
    assert (alert.first_seen, alert.last_seen, alert.log_seq) == (42.0, 42.0, item.seq)
    assert alert.detail == text
    assert rules.alerts() == [alert]


@pytest.mark.parametrize(
    "text",
    ["all good", "WARNING: disk at 80%", "level=info msg=ok", "no error here", ""],
)
def test_ordinary_lines_raise_nothing(text: str) -> None:
    rules = AlertRules()
    assert rules.feed(line(text)) == []
    assert rules.alerts() == []


def test_the_producers_level_counts() -> None:
    rules = AlertRules()
    [alert] = rules.feed(line("process said something bad", level=Level.ERROR))
    assert alert.level is Level.ERROR
    # feed_leveled trusts the level as given: no detection for INFO lines
    assert rules.feed_leveled(line("ERROR but already leveled INFO")) == []


@pytest.mark.parametrize(
    "reason",
    [
        "BackOff Back-off restarting failed container app in pod store-7d9f8c6b5-x2k4p",
        "Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 503",
        "OOMKilling Memory cgroup out of memory: Killed process 4242 (store)",
        "FailedScheduling 0/1 nodes are available: 1 Insufficient memory.",
    ],
)
def test_kubernetes_warning_events_raise_alerts(reason: str) -> None:
    rules = AlertRules()
    event = line(
        f"Warning {reason}",
        service="store",
        source="events",
        kind=SourceKind.EVENT,
        level=Level.WARNING,
    )
    [alert] = rules.feed(event)
    assert alert.level is Level.WARNING
    assert alert.service == "store"
    assert alert.title == f"Warning {reason}"


def test_normal_events_and_pod_warnings_raise_nothing() -> None:
    rules = AlertRules()
    normal = line("Normal Pulled image", source="events", kind=SourceKind.EVENT)
    pod_warning = line("WARN slow", source="store-1/app", kind=SourceKind.POD, level=Level.WARNING)
    assert rules.feed(normal) == []
    assert rules.feed(pod_warning) == []


def test_titles_are_one_trimmed_line() -> None:
    rules = AlertRules()
    [stamped] = rules.feed(line("2024-05-01T10:00:00.123Z ERROR   db\tdown"))
    assert stamped.title == "ERROR db down"
    [long] = rules.feed(line("ERROR " + "x" * 500))
    assert len(long.title) == 200 and long.title.endswith("…")
    [json_line] = rules.feed(line('{"level":"error","msg":"query failed","error":"timeout"}'))
    assert json_line.title == "query failed: timeout"
    [nested] = rules.feed(line('{"level":"error","message":"save","err":{"message":"disk full"}}'))
    assert nested.title == "save: disk full"
    [bare] = rules.feed(line('{"level":"error","ts":1}'))
    assert bare.title == '{"level":"error","ts":1}'


# -- de-duplication -------------------------------------------------------------------------


def test_occurrences_that_differ_in_numbers_count_as_one() -> None:
    rules = AlertRules()
    first = line("ERROR timeout after 31ms", ts=1.0)
    second = line("ERROR timeout after 45ms", ts=2.0)
    rules.feed(first)
    [alert] = rules.feed(second)
    assert alert.count == 2
    assert (alert.first_seen, alert.last_seen) == (1.0, 2.0)
    assert alert.log_seq == second.seq  # points at the newest occurrence
    assert alert.title == "ERROR timeout after 45ms"
    assert len(rules.alerts()) == 1


def test_the_same_message_from_two_services_is_two_alerts() -> None:
    rules = AlertRules()
    rules.feed(line("ERROR timeout", service="api"))
    rules.feed(line("ERROR timeout", service="web", source="web-1/web", kind=SourceKind.POD))
    assert sorted(alert.service for alert in rules.alerts()) == ["api", "web"]


def test_events_across_pod_restarts_count_as_one() -> None:
    rules = AlertRules()
    for pod in ("store-7d9f8c6b5-x2k4p", "store-7d9f8c6b5-m4n7z", "store-5c6d7f8b9-q8wz2"):
        rules.feed(
            line(
                f"Warning BackOff Back-off restarting failed container app in pod {pod}",
                service="store",
                source="events",
                kind=SourceKind.EVENT,
                level=Level.WARNING,
            )
        )
    [alert] = rules.alerts()
    assert alert.count == 3


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("timeout after 31ms", "timeout after #ms"),
        ("at 2024-05-01T10:00:00.123Z and 2024/05/01 10:00:00,5 +0200", "at <ts> and <ts>"),
        ("started 10:00:01.5 ok", "started <ts> ok"),
        ("request 123e4567-e89b-12d3-a456-426614174000 failed", "request <uuid> failed"),
        ("pod store-7d9f8c6b5-x2k4p crashed", "pod store-<pod> crashed"),
        ("pod agent-x2k4p crashed", "pod agent-<pod> crashed"),
        ("pod store-0 crashed", "pod store-# crashed"),
        ("commit 1a2b3c4d5e6f at 0xDEADbeef", "commit <hex> at <hex>"),
        ("store-check failed", "store-check failed"),  # ordinary words stay
        ("deadbeef", "deadbeef"),  # hex-looking word without a digit stays
        ("  many   spaces\there ", "many spaces here"),
    ],
)
def test_normalize_message(text: str, normalized: str) -> None:
    assert normalize_message(text) == normalized


@given(st.text(max_size=120))
def test_normalizing_is_stable(text: str) -> None:
    once = normalize_message(text)
    assert normalize_message(once) == once
    assert normalize_message(text) == once  # the memo gives the same answer again


@given(
    st.text(alphabet="abcdef-:.xyz0123456789 ", max_size=60),
    st.lists(st.sampled_from("0123456789"), min_size=60, max_size=60),
)
def test_occurrences_that_differ_only_in_digits_share_a_key(text: str, digits: list[str]) -> None:
    pick = iter(digits)
    other = "".join(next(pick) if char.isdigit() else char for char in text)
    assert alert_key("api", text) == alert_key("api", other)


# -- tracebacks -----------------------------------------------------------------------------


def test_a_traceback_is_one_alert_titled_by_its_last_line() -> None:
    rules = AlertRules()
    lines = [line(text) for text in TRACEBACK]
    raised = feed_all(rules, lines)
    [alert] = raised
    assert alert.title == TRACEBACK[-1]
    assert alert.detail == "\n".join(TRACEBACK)
    assert alert.level is Level.ERROR
    assert alert.log_seq == lines[0].seq  # jumps to the start of the traceback
    assert rules.alerts() == [alert]


def test_tracebacks_are_collected_per_source() -> None:
    rules = AlertRules()
    api = [line(text, source="api") for text in TRACEBACK]
    worker = [line(text, source="worker") for text in TRACEBACK[:-1]]
    worker.append(line("KeyError: 'user'", source="worker"))
    chatter = [line(f"INFO tick {i}", source="web") for i in range(len(api))]
    interleaved = [x for trio in zip(api, worker, chatter, strict=True) for x in trio]
    raised = feed_all(rules, interleaved)
    assert {alert.title for alert in raised} == {TRACEBACK[-1], "KeyError: 'user'"}
    assert len(raised) == 2
    assert all("INFO tick" not in alert.detail for alert in raised)


def test_lines_inside_a_traceback_raise_nothing_of_their_own() -> None:
    rules = AlertRules()
    lines = [
        "Traceback (most recent call last):",
        '  File "/app/x.py", line 3, in f',
        "    raise RuntimeError('ERROR: bad state')",
        "RuntimeError: ERROR: bad state",
    ]
    assert len(feed_all(rules, [line(text) for text in lines])) == 1


def test_the_same_traceback_twice_counts_two() -> None:
    rules = AlertRules()
    feed_all(rules, [line(text) for text in TRACEBACK])
    again = [text.replace("line 12", "line 13") for text in TRACEBACK]
    [alert] = feed_all(rules, [line(text) for text in again])
    assert alert.count == 2


def test_a_chained_traceback_is_one_alert_updated_in_place() -> None:
    rules = AlertRules()
    first_part = [
        "Traceback (most recent call last):",
        '  File "/app/x.py", line 3, in load',
        "KeyError: 'id'",
    ]
    second_part = [
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/app/x.py", line 9, in handle',
        "ValueError: bad request",
    ]
    lines = [line(text) for text in first_part + second_part]
    raised = feed_all(rules, lines)
    assert [alert.title for alert in raised] == ["KeyError: 'id'", "ValueError: bad request"]
    assert raised[0].key == raised[1].key  # the same alert, updated
    [alert] = rules.alerts()
    assert alert.count == 1
    assert alert.title == "ValueError: bad request"
    assert alert.detail == "\n".join(first_part + second_part)
    assert alert.log_seq == lines[0].seq


def test_a_line_after_a_finished_traceback_is_an_ordinary_line() -> None:
    rules = AlertRules()
    feed_all(rules, [line(text) for text in TRACEBACK])
    assert "api" in rules.tracebacks  # a chain could still follow
    [alert] = rules.feed(line("ERROR next problem"))
    assert alert.title == "ERROR next problem"
    assert "api" not in rules.tracebacks
    assert len(rules.alerts()) == 2


def test_a_traceback_cut_short_still_raises_its_alert() -> None:
    rules = AlertRules()
    head = [line(text) for text in TRACEBACK[:3]]
    assert feed_all(rules, head) == []
    [cut, following] = rules.feed(line("ERROR a new problem"))
    assert cut.title == "Traceback (most recent call last):"
    assert cut.detail == "\n".join(TRACEBACK[:3])
    assert following.title == "ERROR a new problem"


def test_the_traceback_window_bounds_a_runaway_traceback() -> None:
    rules = AlertRules(traceback_window=5)
    raised = feed_all(rules, [line("Traceback (most recent call last):")])
    raised += feed_all(rules, [line(f"  frame {i}") for i in range(10)])
    [alert] = raised
    assert len(alert.detail.splitlines()) == 5
    assert "api" not in rules.tracebacks


def test_flush_finishes_tracebacks_in_progress() -> None:
    rules = AlertRules()
    feed_all(rules, [line(text, source="api") for text in TRACEBACK[:2]])
    feed_all(rules, [line(text, source="worker") for text in TRACEBACK[:2]])
    feed_all(rules, [line(text, source="done") for text in TRACEBACK])  # finished already
    [api] = rules.flush("api")
    assert api.title == "Traceback (most recent call last):"
    assert set(rules.tracebacks) == {"worker", "done"}
    [worker] = rules.flush()
    assert worker.detail == "\n".join(TRACEBACK[:2])
    assert rules.tracebacks == {}
    assert rules.flush() == []


def test_an_exception_group_is_collected() -> None:
    rules = AlertRules()
    group = [
        "  + Exception Group Traceback (most recent call last):",
        '  |   File "/app/x.py", line 2, in <module>',
        "  | ExceptionGroup: many (2 sub-exceptions)",
        "  +-+---------------- 1 ----------------",
        "    | ValueError: a",
        "    +------------------------------------",
    ]
    assert feed_all(rules, [line(text) for text in group]) == []
    [alert, _] = rules.feed(line("ERROR afterwards"))
    assert alert.title == "ExceptionGroup: many (2 sub-exceptions)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ValueError: bad", True),
        ("KeyboardInterrupt", True),
        ("requests.exceptions.HTTPError: 500", True),
        ("asyncio.exceptions.CancelledError", True),
        ("ValueError:", True),
        ("INFO: started", False),
        ("ERROR: failed", False),
        ("  File 'x'", False),
        ("2024-05-01 ValueError", False),
        ("some words here", False),
        ("", False),
    ],
)
def test_is_exception_line(text: str, expected: bool) -> None:
    assert is_exception_line(text) is expected


# -- engine-raised alerts, listing, bounds --------------------------------------------------


def test_raise_alert_counts_under_its_key() -> None:
    rules = AlertRules()
    first = rules.raise_alert("exit:api", "api", "api exited (1)", "last lines", Level.ERROR, 10.0)
    assert (first.count, first.log_seq) == (1, 0)
    second = rules.raise_alert(
        "exit:api", "api", "api exited (137)", "killed", Level.FATAL, 20.0, log_seq=7
    )
    assert (second.count, second.first_seen, second.last_seen) == (2, 10.0, 20.0)
    assert (second.title, second.level, second.log_seq) == ("api exited (137)", Level.FATAL, 7)
    third = rules.raise_alert("exit:api", "api", "api exited (1)", "x", Level.ERROR, 30.0)
    assert third.level is Level.FATAL  # the worst level seen stays
    assert third.log_seq == 7  # no new line to point at: keep the last one
    assert rules.get("exit:api") == third


def test_alerts_are_listed_most_recently_seen_first() -> None:
    rules = AlertRules()
    rules.raise_alert("a", "api", "a", "", Level.ERROR, 1.0)
    rules.raise_alert("b", "api", "b", "", Level.ERROR, 3.0)
    rules.raise_alert("c", "api", "c", "", Level.ERROR, 2.0)
    assert [alert.key for alert in rules.alerts()] == ["b", "c", "a"]
    rules.raise_alert("a", "api", "a", "", Level.ERROR, 4.0)
    assert [alert.key for alert in rules.alerts()] == ["a", "b", "c"]


def test_clear() -> None:
    rules = AlertRules()
    for key in "abc":
        rules.raise_alert(key, "api", key, "", Level.ERROR, 1.0)
    rules.clear("b")
    rules.clear("missing")
    assert sorted(alert.key for alert in rules.alerts()) == ["a", "c"]
    rules.clear()
    assert rules.alerts() == []
    assert len(rules) == 0


def test_the_number_of_alerts_is_bounded_least_recently_seen_first_out() -> None:
    rules = AlertRules(max_alerts=3)
    for key in "abc":
        rules.raise_alert(key, "api", key, "", Level.ERROR, 1.0)
    rules.raise_alert("a", "api", "a", "", Level.ERROR, 2.0)  # "b" is now the stalest
    rules.raise_alert("d", "api", "d", "", Level.ERROR, 3.0)
    assert sorted(alert.key for alert in rules.alerts()) == ["a", "c", "d"]
    for i in range(50):
        rules.feed(line(f"ERROR distinct problem {'x' * i}"))
    assert len(rules) == 3


@pytest.mark.parametrize(("window", "limit"), [(1, 500), (200, 0)])
def test_rules_need_sane_bounds(window: int, limit: int) -> None:
    with pytest.raises(ValueError, match="traceback_window"):
        AlertRules(window, max_alerts=limit)
