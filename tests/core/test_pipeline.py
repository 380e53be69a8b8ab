"""LogPipeline: seqs from the ring, levels settled, alert rules applied, batch by batch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.alerts import AlertRules
from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.logring import LogRing
from cockpit.core.pipeline import LogPipeline


def line(
    text: str,
    *,
    source: str = "api",
    kind: SourceKind = SourceKind.LOCAL,
    level: Level = Level.INFO,
) -> LogLine:
    return LogLine(source, source, kind, text, 1.0, level=level)


def pipeline(**ring: int) -> LogPipeline:
    return LogPipeline(LogRing(**ring), AlertRules())


def test_ingest_sequences_stores_and_returns_the_lines() -> None:
    logs = pipeline()
    stored, alerts = logs.ingest([line("a"), line("b")])
    assert [(x.seq, x.text) for x in stored] == [(1, "a"), (2, "b")]
    assert alerts == []
    stored, _ = logs.ingest(iter([line("c")]))
    assert stored[0].seq == 3
    assert logs.ring.tail(3) == logs.ring.since(0)
    assert [x.text for x in logs.ring.tail(3)] == ["a", "b", "c"]


def test_the_text_sets_the_level_when_the_producer_did_not() -> None:
    stored, _ = pipeline().ingest(
        [
            line("2024-05-01 ERROR boom"),
            line("DEBUG details"),
            line("INFO fine"),
            line("no level said"),
        ]
    )
    assert [x.level for x in stored] == [Level.ERROR, Level.DEBUG, Level.INFO, Level.INFO]


def test_a_level_set_by_the_producer_stays() -> None:
    stored, _ = pipeline().ingest(
        [
            line(
                "Warning BackOff INFO", source="events", kind=SourceKind.EVENT, level=Level.WARNING
            ),
            line("cockpit: DEBUG mode on", source="cockpit", level=Level.ERROR),
        ]
    )
    assert [x.level for x in stored] == [Level.WARNING, Level.ERROR]


def test_alerts_point_at_their_stored_lines() -> None:
    stored, alerts = pipeline().ingest([line("ok"), line("ERROR timeout after 3ms")])
    [alert] = alerts
    assert alert.log_seq == stored[1].seq == 2


def test_every_line_of_a_traceback_becomes_error() -> None:
    traceback = [
        "Traceback (most recent call last):",
        '  File "/app/x.py", line 3, in f',
        "    return 1 / 0",
        "ZeroDivisionError: division by zero",
    ]
    lines = [line(traceback[0]), line("INFO elsewhere", source="web")]
    lines += [line(text) for text in traceback[1:]]
    lines.append(line("INFO back to normal"))
    stored, alerts = pipeline().ingest(lines)
    levels = {x.text: x.level for x in stored}
    assert all(levels[text] is Level.ERROR for text in traceback)
    assert levels["INFO elsewhere"] is Level.INFO
    assert levels["INFO back to normal"] is Level.INFO
    [alert] = alerts
    assert alert.title == "ZeroDivisionError: division by zero"
    assert alert.log_seq == stored[0].seq


def test_a_traceback_may_span_batches_and_flush_ends_it() -> None:
    logs = pipeline()
    _, first = logs.ingest([line("Traceback (most recent call last):")])
    _, second = logs.ingest([line('  File "/app/x.py", line 3, in f')])
    assert first == second == []
    [alert] = logs.flush("api")
    assert alert.detail.endswith("line 3, in f")
    assert logs.flush() == []


def test_the_ring_bounds_apply() -> None:
    logs = pipeline(max_lines=2)
    stored, _ = logs.ingest([line(str(i)) for i in range(5)])
    assert len(stored) == 5
    assert logs.ring.dropped == 3
    assert [x.text for x in logs.ring.tail(5)] == ["3", "4"]


_TEXTS = st.sampled_from(
    [
        "INFO ok",
        "DEBUG x",
        "ERROR timeout after 31ms",
        "WARNING slow",
        "",
        "Traceback (most recent call last):",
        '  File "/app/x.py", line 3, in f',
        "    code()",
        "ValueError: bad",
        "During handling of the above exception, another exception occurred:",
        "panic: boom",
        "plain text",
    ]
)
_LINES = st.lists(st.tuples(_TEXTS, st.sampled_from(["api", "web", "events"])), max_size=60).map(
    lambda pairs: [
        line(
            text,
            source=source,
            kind=SourceKind.EVENT if source == "events" else SourceKind.POD,
            level=Level.WARNING if source == "events" else Level.INFO,
        )
        for text, source in pairs
    ]
)


@given(_LINES, st.integers(1, 7))
def test_skipping_quiet_lines_changes_no_alert(lines: list[LogLine], batch: int) -> None:
    # The pipeline only calls the rules for lines that can matter; feeding every line to
    # the rules one by one must give the same alerts.
    texts = [(x.source, x.kind, x.text, x.level) for x in lines]
    logs = pipeline()
    raised = []
    for start in range(0, len(lines), batch):
        raised += logs.ingest(lines[start : start + batch])[1]
    raised += logs.flush()

    reference = AlertRules()
    expected = []
    for seq, (source, kind, text, level) in enumerate(texts, 1):
        expected += reference.feed(LogLine(source, source, kind, text, 1.0, level=level, seq=seq))
    expected += reference.flush()
    assert raised == expected
    assert logs.rules.alerts() == reference.alerts()
