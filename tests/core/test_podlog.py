"""Pod log splitting, resume without gap or duplicate, stable pod colours."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.events import Level, SourceKind
from cockpit.core.podlog import (
    LogCursor,
    LogSplitter,
    TimestampParser,
    pod_colour,
    pod_of_source,
    source_colour,
)

T0_EPOCH = 1714557600.0  # 2024-05-01T10:00:00Z


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-05-01T10:00:00Z", T0_EPOCH),
        ("2024-05-01T10:00:00.25Z", T0_EPOCH + 0.25),
        ("2024-05-01T10:00:00.123456789Z", T0_EPOCH + 0.123456789),
        ("2024-05-01T12:00:00.5+02:00", T0_EPOCH + 0.5),
        ("2024-05-01T10:00:00-00:00", T0_EPOCH),
        ("not a timestamp at all", 0.0),
    ],
)
def test_timestamp_parser(stamp: str, expected: float) -> None:
    parse = TimestampParser()
    assert parse(stamp) == pytest.approx(expected)
    assert parse(stamp) == pytest.approx(expected)  # the cached second gives the same


def test_timestamp_parser_matches_datetime_across_seconds() -> None:
    parse = TimestampParser()
    base = datetime.datetime(2024, 12, 31, 23, 59, 58, tzinfo=datetime.UTC)
    for step in range(30):
        moment = base + datetime.timedelta(milliseconds=137 * step)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        assert parse(stamp) == pytest.approx(moment.timestamp())


def stream(*lines: tuple[str, str]) -> bytes:
    return b"".join(f"{stamp} {text}\n".encode() for stamp, text in lines)


def texts(lines: list) -> list[str]:  # type: ignore[type-arg]
    return [line.text for line in lines]


def test_splitter_makes_pod_lines() -> None:
    splitter = LogSplitter("store-1/app", "store")
    lines = splitter.feed(
        stream(("2024-05-01T10:00:00.5Z", "hello world"), ("2024-05-01T10:00:01Z", ""))
    )
    assert texts(lines) == ["hello world", ""]
    first = lines[0]
    assert (first.source, first.service, first.kind) == ("store-1/app", "store", SourceKind.POD)
    assert (first.level, first.stream, first.seq) == (Level.INFO, "stdout", 0)
    assert first.ts == pytest.approx(T0_EPOCH + 0.5)
    assert first == type(first)("store-1/app", "store", SourceKind.POD, "hello world", first.ts)


def test_splitter_keeps_a_partial_line_for_the_next_chunk() -> None:
    splitter = LogSplitter("p/c", "s")
    data = stream(("2024-05-01T10:00:00Z", "first"), ("2024-05-01T10:00:00.1Z", "grüße, zweite"))
    cut = data.index("ü".encode()) + 1  # in the middle of a UTF-8 sequence
    assert texts(splitter.feed(data[:cut])) == ["first"]
    assert texts(splitter.feed(data[cut:])) == ["grüße, zweite"]
    assert splitter.finish() == []


def test_splitter_finish_returns_a_last_line_without_newline() -> None:
    splitter = LogSplitter("p/c", "s")
    assert splitter.feed(b"2024-05-01T10:00:00Z no newline") == []
    assert texts(splitter.finish()) == ["no newline"]


def test_splitter_strips_carriage_returns_and_replaces_bad_utf8() -> None:
    splitter = LogSplitter("p/c", "s")
    lines = splitter.feed(b"2024-05-01T10:00:00Z dos\r\n2024-05-01T10:00:01Z bad \xff byte\n")
    assert texts(lines) == ["dos", "bad \ufffd byte"]


def test_resume_drops_the_repeated_second_and_keeps_the_rest() -> None:
    cursor = LogCursor()
    first = LogSplitter("p/c", "s", cursor)
    seen = first.feed(
        stream(
            ("2024-05-01T10:00:00.9Z", "a"),
            ("2024-05-01T10:00:01.1Z", "b"),
            ("2024-05-01T10:00:01.2Z", "c"),
        )
    )
    assert texts(seen) == ["a", "b", "c"]
    assert cursor.resume() == "2024-05-01T10:00:01Z"
    # The connection broke; the resumed stream starts at the second of the last line.
    second = LogSplitter("p/c", "s", cursor)
    resumed = second.feed(
        stream(
            ("2024-05-01T10:00:01.1Z", "b"),
            ("2024-05-01T10:00:01.2Z", "c"),
            ("2024-05-01T10:00:01.3Z", "d"),
            ("2024-05-01T10:00:02Z", "e"),
        )
    )
    assert texts(resumed) == ["d", "e"]


def test_identical_text_at_different_times_is_not_a_duplicate() -> None:
    cursor = LogCursor()
    lines = LogSplitter("p/c", "s", cursor).feed(
        stream(("2024-05-01T10:00:00.1Z", "tick"), ("2024-05-01T10:00:00.2Z", "tick"))
    )
    assert texts(lines) == ["tick", "tick"]


def test_a_line_broken_mid_way_comes_whole_on_resume() -> None:
    cursor = LogCursor()
    splitter = LogSplitter("p/c", "s", cursor)
    data = stream(("2024-05-01T10:00:00.1Z", "one"), ("2024-05-01T10:00:00.2Z", "two"))
    assert texts(splitter.feed(data[:-3])) == ["one"]
    splitter.reset()  # the stream broke
    assert texts(splitter.feed(data)) == ["two"]


def test_cursor_before_any_line() -> None:
    cursor = LogCursor()
    assert not cursor.started and cursor.since_time() == ""


@given(
    # Distinct times: the kubelet stamps lines with nanoseconds.
    st.sets(st.integers(min_value=0, max_value=2_000), min_size=1, max_size=60).map(sorted),
    st.data(),
)
def test_any_break_and_resume_yields_each_line_once(
    offsets: list[int], data: st.DataObject
) -> None:
    """However often a stream breaks (mid-line included), and wherever a tail start began it,
    the lines from there on arrive once, in order."""
    lines = []
    for i, millis in enumerate(offsets):
        seconds, ms = divmod(millis, 1000)
        frac = f"{ms:03d}".rstrip("0")  # the kubelet trims trailing zeros
        stamp = f"2024-05-01T10:00:{seconds:02d}" + (f".{frac}" if frac else "") + "Z"
        lines.append((stamp, f"line {i % 7}"))
    tail_start = data.draw(st.integers(0, len(lines) - 1))  # where a tailLines start begins
    cursor = LogCursor()
    got: list[str] = []
    splitter = LogSplitter("p/c", "s", cursor)
    for breaks in range(6):
        if cursor.started:
            # The server sends from the cursor's second on (what sinceTime gives)...
            since = cursor.resume()[:-1]
            start = next((i for i, (st_, _) in enumerate(lines) if st_[:19] >= since), len(lines))
        else:
            start = tail_start
        sent = stream(*lines[start:])
        # ...and the connection breaks somewhere (up to five times), or the stream completes.
        cut = len(sent) if breaks == 5 else data.draw(st.integers(0, len(sent)))
        got.extend(f"{line.ts:.3f} {line.text}" for line in splitter.feed(sent[:cut]))
        if cut == len(sent):
            got.extend(f"{line.ts:.3f} {line.text}" for line in splitter.finish())
            break
        splitter.reset()
    parse = TimestampParser()
    assert got == [f"{parse(stamp):.3f} {text}" for stamp, text in lines[tail_start:]]


def test_resume_after_a_tail_start_does_not_bring_back_the_skipped_lines() -> None:
    cursor = LogCursor()
    # A tail start showed only the last two lines of the second 10:00:00.
    LogSplitter("p/c", "s", cursor).feed(
        stream(("2024-05-01T10:00:00.8Z", "c"), ("2024-05-01T10:00:00.9Z", "d"))
    )
    assert cursor.resume() == "2024-05-01T10:00:00Z" and cursor.resuming
    resumed = LogSplitter("p/c", "s", cursor).feed(
        stream(
            ("2024-05-01T10:00:00.1Z", "a"),
            ("2024-05-01T10:00:00.5Z", "b"),
            ("2024-05-01T10:00:00.8Z", "c"),
            ("2024-05-01T10:00:00.9Z", "d"),
            ("2024-05-01T10:00:00.95Z", "e"),
            ("2024-05-01T10:00:01Z", "f"),
        )
    )
    assert texts(resumed) == ["e", "f"]
    assert not cursor.resuming


def test_a_line_written_out_of_order_is_kept_while_streaming() -> None:
    cursor = LogCursor()
    lines = LogSplitter("p/c", "s", cursor).feed(
        stream(
            ("2024-05-01T10:00:01.2Z", "stdout"),
            ("2024-05-01T10:00:01.1Z", "stderr, a little earlier"),
            ("2024-05-01T10:00:00.9Z", "and one from the second before"),
        )
    )
    assert len(lines) == 3


@pytest.mark.parametrize("size", [1, 6, 8, 256])
def test_pod_colour_is_stable_and_in_range(size: int) -> None:
    names = [f"store-7d9f8c6b5-{i:05d}" for i in range(200)]
    colours = [pod_colour(n, size) for n in names]
    assert all(0 <= c < size for c in colours)
    assert colours == [pod_colour(n, size) for n in names]
    if 1 < size <= 8:
        assert len(set(colours)) == size  # 200 pods spread over every colour


def test_pod_colour_is_the_same_in_every_process() -> None:
    # crc32, not hash(): a fixed value, whatever PYTHONHASHSEED is.
    assert pod_colour("store-7d9f8c6b5-x2k4p", 8) == pod_colour("store-7d9f8c6b5-x2k4p", 8)
    assert pod_colour("web", 1000) == 689


def test_source_colour_uses_the_pod_part() -> None:
    assert pod_of_source("store-1/app") == "store-1"
    assert pod_of_source("events") == "events"
    assert source_colour("store-1/app", 8) == source_colour("store-1/sidecar", 8)


def test_pod_colour_needs_a_palette() -> None:
    with pytest.raises(ValueError):
        pod_colour("x", 0)


def test_lines_without_a_timestamp_are_the_kubelets_not_the_containers() -> None:
    splitter = LogSplitter("p/c", "s")
    data = b"2024-05-01T10:00:00Z real\nunable to retrieve container logs for containerd://ab\n"
    assert texts(splitter.feed(data)) == ["real"]
    assert splitter.foreign == ["unable to retrieve container logs for containerd://ab"]
