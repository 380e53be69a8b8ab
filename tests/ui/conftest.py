"""UI test fixtures: a fixed time zone (stable screens) and the scripted engine."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .fakes import FakeEngine, demo_engine


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Timestamps on screen are local time: pin the zone so screens compare equal."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def engine() -> FakeEngine:
    return demo_engine()
