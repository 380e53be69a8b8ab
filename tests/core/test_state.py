"""The session reducer keeps a bounded set of alerts, and per-service counts that agree."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.events import Alert, Level
from cockpit.core.state import MAX_ALERTS, SessionState, reduce


def alert(key: str, service: str = "api", seen: float = 1.0) -> Alert:
    return Alert(key, service, key, "", Level.ERROR, 1, seen, seen)


def test_alerts_beyond_the_bound_drop_the_least_recently_updated() -> None:
    state = SessionState()
    for i in range(MAX_ALERTS):
        reduce(state, alert(f"k{i}"))
    reduce(state, alert("k0", seen=2.0))  # updated: now the freshest
    reduce(state, alert("new"))
    assert len(state.alerts) == MAX_ALERTS
    assert "k0" in state.alerts and "new" in state.alerts
    assert "k1" not in state.alerts
    assert state.services["api"].alert_count == MAX_ALERTS


def test_an_updated_alert_replaces_the_old_one() -> None:
    state = SessionState()
    reduce(state, alert("k", seen=1.0))
    reduce(state, Alert("k", "api", "k", "", Level.FATAL, 2, 1.0, 5.0))
    assert state.alerts["k"].count == 2
    assert state.services["api"].alert_count == 1


@given(st.lists(st.tuples(st.integers(0, MAX_ALERTS + 60), st.sampled_from(["api", "web", ""]))))
def test_service_alert_counts_match_the_alerts_kept(events: list[tuple[int, str]]) -> None:
    state = SessionState()
    for number, service in events:
        # a key belongs to one service, as keys from AlertRules do
        reduce(state, alert(f"{service}|{number}", service=service))
    assert len(state.alerts) <= MAX_ALERTS
    for name, view in state.services.items():
        kept = sum(1 for kept_alert in state.alerts.values() if kept_alert.service == name)
        assert view.alert_count == kept
