"""SVG snapshots of the cockpit (pytest-textual-snapshot): the screens a person sees.

Update after an intended change with ``pytest tests/ui/test_snapshots.py --snapshot-update``
and look at the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from .fakes import FakeEngine, make_app, settle

SnapCompare = Callable[..., bool]


async def _settled(pilot: Pilot[Any]) -> None:
    await settle(pilot, ticks=6)


def test_cockpit_at_80x24(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    assert snap_compare(make_app(engine), terminal_size=(80, 24), run_before=_settled)


def test_cockpit_at_160x50(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    assert snap_compare(make_app(engine), terminal_size=(160, 50), run_before=_settled)


def test_light_theme(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    app = make_app(engine, theme="light")
    assert snap_compare(app, terminal_size=(120, 36), run_before=_settled)


def test_high_contrast_theme(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    app = make_app(engine, theme="high-contrast")
    assert snap_compare(app, terminal_size=(160, 50), run_before=_settled)


def test_help_screen(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    async def open_help(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(engine), terminal_size=(100, 40), run_before=open_help)


def test_bad_filter_query(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    async def type_bad_query(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("slash", *"level:loud")
        await _settled(pilot)
        pilot.app.main.filter_bar.input.cursor_blink = False  # type: ignore[attr-defined]

    assert snap_compare(make_app(engine), terminal_size=(80, 24), run_before=type_bad_query)


def test_too_small_terminal(snap_compare: SnapCompare, engine: FakeEngine) -> None:
    assert snap_compare(make_app(engine), terminal_size=(50, 12), run_before=_settled)
