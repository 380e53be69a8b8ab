"""The cockpit driven by keys through Textual's Pilot, over the scripted engine."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from textual.widgets import Static

from cockpit.core.commands import Restart, ToggleForward, ToggleIntercept
from cockpit.core.events import (
    Alert,
    CommandResult,
    ConnectionChanged,
    Level,
    LogBatch,
    Notice,
    ServiceChanged,
    ServiceMode,
)
from cockpit.errors import ClusterError
from cockpit.ui.app import CockpitApp
from cockpit.ui.screens import DetailScreen, HelpScreen, QuitScreen, TooSmallScreen
from cockpit.ui.widgets.filter import FilterInput

from .fakes import (
    FakeEngine,
    commands_of,
    demo_session,
    lines_of,
    log_line,
    make_app,
    notices,
    settle,
    until,
)


def screen_text(app: CockpitApp) -> str:
    """What a person sees, as plain text (the exported screenshot without styles)."""
    return "\n".join(
        "".join(segment.text for segment in strip)
        for strip in app.screen._compositor.render_strips()
    )


def title_of(app: CockpitApp, pane: str) -> str:
    return str(app.main.query_one(f"#{pane}").border_title)


async def test_demo_session_fills_every_pane(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        assert engine.started == 1
        text = screen_text(app)
        for expected in (
            "kind-dev/shop",
            "session 3f2a9c1e",
            "api ● connected",
            "agent ● connected",
            "Services (3)",
            "CrashLoopBackOff",
            "127.0.0.2:8080 ↔ web:8080",
            "listening",
            "api (reload)",
            "Alerts (2)",
            "ZeroDivisionError: division by zero",
            "Readiness probe failed (503)",
            "Logs · 9 lines · following",
        ):
            assert expected in text, expected
        # the local service is listed first and marked
        assert app.main.services.selected_key() == "api"


async def test_compact_layout_at_80x24_keeps_the_essentials(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        for expected in ("kind-dev/shop", "Services (3)", "Logs ·", "Alerts (2)", "2 forwards"):
            assert expected in text, expected
        assert "Port-forwards (" not in text  # the table gives way to the summary line
        assert not isinstance(app.screen, TooSmallScreen)


async def test_status_updates_that_supersede_each_other_cost_one_redraw(
    engine: FakeEngine,
) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for state in ("connecting", "disconnected", "failed: EOF from agent", "connected"):
            engine.emit(ConnectionChanged("agent", state))
        engine.emit(ConnectionChanged("tunnel", "failed: port-forward refused"))
        await settle(pilot)
        text = screen_text(app)
        assert "agent ●" in text
        assert "tunnel ✖ failed: port-forward refused" in text


async def test_intercept_keys_submit_global_and_personal(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("i")
        await pilot.press("I")
        await settle(pilot)
        intercepts = commands_of(engine, ToggleIntercept)
        assert intercepts == [
            ToggleIntercept(service="api", mode="global"),
            ToggleIntercept(service="api", mode="personal"),
        ]


async def test_intercept_on_a_remote_row_means_the_local_service(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.services.select_key("web")
        await pilot.press("i")
        await settle(pilot)
        assert commands_of(engine, ToggleIntercept) == [ToggleIntercept(service="api")]


async def test_mode_change_shows_in_the_services_table(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        engine.emit(ServiceChanged("api", mode=ServiceMode.INTERCEPT_PERSONAL, ready=1, total=1))
        await settle(pilot)
        assert "intercepted·personal" in screen_text(app)


async def test_restart_and_forward_act_on_the_selected_service(engine: FakeEngine) -> None:
    engine.answers.pop(Restart)
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.services.select_key("store")
        await pilot.press("r", "f")
        await settle(pilot)
        assert commands_of(engine, Restart) == [Restart(service="store")]
        assert commands_of(engine, ToggleForward) == [ToggleForward(service="store")]


async def test_a_refused_action_is_a_notification_and_an_alert(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app.main.services.select_key("store")
        await pilot.press("r")
        await settle(pilot)
        reason = "restart denied: deployments.apps 'store' is forbidden for user dev"
        assert any(reason in note for note in notices(app))
        alert = app.view.alerts["ui:restart:store"]
        assert alert.title == f"restart store: {reason}"
        assert alert.level is Level.ERROR
        assert title_of(app, "alerts").startswith("Alerts (3)")
        # the same refusal again counts up instead of adding a row
        await pilot.press("r")
        await settle(pilot)
        assert app.view.alerts["ui:restart:store"].count == 2
        assert len(app.view.alerts) == 3


async def test_an_engine_exception_on_submit_does_not_crash(engine: FakeEngine) -> None:
    async def broken_submit(command: object) -> CommandResult:
        raise ClusterError("the API server closed the connection", hint="check your VPN")

    engine.submit = broken_submit  # type: ignore[method-assign, assignment]
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)
        alert = app.view.alerts["ui:intercept:api"]
        assert "the API server closed the connection (check your VPN)" in alert.title
        assert app.is_running


async def test_a_failed_start_is_reported_and_the_screen_stays(engine: FakeEngine) -> None:
    engine.start_error = ClusterError("context kind-dev: connection refused")
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        alert = app.view.alerts["ui:start:"]
        assert alert.title == "session did not start: context kind-dev: connection refused"
        assert "session did not start" in screen_text(app)


async def test_filter_bar_applies_good_queries_and_explains_bad_ones(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        logs = app.main.logs
        await pilot.press("slash")
        assert isinstance(app.focused, FilterInput)
        await pilot.press(*"level:error")
        await settle(pilot, ticks=6)
        assert logs.shown == 3
        assert all(line.level >= Level.ERROR for line in logs.visible_lines())
        assert "3 of 9" in screen_text(app)
        # a query that does not parse: the bar says why, the last good filter stays
        await pilot.press("space", "slash", *"(oops")
        await settle(pilot)
        bar = app.main.filter_bar
        assert bar.text == "level:error /(oops"
        assert bar.error is not None
        assert "unterminated /regex/" in screen_text(app)
        assert logs.shown == 3
        # esc clears the filter and leaves the bar
        await pilot.press("escape")
        await settle(pilot)
        assert bar.text == ""
        assert bar.error is None
        assert logs.shown == 9
        assert app.focused is logs


async def test_regex_filter_on_a_big_buffer_runs_in_a_worker(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.emit(LogBatch(lines_of(20_000, start=100)))
        await settle(pilot)
        logs = app.main.logs
        assert logs.total == 20_009
        query = r"/item\/1\d{3} /"
        app.main.filter_bar.set_text(query)
        await until(pilot, lambda: logs.filter_query.text == query and not logs.filtering)
        assert logs.shown == 1000  # items 1000..1999
        # lines that arrive under an active filter are filtered as they come
        engine.emit(LogBatch(lines_of(10, start=1990)))
        await settle(pilot)
        assert logs.shown == 1010


async def test_l_shows_only_the_selected_service_and_again_shows_all(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.services.select_key("store")
        await pilot.press("l")
        await settle(pilot)
        bar = app.main.filter_bar
        assert bar.text == "svc:store"
        assert app.focused is app.main.logs
        assert {line.service for line in app.main.logs.visible_lines()} == {"store"}
        # other terms are kept; the service term is replaced, then toggled off
        bar.set_text("svc:store probe")
        app.main.services.focus()
        app.main.services.select_key("store")
        await pilot.press("l")
        await settle(pilot)
        assert bar.text == "probe"


async def test_pause_counts_new_lines_and_end_follows_again(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        logs = app.main.logs
        await pilot.press("p")
        assert not logs.follow
        engine.emit(LogBatch(lines_of(1234, start=100)))
        await settle(pilot)
        assert logs.new_while_paused == 1234
        assert "⏸ paused +1,234 new" in title_of(app, "logs")
        logs.focus()
        await pilot.press("end")
        await settle(pilot)
        assert logs.follow
        assert logs.visible_lines()[-1].text == "request 1333 GET /api/item/1333 200"


async def test_moving_up_in_the_log_pauses_and_enter_shows_the_line(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.logs.focus()
        await pilot.press("up")
        assert not app.main.logs.follow
        assert app.main.logs.cursor_line() is not None
        await pilot.press("up", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        assert "Readiness probe failed" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_enter_on_an_alert_jumps_to_its_log_line(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        alerts = app.main.alerts
        alerts.focus()
        # newest first: the probe alert (last seen later) is on top
        assert alerts.selected_key() == "probe:store"
        await pilot.press("down", "enter")
        await settle(pilot)
        logs = app.main.logs
        assert app.focused is logs
        line = logs.cursor_line()
        assert line is not None and line.seq == 5
        assert line.text == "Traceback (most recent call last):"


async def test_jumping_to_a_line_the_filter_hides_clears_the_filter(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.filter_bar.set_text("svc:web")
        await settle(pilot)
        assert app.main.logs.shown == 2
        app.jump_to_alert(app.view.alerts["probe:store"])
        await settle(pilot)
        line = app.main.logs.cursor_line()
        assert line is not None and line.seq == 8
        assert app.main.filter_bar.text == ""


async def test_alert_without_a_line_opens_its_detail(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.main.alerts.focus()
        app.main.services.select_key("store")
        await pilot.press("r")  # refused: an alert with no log line
        await settle(pilot)
        table = app.main.alerts
        assert table.selected_key() is not None
        table.select_key("ui:restart:store")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)


async def test_q_stops_the_engine_with_visible_progress(engine: FakeEngine) -> None:
    engine.cleanup_delay = 0.2
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause(0.35)
        assert isinstance(app.screen, QuitScreen)
        shown = str(app.screen.query_one("#quit-steps", Static).render())
        assert "restoring store's selector" in shown
        for _ in range(100):
            if not app.is_running:
                break
            await pilot.pause(0.05)
    assert engine.stopped == 1
    assert app.return_code == 0
    assert isinstance(app, CockpitApp)


async def test_q_twice_stops_once(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.press("q")
        for _ in range(100):
            if not app.is_running:
                break
            await pilot.pause(0.05)
    assert engine.stopped == 1


async def test_a_failing_cleanup_says_so_and_exits_non_zero(engine: FakeEngine) -> None:
    async def failing_stop() -> None:
        engine.emit(Notice("cleanup", "restoring store's selector"))
        raise ClusterError("cannot restore store's selector: forbidden")

    engine.stop = failing_stop  # type: ignore[method-assign]
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause(0.3)
        assert isinstance(app.screen, QuitScreen)
        assert any("run `cockpit down`" in step for step in app.screen.steps)
        for _ in range(100):
            if not app.is_running:
                break
            await pilot.pause(0.05)
    assert app.return_code == ClusterError.exit_code


async def test_too_small_terminal_says_so_and_recovers(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(50, 12)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, TooSmallScreen)
        text = screen_text(app)
        assert "Terminal too small: 50x12" in text
        assert "Services" not in text
        await pilot.resize_terminal(100, 30)
        await settle(pilot)
        assert not isinstance(app.screen, TooSmallScreen)
        assert "Services (3)" in screen_text(app)


async def test_help_lists_every_binding_with_remapped_keys(engine: FakeEngine) -> None:
    app = make_app(engine, keys={"restart": "ctrl+r"})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text
        assert re.search(r"ctrl\+r\s+Restart the selected service\.\s+restart", text)
        assert "intercept_personal" in text
        assert "level:warn" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_remapped_key_runs_the_action_and_the_old_key_does_not(engine: FakeEngine) -> None:
    engine.answers.pop(Restart)
    app = make_app(engine, keys={"restart": "R"})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert commands_of(engine, Restart) == []
        await pilot.press("R")
        await settle(pilot)
        assert commands_of(engine, Restart) == [Restart(service="api")]


async def test_bad_key_config_is_one_notice_and_defaults_stay(engine: FakeEngine) -> None:
    app = make_app(engine, keys={"restrat": "x", "filter": "r"})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        notes = notices(app)
        assert len(notes) == 1
        assert "keys.restrat: no such binding" in notes[0]
        assert "keys.filter: 'r' is already the key of restart" in notes[0]


async def test_palette_offers_every_action(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Intercept (i)", "Personal (I)", "Restart (r)", "Quit (q)", "Theme"):
            assert expected in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"


async def test_t_cycles_the_shipped_themes(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.theme == "dark"
        await pilot.press("t")
        await settle(pilot)
        assert app.theme == "light"
        await pilot.press("t")
        assert app.theme == "high-contrast"
        await pilot.press("t")
        assert app.theme == "dark"


async def test_log_pane_is_bounded_and_says_how_much_it_dropped(engine: FakeEngine) -> None:
    app = make_app(engine, max_log_lines=1000)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for start in range(100, 5100, 500):
            engine.emit(LogBatch(lines_of(500, start=start), dropped_total=0))
            await settle(pilot, ticks=1)
        await settle(pilot)
        logs = app.main.logs
        assert 1000 <= logs.total <= 1250
        assert logs.visible_lines()[-1].text.startswith("request 5099 ")
        assert "Logs · " in title_of(app, "logs")


async def test_engine_drops_are_shown_never_silent(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.emit(LogBatch(lines_of(3, start=100), dropped_total=4321))
        await settle(pilot)
        assert "4,321 dropped" in title_of(app, "logs")


async def test_control_sequences_in_log_lines_never_reach_the_terminal(
    engine: FakeEngine,
) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        evil = log_line("\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m\tdone\x00", seq=500)
        engine.emit(LogBatch((evil,)))
        await settle(pilot)
        text = screen_text(app)
        assert "red done" in text
        assert "\x1b" not in text


async def test_cleanup_notices_from_the_engine_are_not_toasts(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.emit(Notice("cleanup", "deleting store-cockpit-origin"))
        engine.emit(Notice("sync", "sync to web failed: tar missing", level=Level.ERROR))
        await settle(pilot)
        notes = notices(app)
        assert notes == ["sync to web failed: tar missing"]


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 50), (200, 60)])
async def test_every_size_draws_without_error(engine: FakeEngine, size: tuple[int, int]) -> None:
    app = make_app(engine)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        engine.emit(LogBatch(lines_of(300, start=100)))
        await settle(pilot)
        for key in ("tab", "tab", "tab", "shift+tab", "down", "up"):
            await pilot.press(key)
        await settle(pilot)
        assert "Logs" in screen_text(app)


async def test_engine_event_stream_ending_early_is_survivable(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for queue in engine._queues:
            queue.put_nowait(object())  # not an Event: the fake's stream fails
        await settle(pilot)
        await asyncio.sleep(0)
        assert app.is_running
        assert "ui:events:" in app.view.alerts


async def test_first_alert_after_the_placeholder_gets_narrow_columns() -> None:
    engine = FakeEngine(initial=[e for e in demo_session() if not isinstance(e, Alert)])
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        assert "no alerts" in screen_text(app)
        alert = next(e for e in demo_session() if isinstance(e, Alert))
        engine.emit(alert)
        await settle(pilot)
        row = next(line for line in screen_text(app).splitlines() if "ZeroDivision" in line)
        # the glyph column is one cell, not as wide as "no alerts"
        assert "✖   ×2" in row  # noqa: RUF001


async def test_a_notice_leaves_the_status_bar_after_a_while(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        now = [1000.0]
        app.view.now = lambda: now[0]
        engine.emit(Notice("session", "connecting to the agent"))
        await settle(pilot)
        assert "connecting to the agent" in screen_text(app)
        now[0] += 60
        app.view.dirty.add("status")
        app._wake()  # what the once-a-second timer does
        await settle(pilot)
        assert "connecting to the agent" not in screen_text(app)


async def test_an_internal_error_is_one_line_and_a_crash_report(
    engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError as exc:
            app._crash = exc
        app._fatal_error()
        printed = [str(r) for r in app._exit_renderables]
        app._exit_renderables.clear()
    assert printed == [
        "cockpit: the screen stopped on an internal error: RuntimeError: boom "
        f"(details: {tmp_path / 'cockpit' / 'ui-crash.log'})"
    ]
    report = (tmp_path / "cockpit" / "ui-crash.log").read_text()
    assert "Traceback (most recent call last)" in report and "second line" in report


async def test_a_remote_restarts_progress_shows_as_short_toasts(engine: FakeEngine) -> None:
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.emit(Notice("restart:store", "restarting store: 1 of 2 new pods available"))
        engine.emit(Notice("cluster", "connecting to namespace shop"))  # not a toast
        await settle(pilot)
        assert notices(app) == ["restarting store: 1 of 2 new pods available"]
