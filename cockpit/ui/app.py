"""The cockpit: one keyboard-driven screen over a running hybrid session.

The app talks to the engine through ``EngineFacade`` only. One worker reads the engine's
event stream; log lines are buffered and every other event is folded into ``SessionView``;
a 20 Hz tick hands the buffered lines to the log pane in one batch and redraws only the
panes whose data changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.keys import key_to_character
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input

from cockpit.core.commands import Command, InterceptMode, Restart, ToggleForward, ToggleIntercept
from cockpit.core.events import (
    Alert,
    CommandResult,
    Event,
    Level,
    LogBatch,
    LogLine,
    Notice,
)
from cockpit.core.query import Query
from cockpit.engine.facade import EngineFacade
from cockpit.errors import CockpitError
from cockpit.ui import humanize
from cockpit.ui.bindings import KEYS, display_key, resolve_keys, textual_bindings, textual_key
from cockpit.ui.palette import Palette, palette_from
from cockpit.ui.screens import DetailScreen, HelpScreen, QuitScreen, TooSmallScreen
from cockpit.ui.session_view import ALERTS, FORWARDS, SERVICES, STATUS, SYNC, SessionView
from cockpit.ui.themes import DEFAULT_THEME, load_themes
from cockpit.ui.widgets.filter import FilterBar, FilterInput
from cockpit.ui.widgets.logs import DEFAULT_MAX_LINES, Jump, LogView
from cockpit.ui.widgets.status import SessionSummary, StatusBar
from cockpit.ui.widgets.tables import (
    AlertsTable,
    ForwardsTable,
    KeyedTable,
    ServicesTable,
    SyncTable,
    forward_detail,
)

MIN_WIDTH = 60
MIN_HEIGHT = 16
WIDE_WIDTH = 150  # from here on (and TALL_HEIGHT) every pane is framed, with a side column
TALL_HEIGHT = 36
TICK = 0.05  # seconds between redraws: log lines reach the screen at most this late
BUSY_LINES = 200  # lines waiting at a tick that make the stream "busy"
BUSY_TICK = 0.1  # seconds between log repaints while busy
CLEANUP_KEY = "cleanup"  # Notice key of the engine's teardown progress
RESTART_KEY_PREFIX = "restart:"  # Notice keys of a cluster service's restart progress

ShellCommand = Callable[[str], Sequence[str] | None]
"""Given a service name, the argv of an interactive shell for it (None: no shell for it)."""

SHIPPED_THEME_ORDER = ("dark", "light", "high-contrast")


class CockpitScreen(Screen[None]):
    """Status bar, services, summary, logs, side panes (forwards, sync, alerts), filter, footer.

    Breakpoints set ``-narrow/-medium/-wide`` and ``-short/-tall``; the stylesheet frames
    every pane and adds the side column only on a big terminal.
    """

    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (100, "-medium"),
        (WIDE_WIDTH, "-wide"),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_HEIGHT, "-tall")]

    def __init__(self, palette: Palette, max_log_lines: int) -> None:
        super().__init__()

        self.status = StatusBar(id="status")
        self.summary = SessionSummary(id="summary")
        self.services = ServicesTable(id="services", classes="pane")
        self.logs = LogView(palette, max_lines=max_log_lines, id="logs", classes="pane")
        self.forwards = ForwardsTable(id="forwards", classes="pane")
        self.sync = SyncTable(id="sync", classes="pane")
        self.alerts = AlertsTable(id="alerts", classes="pane")
        self.filter_bar = FilterBar(id="filter")
        self.footer = Footer(compact=True)

    def compose(self) -> ComposeResult:
        yield self.status
        yield self.summary
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield self.services
                yield self.logs
            with Vertical(id="side"):
                yield self.forwards
                yield self.sync
                yield self.alerts
        yield self.filter_bar
        yield self.footer

    @property
    def wide(self) -> bool:
        """Big enough for the framed layout with the side column (the breakpoints above)."""
        width, height = self.app.size
        return width >= WIDE_WIDTH and height >= TALL_HEIGHT

    def on_mount(self) -> None:
        app = self.app
        if isinstance(app, CockpitApp):
            app.screen_ready()

    def on_unmount(self) -> None:
        app = self.app
        if isinstance(app, CockpitApp):
            app.screen_gone()


class CockpitApp(App[int]):
    """The hybrid session on one screen; see ``cockpit.ui.bindings`` for every key."""

    CSS_PATH = "cockpit.tcss"
    TITLE = "cockpit"
    BINDINGS: ClassVar[list[BindingType]] = list(textual_bindings())
    ENABLE_COMMAND_PALETTE = True
    COMMAND_PALETTE_BINDING = "ctrl+p"

    def __init__(
        self,
        engine: EngineFacade,
        *,
        keys: Mapping[str, str] | None = None,
        theme: str | None = None,
        title_info: Mapping[str, str] | None = None,
        shell: ShellCommand | None = None,
        start_engine: bool = True,
        max_log_lines: int = DEFAULT_MAX_LINES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.view = SessionView()
        self.clock = clock
        self._start_engine = start_engine
        self._shell = shell
        self._title_info = dict(title_info or {})
        self._requested_theme = theme
        self._keys, self._key_problems = resolve_keys(keys)
        self._pending_lines: list[LogLine] = []
        self._max_log_lines = max_log_lines
        self._ui_dropped = 0
        self._engine_dropped = 0
        self._cleanup_steps: list[str] = []
        self._quitting = False
        self._engine_stopped = False
        self._stopping: asyncio.Future[None] | None = None
        self._engine_started = False
        self._crash: BaseException | None = None
        self._theme_names: list[str] = []
        self._palette = palette_from({})
        self._main: CockpitScreen | None = None
        self._too_small: TooSmallScreen | None = None
        self._last_sync_redraw = 0.0
        self._notice_shown: Notice | None = None  # the notice the status bar shows
        self._ticker: Timer | None = None  # the redraw tick; paused while nothing changes
        self._last_log_flush = 0.0
        self._title_cache: dict[str, str] = {}
        # Problems found before the screen exists, notified once it does.
        self._startup_notices: list[tuple[str, str]] = []
        self._panes_ready = False
        self._setup_themes()

    # -- start up ---------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        self._main = CockpitScreen(self._palette, self._max_log_lines)
        return self._main

    def _setup_themes(self) -> None:
        catalog = load_themes()
        for theme in catalog.themes.values():
            self.register_theme(theme)
        shipped = [name for name in SHIPPED_THEME_ORDER if name in catalog.themes]
        self._theme_names = shipped + [name for name in catalog.names if name not in shipped]
        problems = list(catalog.problems)
        wanted = self._requested_theme or DEFAULT_THEME
        if self.get_theme(wanted) is None:
            known = ", ".join(self._theme_names) or "none"
            problems.append(f"theme {wanted!r} not found (known: {known})")
            wanted = DEFAULT_THEME if DEFAULT_THEME in catalog.themes else "textual-dark"
        self.theme = wanted
        self._palette = palette_from(self.get_css_variables(), dark=self.current_theme.dark)
        if problems:
            # One notice however many files are broken: the session goes on in the default.
            self._startup_notices.append(
                (
                    "Theme problem: " + "; ".join(problems) + f" (using {self.theme!r})",
                    "warning",
                )
            )

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        keymap = {spec.id: self._keys[spec.id] for spec in KEYS if self._keys[spec.id] != spec.key}
        if keymap:
            self.set_keymap({key_id: textual_key(key) for key_id, key in keymap.items()})
        if self._key_problems:
            self.notify("; ".join(self._key_problems), title="Key config", severity="warning")
        for message, severity in self._startup_notices:
            self.notify(message, severity="warning" if severity == "warning" else "error")
        self._startup_notices.clear()
        self._pump_events()

    def screen_ready(self) -> None:
        """The cockpit screen has its panes: start drawing (called by CockpitScreen)."""
        main = self.main
        main.status.set_fallback(self._title_info)
        main.services.focus()
        self._panes_ready = True
        self._check_size()
        self._ticker = self.set_interval(TICK, self._tick)
        # Ages ("12s ago") and expiring notices move on with nothing arriving.
        self.set_interval(1.0, self._wake)

    def _wake(self) -> None:
        """Something may need drawing: run the tick again (at once if it was paused)."""
        if self._ticker is not None:
            self._ticker.resume()

    def screen_gone(self) -> None:
        self._panes_ready = False

    @property
    def main(self) -> CockpitScreen:
        assert self._main is not None, "the cockpit screen is made at start-up"
        return self._main

    # -- the engine bridge ------------------------------------------------------------------

    @work(group="engine-events", exit_on_error=False)
    async def _pump_events(self) -> None:
        """The one reader of the engine's events; everything it does per event is O(1)."""
        try:
            iterator = aiter(self.engine.events())
            first = asyncio.ensure_future(anext(iterator))
            # An async generator subscribes on its first step: let it take that step before
            # the engine starts, so no start-up event is missed.
            await asyncio.sleep(0)
            if self._start_engine:
                self._start()
            try:
                self._accept(await first)
            except StopAsyncIteration:
                return
            count = 0
            async for event in iterator:
                self._accept(event)
                count += 1
                if count % 64 == 0:
                    # A backlog in the engine's queue never yields on its own: let keys in.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report_failure("events", "", f"event stream failed: {_one_line(exc)}")

    def _accept(self, event: Event) -> None:
        self._wake()
        if isinstance(event, LogBatch):
            pending = self._pending_lines
            pending.extend(event.lines)
            self._engine_dropped = event.dropped_total
            overflow = len(pending) - self._max_log_lines
            if overflow > 0:
                # The screen cannot keep up; these would leave the ring before being seen.
                del pending[:overflow]
                self._ui_dropped += overflow
        elif isinstance(event, Notice) and event.key == CLEANUP_KEY:
            self._cleanup_steps.append(event.text)
            self.view.apply(event)
        elif isinstance(event, CommandResult):
            pass  # answered to the submit() that asked
        else:
            self.view.apply(event)

    @work(group="engine-start", exit_on_error=False)
    async def _start(self) -> None:
        try:
            await self.engine.start()
            self._engine_started = True
        except Exception as exc:
            self._report_failure("start", "", f"session did not start: {_one_line(exc)}")

    def _tick(self) -> None:
        """Hand buffered lines to the log pane and redraw what changed (20 times a second
        while anything arrives; paused when nothing did, woken by the next event)."""
        if not self._panes_ready or not self.main.logs.is_attached:
            return
        main = self.main
        logs = main.logs
        pending = self._pending_lines
        if pending:
            started = time.monotonic()
            # A flood is drawn 10 times a second, a trickle 20: nobody reads 20k lines/s,
            # and every repaint of a scrolling pane costs the keys a few milliseconds.
            if len(pending) < BUSY_LINES or started - self._last_log_flush >= BUSY_TICK:
                self._last_log_flush = started
                self._pending_lines = []
                logs.append(pending)
                self._update_log_titles()
        now = self.clock()
        if now - self._last_sync_redraw >= 1.0:
            self._last_sync_redraw = now
            if self.view.syncs:
                self.view.dirty.add(SYNC)  # "12s ago" moves on
            if self.view.current_notice() is not self._notice_shown:
                self.view.dirty.add(STATUS)  # an old notice leaves the status bar
        if self.view.dirty:
            self._redraw(self.view.dirty)
            self.view.dirty.clear()
        for notice in self.view.take_notices():
            if notice.key == CLEANUP_KEY:
                continue
            if notice.key.startswith(RESTART_KEY_PREFIX) and notice.level < Level.WARNING:
                # a remote restart's progress: short-lived, each superseded by the next
                self.notify(notice.text, timeout=2)
            elif notice.level >= Level.WARNING:
                self.notify(
                    notice.text, severity="error" if notice.level >= Level.ERROR else "warning"
                )
        if self._cleanup_steps:
            steps, self._cleanup_steps = self._cleanup_steps, []
            screen = self._quit_screen()
            if screen is not None:
                for step in steps:
                    screen.add_step(step)
        if not self._pending_lines and not self.view.dirty and self._ticker is not None:
            # Idle: 20 wake-ups a second would cost more than everything else at rest.
            self._ticker.pause()

    def _redraw_all(self) -> None:
        self._redraw({SERVICES, FORWARDS, SYNC, STATUS, ALERTS})
        self._update_log_titles()

    def _redraw(self, parts: Iterable[str]) -> None:
        main = self.main
        wide = main.wide
        palette = self._palette
        parts = set(parts)
        view = self.view
        if SERVICES in parts:
            services = main.services
            services.refresh_from(view, palette, wide=wide)
            self._set_title(services, f"Services ({len(view.services)})")
        if FORWARDS in parts or STATUS in parts:
            forwards = main.forwards
            forwards.refresh_from(view, palette, wide=wide)
            self._set_title(forwards, f"Port-forwards ({len(view.forwards)})")
        if SYNC in parts:
            sync = main.sync
            sync.clock = self.clock
            sync.refresh_from(view, palette, wide=wide)
            self._set_title(sync, "Sync")
        if FORWARDS in parts or SYNC in parts:
            summary = main.summary
            summary.clock = self.clock
            summary.refresh_from(view, palette, wide=wide)
        if STATUS in parts:
            main.status.refresh_from(view, palette, wide=wide)
            self._notice_shown = view.current_notice()
        if ALERTS in parts:
            alerts = main.alerts
            alerts.refresh_from(view, palette, wide=wide)
            errors = sum(1 for alert in view.alerts.values() if alert.level >= Level.ERROR)
            title = f"Alerts ({len(view.alerts)})"
            if errors:
                title += f" · {errors} error{'s' if errors > 1 else ''}"
            self._set_title(alerts, title)

    def _set_title(self, widget: Widget, title: str) -> None:
        if self._title_cache.get(widget.id or "") != title:
            self._title_cache[widget.id or ""] = title
            widget.border_title = title

    def _update_log_titles(self) -> None:
        main = self.main
        logs = main.logs
        parts = ["Logs"]
        if logs.filter_query.is_empty:
            parts.append(f"{humanize.count(logs.total)} lines")
        else:
            parts.append(f"{humanize.count(logs.shown)} of {humanize.count(logs.total)}")
        if logs.filtering:
            parts.append("filtering…")
        if logs.follow:
            parts.append("following")
        else:
            new = logs.new_while_paused
            parts.append(f"⏸ paused +{humanize.count(new)} new" if new else "⏸ paused")
        dropped = self._engine_dropped + self._ui_dropped
        if dropped:
            parts.append(f"{humanize.count(dropped)} dropped")
        self._set_title(logs, " · ".join(parts))
        logs.set_class(not logs.follow, "-paused")
        follow_key = display_key(self._keys["follow"])
        subtitle = "" if logs.follow else f"{follow_key} or end to follow"
        if logs.border_subtitle != subtitle:
            logs.border_subtitle = subtitle
        main.filter_bar.set_filtering(logs.filtering)

    @on(LogView.StateChanged)
    def _log_state_changed(self) -> None:
        self._update_log_titles()

    # -- layout -----------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        if self._panes_ready:
            self.call_after_refresh(self._check_size)

    def _check_size(self) -> None:
        width, height = self.size
        too_small = width < MIN_WIDTH or height < MIN_HEIGHT
        if too_small:
            if self._too_small is None:
                self._too_small = TooSmallScreen(MIN_WIDTH, MIN_HEIGHT)
                self.push_screen(self._too_small)
            else:
                self._too_small.show_size(width, height)
            return
        if self._too_small is not None:
            screen, self._too_small = self._too_small, None
            if self.screen is screen:
                self.pop_screen()
            else:
                self.call_later(self._remove_screen, screen)
        self.main.footer.show_command_palette = width >= 100
        logs = self.main.logs
        logs.set_columns(
            show_time=width >= 100,
            source_width=12 if width < 100 else 18 if width < 150 else 24,
        )
        self._redraw_all()

    def _remove_screen(self, screen: Screen[None]) -> None:
        if screen in self.screen_stack and self.screen is screen:
            self.pop_screen()

    # -- themes -------------------------------------------------------------------------------

    def _on_theme_changed(self, _theme: object) -> None:
        self._palette = palette_from(self.theme_variables, dark=self.current_theme.dark)
        if self._panes_ready:
            self.main.logs.set_palette(self._palette)
            self._redraw_all()

    def action_next_theme(self) -> None:
        names = self._theme_names or [self.theme]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"Theme: {self.theme}", timeout=2)

    # -- selection ----------------------------------------------------------------------------

    def selected_service(self) -> str:
        """The service the user means: the row under the cursor of the focused pane."""
        main = self.main
        focused = self.focused
        if isinstance(focused, AlertsTable):
            key = focused.selected_key()
            alert = self.view.alerts.get(key) if key else None
            if alert is not None and alert.service:
                return alert.service
        if isinstance(focused, ForwardsTable):
            key = focused.selected_key()
            if key:
                return key.split(":", 1)[0]
        if isinstance(focused, LogView):
            line = focused.cursor_line()
            if line is not None and line.service:
                return line.service
        return main.services.selected_key() or ""

    def _local_service(self) -> str:
        if self.view.info is not None and self.view.info.service:
            return self.view.info.service
        return self._title_info.get("service", "")

    # -- actions ------------------------------------------------------------------------------

    def action_intercept(self, mode: InterceptMode = "global") -> None:
        service = self.selected_service()
        row = self.view.services.get(service)
        # Only a service that runs here can take the cluster's traffic: with a remote row
        # selected, the key means the session's own service.
        if row is None or not row.is_local:
            service = self._local_service()
        self._submit(ToggleIntercept(service=service, mode=mode), f"intercept ({mode})", service)

    def action_restart(self) -> None:
        service = self.selected_service()
        self._submit(Restart(service=service), "restart", service)

    def action_forward(self) -> None:
        service = self.selected_service()
        self._submit(ToggleForward(service=service), "port-forward", service)

    def _focus(self, widget: Widget) -> None:
        # Now, not after the queued messages: keys typed right after "/" (a fast typist,
        # a paste, tmux send-keys) must land in the filter box, not in the pane before it.
        self.main.set_focus(widget)

    def action_filter(self) -> None:
        focused = self.focused
        if isinstance(focused, Input):
            # The filter key is a priority binding: in a text box it is just a character
            # (a "/" in /regex/, or in the palette's search).
            key = self._keys["filter"]
            char = key if len(key) == 1 else key_to_character(textual_key(key))
            if char:
                focused.insert_text_at_cursor(char)
            return
        if self.screen is self.main:
            self._focus(self.main.filter_bar.input)

    def action_clear(self) -> None:
        main = self.main
        bar = main.filter_bar
        if bar.text:
            bar.set_text("")
        logs = main.logs
        if not logs.follow:
            logs.resume()
        if isinstance(self.focused, FilterInput):
            self._focus(logs)

    @on(FilterInput.Leave)
    def _filter_leave(self) -> None:
        self.action_clear()
        self._focus(self.main.logs)

    def action_logs(self) -> None:
        """``svc:NAME`` for the selected service in the filter; again to show every service."""
        service = self.selected_service()
        if not service:
            self.notify("Select a service first", severity="warning", timeout=2)
            return
        bar = self.main.filter_bar
        terms = bar.text.split()
        others = [t for t in terms if not t.lower().startswith(("svc:", "service:"))]
        current = [t for t in terms if t.lower().startswith(("svc:", "service:"))]
        wanted = f"svc:{service}"
        new_terms = others if current == [wanted] else [wanted, *others]
        bar.set_text(" ".join(new_terms))
        self._focus(self.main.logs)

    @on(FilterBar.Changed)
    def _filter_changed(self, message: FilterBar.Changed) -> None:
        self.apply_query(message.query)

    def apply_query(self, query: Query) -> None:
        self.main.logs.set_query(query)
        self._update_log_titles()

    def action_follow(self) -> None:
        self.main.logs.toggle_follow()

    def action_detail(self) -> None:
        focused = self.focused
        if isinstance(focused, LogView):
            line = focused.cursor_line()
            if line is None:
                focused.action_cursor_up()
                return
            self._show_line(line)
        elif isinstance(focused, KeyedTable):
            key = focused.selected_key()
            if key is not None:
                self._detail_for(focused, key)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        if isinstance(table, KeyedTable):
            key = table.key_at(event.cursor_row)
            if key is not None:
                self._detail_for(table, key)

    def _detail_for(self, table: KeyedTable, key: str) -> None:
        if isinstance(table, AlertsTable):
            alert = self.view.alerts.get(key)
            if alert is not None:
                self.jump_to_alert(alert)
        elif isinstance(table, ServicesTable):
            self._show_service(key)
        elif isinstance(table, ForwardsTable):
            forward = self.view.forwards.get(key)
            if forward is not None:
                body = forward_detail(forward)
                self.push_screen(DetailScreen(f"Forward {forward.name}", body))
        elif isinstance(table, SyncTable):
            sync = self.view.syncs.get(key)
            if sync is not None:
                lines = [
                    f"state     {sync.state}" + (f": {sync.reason}" if sync.reason else ""),
                    f"pending   {sync.pending}",
                    f"last sync {humanize.ago(sync.last_sync, self.clock())} ago",
                    f"took      {humanize.duration(sync.duration)}",
                    f"files     {sync.files} ({humanize.size(sync.bytes)})",
                    "watching:",
                    *(f"  {path}" for path in sync.paths),
                ]
                self.push_screen(DetailScreen(f"Sync {sync.name}", "\n".join(lines)))

    def _show_service(self, name: str) -> None:
        row = self.view.services.get(name)
        if row is None:
            return
        lines = [
            f"mode      {row.mode.value}",
            f"pods      {row.ready}/{row.total} ready, {row.restarts} restarts"
            if row.in_cluster
            else "pods      (no cluster state yet)",
        ]
        if row.process is not None:
            pid = f" pid {row.pid}" if row.pid else ""
            code = f" exit {row.exit_code}" if row.exit_code is not None else ""
            lines.append(
                f"local     {row.process.value}{pid}{code}, {row.process_restarts} restarts"
            )
        lines.append(f"forward   {row.forward or '—'}")
        if row.reasons:
            lines.append(f"status    {', '.join(row.reasons)}")
        alerts = [a for a in self.view.alerts_newest_first() if a.service == name]
        if alerts:
            lines.append("alerts:")
            lines.extend(f"  ×{a.count} {a.title}" for a in alerts[:10])  # noqa: RUF001
        keys = self._keys
        lines.append("")
        lines.append(
            f"{display_key(keys['logs'])} logs  {display_key(keys['restart'])} restart  "
            f"{display_key(keys['shell'])} shell  {display_key(keys['forward'])} forward  "
            f"{display_key(keys['intercept'])} intercept"
        )
        self.push_screen(DetailScreen(f"Service {name}", "\n".join(lines)))

    def _show_line(self, line: LogLine) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.ts))
        header = Text(
            f"{stamp}  {line.source}  {line.kind.value}/{line.stream}  "
            f"{line.level.name.lower()}  #{line.seq}\n\n",
            style=self._palette.muted,
        )
        header.append(line.text)
        self.push_screen(DetailScreen(f"Log line · {line.service or line.source}", header))

    def jump_to_alert(self, alert: Alert) -> None:
        """Show the log line an alert points at (clearing a filter that hides it)."""
        main = self.main
        logs = main.logs
        if alert.log_seq <= 0:
            self.push_screen(DetailScreen(f"Alert · {alert.service or 'cockpit'}", alert.detail))
            return
        result = logs.jump_to_seq(alert.log_seq)
        if result is Jump.FILTERED_OUT:
            main.filter_bar.set_text("", apply_now=False)
            logs.set_query(Query(""))
            result = logs.jump_to_seq(alert.log_seq)
            self.notify("Filter cleared to show the alert's line", timeout=3)
        if result is Jump.SHOWN:
            self._focus(logs)
            self._update_log_titles()
        else:
            self.notify("That log line has left the buffer; showing the alert", timeout=3)
            self.push_screen(DetailScreen(f"Alert · {alert.service or 'cockpit'}", alert.detail))

    def action_shell(self) -> None:
        service = self.selected_service() or self._local_service()
        if not service:
            self.notify("Select a service first", severity="warning", timeout=2)
            return
        build = self._shell or self._default_shell
        try:
            argv = build(service)
        except Exception as exc:
            self._report_failure("shell", service, f"shell into {service}: {_one_line(exc)}")
            return
        if not argv:
            self._report_failure("shell", service, f"no shell available for {service}")
            return
        self._run_shell(service, list(argv))

    def _default_shell(self, service: str) -> list[str]:
        row = self.view.services.get(service)
        if row is not None and row.process is not None:
            return [os.environ.get("SHELL") or "/bin/sh"]
        info = self.view.info
        context = (info.context if info else "") or self._title_info.get("context", "")
        namespace = (info.namespace if info else "") or self._title_info.get("namespace", "")
        argv = ["kubectl"]
        if context:
            argv += ["--context", context]
        if namespace:
            argv += ["--namespace", namespace]
        return [
            *argv,
            "exec",
            "-it",
            f"svc/{service}",
            "--",
            "sh",
            "-c",
            "command -v bash >/dev/null && exec bash || exec sh",
        ]

    def _run_shell(self, service: str, argv: list[str]) -> None:
        try:
            with self.suspend():
                print(f"cockpit: {' '.join(argv)}  (exit the shell to return)", flush=True)
                code = subprocess.call(argv)
        except FileNotFoundError:
            self._report_failure("shell", service, f"shell: {argv[0]} not found on PATH")
            return
        except Exception as exc:
            self._report_failure("shell", service, f"shell into {service}: {_one_line(exc)}")
            return
        if code not in (0, 130):
            self.notify(f"Shell into {service} ended with exit code {code}", severity="warning")

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)  # a remapped help key closes help too
            return
        self.push_screen(HelpScreen(self._keys))

    async def action_quit(self) -> None:
        """Stop the session (undoing its cluster changes) with visible progress, then exit."""
        if self._quitting:
            return
        self._quitting = True
        if self._too_small is not None and self.screen is self._too_small:
            self.pop_screen()
            self._too_small = None
        await self.push_screen(QuitScreen())
        self._stop_engine()

    @work(group="quit", exit_on_error=False)
    async def _stop_engine(self) -> None:
        code = 0
        try:
            await self.stop_engine()
        except Exception as exc:
            code = exc.exit_code if isinstance(exc, CockpitError) else 1
            screen = self._quit_screen()
            message = f"cleanup failed: {_one_line(exc)} (run `cockpit down`)"
            if screen is not None:
                screen.add_step(message)
            self.notify(message, severity="error")
            await asyncio.sleep(2.0)  # long enough to read why
        self._tick()  # show the last progress messages
        self.exit(return_code=code)

    async def stop_engine(self) -> None:
        """Stop the engine once, however many ways out ask for it at the same time (q, a
        closed terminal, the end of run_ui); every caller waits for the same teardown."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.engine.stop())
        try:
            await asyncio.shield(self._stopping)
        finally:
            if self._stopping.done():
                self._engine_stopped = True

    @property
    def engine_stopped(self) -> bool:
        return self._engine_stopped

    def _quit_screen(self) -> QuitScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, QuitScreen):
                return screen
        return None

    # -- commands -----------------------------------------------------------------------------

    def _submit(self, command: Command, what: str, service: str) -> None:
        self._run_command(command, what, service)

    @work(group="commands", exit_on_error=False)
    async def _run_command(self, command: Command, what: str, service: str) -> None:
        try:
            result = await self.engine.submit(command)
        except Exception as exc:
            result = CommandResult(command.name, ok=False, message=_one_line(exc))
        label = f"{what} {service}".strip()
        if result.ok:
            self.notify(result.message or f"{label}: done", timeout=3)
        else:
            reason = _first_line(result.message) or "refused"
            self._report_failure(command.name, service, f"{label}: {reason}")

    def _report_failure(self, action: str, service: str, title: str) -> None:
        """A refused or failed action: one notification and an alert that says why."""
        self.notify(title, severity="error", timeout=6)
        self.view.add_failure(f"ui:{action}:{service}", service, title, self.clock())
        self._wake()

    # -- command palette ----------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        for spec in KEYS:
            if not spec.palette:
                continue
            key = display_key(self._keys[spec.id])
            yield SystemCommand(
                f"{spec.description} ({key})",
                spec.help,
                partial(self.run_action, spec.action),
            )
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):
                yield command

    # -- failures -----------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        if self._crash is None:
            self._crash = error
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        # Textual would print a long traceback with locals over the user's terminal. A user
        # gets one line; the traceback goes to a file for the bug report.
        error = self._crash
        path = write_crash_report(error)
        message = f"cockpit: the screen stopped on an internal error: {_one_line(error)}"
        if path is not None:
            message += f" (details: {path})"
        self._exit_renderables.append(Text(message))
        self._close_messages_no_wait()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, CockpitError):
        return exc.one_line()
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _say(message: str) -> None:
    """A line on stderr, if there still is a terminal to read it."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def write_crash_report(error: BaseException | None) -> Path | None:
    """Append the traceback to ``$XDG_STATE_HOME/cockpit/ui-crash.log``; None if it can't."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(base) / "cockpit" / "ui-crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            if error is not None:
                out.write("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


def run_ui(
    engine: EngineFacade,
    *,
    keys: Mapping[str, str] | None = None,
    theme: str | None = None,
    title_info: Mapping[str, str] | None = None,
    shell: ShellCommand | None = None,
    start_engine: bool = True,
) -> int:
    """Run the cockpit over ``engine`` until the user quits; returns the exit code.

    The app starts the engine (after subscribing to its events, so nothing is missed) unless
    ``start_engine`` is False, and always stops it: on ``q`` with visible progress, and here
    after any other way out (a crash, a closed terminal).

    ``keys`` remaps bindings by id (cockpit.yaml ``keys:``); ``theme`` names a theme;
    ``title_info`` may hold ``context``, ``namespace``, ``session`` and ``service`` to show
    before the engine reports them; ``shell`` builds the argv of ``s`` for a service (default:
    ``kubectl exec -it svc/NAME`` for a remote service, ``$SHELL`` for the local one).
    """
    app = CockpitApp(
        engine,
        keys=keys,
        theme=theme,
        title_info=title_info,
        shell=shell,
        start_engine=start_engine,
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        leaving: list[asyncio.Task[None]] = []

        async def stop_then_leave(sig: signal.Signals) -> None:
            with contextlib.suppress(Exception):
                await app.stop_engine()
            if sig == signal.SIGHUP:
                # No terminal to give back, and Textual's teardown can block writing to
                # the one that is gone: the session is cleaned up, so leave now.
                os._exit(128 + sig)
            # A terminal to restore: let Textual do it, but don't hang on it.
            threading.Timer(5.0, os._exit, (128 + sig,)).start()
            app.exit(return_code=128 + sig)

        def on_signal(sig: signal.Signals) -> None:
            # SSH dropped, the window closed, or `kill`: nobody may watch, but the cluster
            # must still be put back as it was.
            if not leaving:
                leaving.append(loop.create_task(stop_then_leave(sig)))

        handled = []
        for sig in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, sig)
                handled.append(sig)
        try:
            await app.run_async()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if not app.engine_stopped:
                _say("cockpit: stopping the session…")
                try:
                    await app.stop_engine()
                except Exception as exc:
                    _say(f"cockpit: cleanup failed: {_one_line(exc)} (run `cockpit down`)")
                    return exc.exit_code if isinstance(exc, CockpitError) else 1
        return app.return_code or 0

    return asyncio.run(main())
