"""Backoff policy and the session reducer: pure, no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.backoff import Backoff
from cockpit.core.events import (
    Alert,
    ConnectionChanged,
    Level,
    LogBatch,
    LogLine,
    ProcessChanged,
    ProcessStatus,
    ServiceChanged,
    ServiceMode,
    ServiceRemoved,
    SourceKind,
)
from cockpit.core.state import SessionState, reduce


def no_jitter() -> float:
    return 0.5  # 2 * 0.5 - 1 == 0: the spread is zero


def test_backoff_grows_then_caps() -> None:
    b = Backoff(initial=1, maximum=8, factor=2, jitter=0.1, rand=no_jitter)
    assert [b.next_delay(t) for t in range(6)] == [1, 2, 4, 8, 8, 8]
    assert b.attempts == 6


def test_backoff_starts_over_after_a_quiet_spell() -> None:
    b = Backoff(initial=1, maximum=30, reset_after=10, rand=no_jitter)
    assert [b.next_delay(0), b.next_delay(1), b.next_delay(2)] == [1, 2, 4]
    assert b.next_delay(100) == 1


def test_backoff_reset() -> None:
    b = Backoff(initial=0.5, rand=no_jitter)
    b.next_delay(0)
    b.next_delay(0)
    b.reset()
    assert b.attempts == 0
    assert b.next_delay(0) == 0.5


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": 5, "maximum": 1}, {"factor": 0.5}, {"jitter": 1.5}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@given(
    st.floats(0.01, 5),
    st.floats(5, 60),
    st.floats(0, 0.9),
    st.lists(st.floats(0, 1), min_size=1, max_size=40),
)
def test_backoff_stays_within_bounds(
    initial: float, maximum: float, jitter: float, rs: list[float]
) -> None:
    it = iter(rs * 2)
    b = Backoff(initial=initial, maximum=maximum, jitter=jitter, rand=lambda: next(it))
    for i in range(len(rs)):
        assert initial <= b.next_delay(float(i)) <= maximum


def _line(seq: int) -> LogLine:
    return LogLine("api", "api", SourceKind.LOCAL, f"line {seq}", 1.0, seq=seq)


def test_reducer_tracks_services_process_and_alerts() -> None:
    s = SessionState()
    reduce(s, ServiceChanged("store", ready=1, total=2, restarts=3, reasons=("CrashLoopBackOff",)))
    reduce(s, ProcessChanged("api", ProcessStatus.READY, pid=42))
    reduce(s, ServiceChanged("api", ready=1, total=1))
    alert = Alert("k", "store", "boom", "", Level.ERROR, 1, 1.0, 1.0)
    reduce(s, alert)
    reduce(s, Alert("k", "store", "boom", "", Level.ERROR, 2, 1.0, 2.0))
    assert s.services["store"].reasons == ("CrashLoopBackOff",)
    assert (s.services["store"].ready, s.services["store"].total) == (1, 2)
    assert s.services["store"].alert_count == 1  # the same alert counted again is one alert
    assert s.alerts["k"].count == 2
    assert s.services["api"].mode is ServiceMode.LOCAL  # the cluster view does not undo local
    assert s.services["api"].pid == 42
    reduce(s, ServiceChanged("api", mode=ServiceMode.INTERCEPT_GLOBAL))
    assert s.services["api"].mode is ServiceMode.INTERCEPT_GLOBAL
    reduce(s, ServiceRemoved("store"))
    assert "store" not in s.services


def test_reducer_tracks_log_position_drops_and_connections() -> None:
    s = SessionState()
    reduce(s, LogBatch((_line(1), _line(2)), dropped_total=7))
    reduce(s, ConnectionChanged("api", "connected"))
    assert (s.last_seq, s.dropped_lines, s.connections) == (2, 7, {"api": "connected"})


def test_reducer_shows_a_service_forward_address_until_it_fails() -> None:
    from cockpit.core.events import ForwardChanged

    s = SessionState()
    reduce(s, ForwardChanged("store:8080", "127.0.0.2:8080", "store-1:8080", "listening"))
    assert s.services["store"].forward == "127.0.0.2:8080"
    reduce(s, ForwardChanged("store:8080", "127.0.0.2:8080", "", "failed: no ready pod"))
    assert s.services["store"].forward == ""
