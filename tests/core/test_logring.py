"""LogRing: sequencing, both bounds, and the read views (get, since, tail, filtered)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.logring import LogRing
from cockpit.core.query import Query, parse_query


def line(text: str = "x", service: str = "api", level: Level = Level.INFO) -> LogLine:
    return LogLine(service, service, SourceKind.LOCAL, text, 1.0, level=level)


def query(text: str) -> Query:
    parsed = parse_query(text)
    assert isinstance(parsed, Query)
    return parsed


def test_seqs_start_at_one_and_count_up() -> None:
    ring = LogRing()
    assert ring.last_seq == 0
    assert len(ring) == 0
    first = ring.append(line("a"))
    rest = ring.extend([line("b"), line("c")])
    assert [first.seq, *(stored.seq for stored in rest)] == [1, 2, 3]
    assert ring.last_seq == 3
    assert [stored.text for stored in ring.tail(10)] == ["a", "b", "c"]


def test_the_stored_line_keeps_everything_but_seq() -> None:
    original = LogLine("store-1/app", "store", SourceKind.POD, "hi", 5.0, "stderr", Level.WARNING)
    stored = LogRing().append(original)
    assert (stored.source, stored.service, stored.kind, stored.text) == (
        "store-1/app",
        "store",
        SourceKind.POD,
        "hi",
    )
    assert (stored.ts, stored.stream, stored.level, stored.seq) == (5.0, "stderr", Level.WARNING, 1)


def test_a_line_sequenced_by_another_ring_is_copied_not_restamped() -> None:
    first, second = LogRing(), LogRing()
    first.extend([line("a"), line("b")])
    shared = first.get(2)
    assert shared is not None
    copy = second.append(shared)
    assert copy.seq == 1
    assert shared.seq == 2  # the first ring's line is untouched
    [copied] = second.extend([shared])
    assert copied.seq == 2 and shared.seq == 2


def test_the_line_bound_evicts_the_oldest() -> None:
    ring = LogRing(max_lines=3)
    ring.extend(line(str(i)) for i in range(5))
    assert len(ring) == 3
    assert ring.dropped == 2
    assert ring.first_seq == 3
    assert [stored.text for stored in ring.tail(5)] == ["2", "3", "4"]


def test_the_byte_bound_evicts_the_oldest() -> None:
    ring = LogRing(max_bytes=10)
    ring.append(line("aaaa"))
    ring.append(line("bbbb"))
    assert ring.dropped == 0
    ring.append(line("cccc"))  # 12 > 10: "aaaa" goes
    assert [stored.text for stored in ring.tail(5)] == ["bbbb", "cccc"]
    assert ring.size == 8
    assert ring.dropped == 1


def test_a_line_bigger_than_the_byte_bound_is_sequenced_and_dropped() -> None:
    ring = LogRing(max_bytes=4)
    ring.append(line("ok"))
    huge = ring.append(line("x" * 10))
    assert huge.seq == 2
    assert len(ring) == 0
    assert ring.dropped == 2
    assert ring.get(2) is None
    assert ring.append(line("ok")).seq == 3


@pytest.mark.parametrize(("max_lines", "max_bytes"), [(0, 10), (10, 0), (-1, -1)])
def test_a_ring_needs_room(max_lines: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="room"):
        LogRing(max_lines=max_lines, max_bytes=max_bytes)


def test_get_finds_held_lines_only() -> None:
    ring = LogRing(max_lines=2)
    ring.extend(line(t) for t in "abc")
    assert ring.get(1) is None  # dropped
    held = ring.get(2)
    assert held is not None and held.text == "b"
    assert ring.get(3) is not None
    assert ring.get(4) is None  # not yet
    assert ring.get(0) is None
    assert ring.get(-5) is None


def test_since_and_tail() -> None:
    ring = LogRing(max_lines=5)
    ring.extend(line(str(i)) for i in range(1, 9))  # holds seqs 4..8
    assert [stored.seq for stored in ring.since(6)] == [7, 8]
    assert [stored.seq for stored in ring.since(0)] == [4, 5, 6, 7, 8]  # older ones are gone
    assert ring.since(8) == []
    assert ring.since(99) == []
    assert [stored.seq for stored in ring.tail(2)] == [7, 8]
    assert [stored.seq for stored in ring.tail(50)] == [4, 5, 6, 7, 8]
    assert ring.tail(0) == []
    assert ring.tail(-1) == []


def test_filtered_returns_the_newest_matches_in_order() -> None:
    ring = LogRing()
    ring.extend(line(f"{'error' if i % 2 else 'ok'} {i}") for i in range(10))
    errors = query("error")
    assert [stored.text for stored in ring.filtered(errors)] == [
        f"error {i}" for i in (1, 3, 5, 7, 9)
    ]
    assert [stored.text for stored in ring.filtered(errors, limit=2)] == ["error 7", "error 9"]
    assert ring.filtered(errors, limit=0) == []
    assert ring.filtered(query("nothing like this")) == []
    assert len(ring.filtered(query(""))) == 10
    assert [stored.seq for stored in ring.filtered(query(""), limit=3)] == [8, 9, 10]


def test_clear_counts_the_forgotten_lines_as_dropped() -> None:
    ring = LogRing()
    ring.extend([line("a"), line("b")])
    ring.clear()
    assert len(ring) == 0
    assert ring.dropped == 2
    assert ring.size == 0
    assert ring.append(line("c")).seq == 3


def test_extend_accepts_any_iterable_and_empty() -> None:
    ring = LogRing()
    assert ring.extend([]) == []
    assert [stored.seq for stored in ring.extend(line(t) for t in "ab")] == [1, 2]


@given(
    texts=st.lists(st.text(max_size=20), max_size=200),
    max_lines=st.integers(1, 30),
    max_bytes=st.integers(1, 200),
    batch=st.integers(1, 17),
)
def test_bounds_seqs_and_counts_hold(
    texts: list[str], max_lines: int, max_bytes: int, batch: int
) -> None:
    ring = LogRing(max_lines=max_lines, max_bytes=max_bytes)
    returned: list[LogLine] = []
    for start in range(0, len(texts), batch):
        chunk = [line(t) for t in texts[start : start + batch]]
        if len(chunk) == 1:
            returned.append(ring.append(chunk[0]))
        else:
            returned.extend(ring.extend(chunk))
        held = ring.tail(len(ring))
        assert len(ring) <= max_lines
        assert sum(len(stored.text) for stored in held) == ring.size <= max_bytes
        assert ring.dropped + len(ring) == len(returned) == ring.last_seq
    assert [stored.seq for stored in returned] == list(range(1, len(texts) + 1))
    held = ring.tail(len(ring))
    seqs = [stored.seq for stored in held]
    assert seqs == sorted(set(seqs))  # strictly increasing
    if held:
        assert seqs[-1] == ring.last_seq and seqs[0] == ring.first_seq
        # the newest lines are the ones kept
        assert [stored.text for stored in held] == texts[len(texts) - len(held) :]


@given(
    count=st.integers(0, 60),
    max_lines=st.integers(1, 25),
    after=st.integers(-3, 70),
)
def test_since_is_consistent_with_get(count: int, max_lines: int, after: int) -> None:
    ring = LogRing(max_lines=max_lines)
    ring.extend(line(str(i)) for i in range(count))
    newer = ring.since(after)
    expected = [ring.get(seq) for seq in range(max(after + 1, 1), ring.last_seq + 1)]
    assert newer == [held for held in expected if held is not None]
    assert all(stored.seq > after for stored in newer)
