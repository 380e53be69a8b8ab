"""The tabular panes: services, port-forwards, sync and alerts.

Each is a DataTable keyed by a stable id (service name, forward name, alert key) that is
redrawn from ``SessionView`` on the app's tick: unchanged rows are left alone, changed
cells are updated in place, and the cursor stays on the same item when rows move.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from cockpit.core.events import Alert, ForwardChanged, Level, ProcessStatus, ServiceMode
from cockpit.ui import humanize
from cockpit.ui.palette import Palette
from cockpit.ui.session_view import ServiceRow, SessionView

PLACEHOLDER_KEY = "-placeholder-"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int | None = None


Row = tuple[str, tuple[Text, ...]]


class KeyedTable(DataTable[Text]):
    """A DataTable that is given its whole content each time and applies only the changes."""

    DEFAULT_CSS = """
    KeyedTable {
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(
            id=id,
            classes=classes,
            cursor_type="row",
            zebra_stripes=False,
            show_row_labels=False,
        )
        self._columns: tuple[Column, ...] = ()
        self._rows: list[Row] = []
        self._placeholder = False

    def selected_key(self) -> str | None:
        """The key of the row under the cursor (None when empty or on the placeholder)."""
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        key = self._rows[self.cursor_row][0]
        return None if key == PLACEHOLDER_KEY else key

    def select_key(self, key: str) -> bool:
        for index, (row_key, _cells) in enumerate(self._rows):
            if row_key == key:
                self.move_cursor(row=index, animate=False)
                return True
        return False

    def show(self, columns: Sequence[Column], rows: Sequence[Row]) -> None:
        columns = tuple(columns)
        rows = list(rows)
        placeholder = bool(rows) and rows[0][0] == PLACEHOLDER_KEY
        # Column widths only grow: leaving the placeholder ("no alerts" in the first
        # column) starts the columns afresh so they fit the real rows.
        if columns != self._columns or placeholder != self._placeholder:
            self._placeholder = placeholder
            self.show_header = not placeholder  # "no alerts" needs no column names
            selected = self.selected_key()
            self.clear(columns=True)
            for column in columns:
                self.add_column(Text(column.label), key=column.key, width=column.width)
            self._columns = columns
            self._rows = []
            self._add_all(rows, selected)
            return
        if [key for key, _ in rows] == [key for key, _ in self._rows]:
            for (key, cells), (_, old_cells) in zip(rows, self._rows, strict=True):
                for column, cell, old in zip(columns, cells, old_cells, strict=True):
                    if cell != old:
                        self.update_cell(key, column.key, cell, update_width=True)
            self._rows = rows
            return
        selected = self.selected_key()
        self.clear()
        self._add_all(rows, selected)

    def _add_all(self, rows: list[Row], selected: str | None) -> None:
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._rows = rows
        if selected is None or not self.select_key(selected):
            self.move_cursor(row=min(self.cursor_row, max(0, len(rows) - 1)), animate=False)

    def key_at(self, row: int) -> str | None:
        try:
            key = self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        except Exception:
            return None
        return None if key == PLACEHOLDER_KEY else key


def _placeholder(columns: Sequence[Column], message: str, palette: Palette) -> Row:
    cells = [Text("") for _ in columns]
    cells[0] = Text(message, style=palette.muted)
    return PLACEHOLDER_KEY, tuple(cells)


# -- services --------------------------------------------------------------------------------

_MODE_LABELS = {
    ServiceMode.REMOTE: "remote",
    ServiceMode.LOCAL: "local",
    ServiceMode.INTERCEPT_GLOBAL: "intercepted·global",
    ServiceMode.INTERCEPT_PERSONAL: "intercepted·personal",
}


def mode_label(mode: ServiceMode) -> str:
    return _MODE_LABELS[mode]


class ServicesTable(KeyedTable):
    """Services of the app: where each runs, readiness, restarts, forward and open alerts."""

    def column_spec(self, wide: bool) -> list[Column]:
        columns = [
            Column("name", "SERVICE"),
            Column("mode", "MODE"),
            Column("ready", "READY"),
            Column("restarts", "RESTARTS" if wide else "RST"),
            Column("forward", "FORWARD"),
            Column("alerts", "ALERTS" if wide else "ALR"),
        ]
        if wide:
            columns.append(Column("reasons", "STATUS"))
        return columns

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        columns = self.column_spec(wide)
        local = view.info.service if view.info else ""
        rows = [self._row(row, local, view, palette, wide) for row in view.service_rows()]
        if not rows:
            rows = [_placeholder(columns, "waiting for the cluster…", palette)]
        self.show(columns, rows)

    def _row(
        self, row: ServiceRow, local: str, view: SessionView, palette: Palette, wide: bool
    ) -> Row:
        name = Text(row.name, style=palette.bold)
        if row.name == local:
            name.append(" ◂", style=palette.accent)
        mode_style = {
            ServiceMode.REMOTE: palette.muted,
            ServiceMode.LOCAL: palette.accent,
            ServiceMode.INTERCEPT_GLOBAL: palette.primary + palette.bold,
            ServiceMode.INTERCEPT_PERSONAL: palette.primary,
        }[row.mode]
        mode = Text(mode_label(row.mode), style=mode_style)
        ready = _ready_cell(row, palette)
        restarts_value = row.process_restarts if row.process is not None else row.restarts
        restarts = Text(
            str(restarts_value), style=palette.warn if restarts_value else palette.muted
        )
        forward = Text(row.forward or "—", style=palette.ok if row.forward else palette.muted)
        alerts_value = view.alert_count(row.name)
        alerts = Text(str(alerts_value), style=palette.bad if alerts_value else palette.muted)
        cells = [name, mode, ready, restarts, forward, alerts]
        if wide:
            reasons = ", ".join(row.reasons)
            if row.process is ProcessStatus.EXITED and row.exit_code is not None:
                reasons = f"exit {row.exit_code}" + (f", {reasons}" if reasons else "")
            cells.append(Text(reasons, style=palette.bad if reasons else palette.muted))
        return row.name, tuple(cells)


def _ready_cell(row: ServiceRow, palette: Palette) -> Text:
    if row.process is not None:
        status = row.process
        style = {
            ProcessStatus.READY: palette.ok,
            ProcessStatus.RUNNING: palette.ok,
            ProcessStatus.STARTING: palette.warn,
            ProcessStatus.STOPPING: palette.warn,
            ProcessStatus.BACKOFF: palette.bad,
            ProcessStatus.EXITED: palette.bad,
            ProcessStatus.STOPPED: palette.muted,
        }[status]
        label = status.value
        if status is ProcessStatus.EXITED and row.exit_code is not None:
            label = f"exit {row.exit_code}"
        return Text(label, style=style)
    if not row.in_cluster:
        return Text("…", style=palette.muted)
    if row.total == 0:
        return Text("0/0", style=palette.muted)
    style = palette.ok if row.ready == row.total else palette.warn if row.ready else palette.bad
    return Text(f"{row.ready}/{row.total}", style=style)


# -- port-forwards ---------------------------------------------------------------------------


def forward_state_style(state: str, palette: Palette) -> Text:
    if state == "listening":
        return Text(state, style=palette.ok)
    if state.startswith("failed"):
        return Text(state, style=palette.bad)
    return Text(state, style=palette.warn)


def forward_route_style(route: str, palette: Palette) -> Text:
    """The tunnel stands out: new connections reach the Service through the agent."""
    return Text(route, style=palette.ok if route == "tunnel" else palette.muted)


def forward_detail(forward: ForwardChanged) -> str:
    """The detail screen of a forward: its addresses, route, and the counters of each route."""
    tunnel = (forward.tunnel_connections, forward.tunnel_bytes_in, forward.tunnel_bytes_out)
    port_forward = (
        forward.connections - tunnel[0],
        forward.bytes_in - tunnel[1],
        forward.bytes_out - tunnel[2],
    )
    lines = [
        f"local       {forward.local}",
        f"remote      {forward.remote}",
        f"route       {forward.route} (new connections)",
        f"state       {forward.state}",
        "",
        "              open   bytes in   bytes out",
    ]
    for name, (conns, bytes_in, bytes_out) in (("tunnel", tunnel), ("port-fwd", port_forward)):
        lines.append(f"{name:<12}{conns:>6} {bytes_in:>10,} {bytes_out:>11,}")
    lines.append(
        f"{'total':<12}{forward.connections:>6} {forward.bytes_in:>10,} {forward.bytes_out:>11,}"
    )
    return "\n".join(lines)


class ForwardsTable(KeyedTable):
    """Forwards: local address ↔ remote, the route of new connections (tunnel or
    port-forward), state, open connections, bytes each way (both routes together)."""

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        columns = [
            Column("local", "LOCAL ↔ REMOTE"),
            Column("route", "ROUTE"),
            Column("state", "STATE"),
            Column("conns", "CONN"),
            Column("bytes", "IN/OUT"),
        ]
        rows = [self._row(forward, palette) for forward in view.forwards.values()]
        if not rows:
            rows = [_placeholder(columns, "no port-forwards", palette)]
        self.show(columns, rows)

    def _row(self, forward: ForwardChanged, palette: Palette) -> Row:
        link = Text(forward.local, style=palette.bold)
        link.append(" ↔ ", style=palette.muted)
        link.append(forward.name or forward.remote)
        return forward.name, (
            link,
            forward_route_style(forward.route, palette),
            forward_state_style(forward.state, palette),
            Text(str(forward.connections), style=palette.muted if not forward.connections else ""),
            Text(
                f"{humanize.size(forward.bytes_in)}/{humanize.size(forward.bytes_out)}",
                style=palette.muted,
            ),
        )


# -- sync ------------------------------------------------------------------------------------


class SyncTable(KeyedTable):
    """Hot reload and file sync: state, pending changes, last sync and how long it took."""

    clock = staticmethod(time.time)

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        columns = [
            Column("name", "SYNC"),
            Column("state", "STATE"),
            Column("pending", "PEND"),
            Column("last", "LAST"),
        ]
        now = self.clock()
        rows: list[Row] = []
        for sync in view.syncs.values():
            state = sync.state
            if state == "failed":
                state_cell = Text(f"failed: {sync.reason}" if sync.reason else state, palette.bad)
            elif state in ("syncing", "pending"):
                state_cell = Text(state, style=palette.warn)
            else:
                state_cell = Text(state, style=palette.ok)
            last = humanize.ago(sync.last_sync, now)
            if sync.duration is not None:
                last = f"{last} ({humanize.duration(sync.duration)})"
            rows.append(
                (
                    sync.name,
                    (
                        Text(sync.name),
                        state_cell,
                        Text(
                            str(sync.pending), style=palette.warn if sync.pending else palette.muted
                        ),
                        Text(last, style=palette.muted),
                    ),
                )
            )
        if not rows:
            rows = [_placeholder(columns, "no hot reload or sync", palette)]
        self.show(columns, rows)


# -- alerts ----------------------------------------------------------------------------------


class AlertsTable(KeyedTable):
    """Problems, newest first, each counted (the same problem again raises its count)."""

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        columns = [
            Column("level", " "),
            Column("count", "  #"),
            Column("time", "TIME"),
            Column("service", "SERVICE"),
            Column("title", "ALERT"),
        ]
        rows = [self._row(alert, palette) for alert in view.alerts_newest_first()]
        if not rows:
            rows = [_placeholder(columns, "no alerts", palette)]
        self.show(columns, rows)

    def _row(self, alert: Alert, palette: Palette) -> Row:
        bad = alert.level >= Level.ERROR
        glyph = Text("✖" if bad else "▲", style=palette.bad if bad else palette.warn)
        count = Text(f"×{alert.count}".rjust(3), palette.bold if alert.count > 1 else "")  # noqa: RUF001
        stamp = Text(time.strftime("%H:%M:%S", time.localtime(alert.last_seen)), palette.muted)
        return alert.key, (
            glyph,
            count,
            stamp,
            Text(alert.service or "cockpit", style=palette.accent),
            Text(alert.title.splitlines()[0] if alert.title else ""),
        )
