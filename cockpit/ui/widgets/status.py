"""One-line panes: the status bar (where the session runs and how its connections are) and the
compact summary of forwards and sync that replaces their tables on small terminals."""

from __future__ import annotations

import time

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from cockpit.core.events import Level
from cockpit.ui import humanize
from cockpit.ui.palette import Palette
from cockpit.ui.session_view import SessionView

# The connections the status bar always names, in this order (others follow by name).
KNOWN_CONNECTIONS = ("api", "agent", "tunnel")


def connection_cell(name: str, state: str, palette: Palette, *, short: bool) -> Text:
    if state == "connected":
        glyph, style = "●", palette.ok
    elif state.startswith("failed") or state == "disconnected":
        glyph, style = "✖", palette.bad
    else:
        glyph, style = "◌", palette.warn
    text = Text(f"{name} ", style=palette.muted)
    text.append(glyph, style=style)
    if not short or state != "connected":
        text.append(f" {state}", style=style)
    return text


class OneLine(Static):
    """A one-row bar (its height is fixed by the stylesheet) that repaints only on change.

    ``Static.update`` lays the whole screen out again by default; with two 50-row tables
    that costs more than everything else an idle session does, once a second.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._shown: Text | None = None

    def show(self, text: Text) -> None:
        if self._shown is not None and text == self._shown:  # same characters, same spans
            return
        self._shown = text
        self.update(text, layout=False)


class StatusBar(OneLine):
    """Context, namespace, session and the state of the API, agent and tunnel connections."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._fallback: dict[str, str] = {}

    def set_fallback(self, info: dict[str, str]) -> None:
        """Context/namespace/session known before the engine says (from the command line)."""
        self._fallback = dict(info)

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        info = view.info
        context = (info.context if info else "") or self._fallback.get("context", "")
        namespace = (info.namespace if info else "") or self._fallback.get("namespace", "")
        session = (info.session_id if info else "") or self._fallback.get("session", "")
        service = (info.service if info else "") or self._fallback.get("service", "")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" cockpit ", style=palette.primary + Style(bold=True))
        text.append("⎈ ", style=palette.muted)
        text.append(context or "…", style=palette.bold)
        text.append("/", style=palette.muted)
        text.append(namespace or "…", style=palette.bold)

        # Connections matter more than names: when the bar is short, the names go first.
        names = [name for name in KNOWN_CONNECTIONS if name in view.connections]
        names += sorted(name for name in view.connections if name not in KNOWN_CONNECTIONS)
        connections = Text()
        for name in names or ["api", "agent"]:
            connections.append("  ")
            state = view.connections.get(name, "connecting")
            connections.append_text(connection_cell(name, state, palette, short=not wide))
        extras = Text()
        if service:
            extras.append("  local ", style=palette.muted)
            extras.append(service, style=palette.accent)
        if session:
            extras.append("  session ", style=palette.muted)
            extras.append(session[:8] if not wide else session)
        width = self.size.width or 10_000
        if text.cell_len + extras.cell_len + connections.cell_len <= width:
            text.append_text(extras)
        text.append_text(connections)

        notice = view.current_notice()
        if notice is not None:
            style = palette.bad if notice.level >= Level.ERROR else palette.muted
            text.append("  │ ", style=palette.muted)
            text.append(notice.text, style=style)
        self.show(text)


class SessionSummary(OneLine):
    """Forwards and sync in one line, for terminals too small for their tables."""

    clock = staticmethod(time.time)

    def refresh_from(self, view: SessionView, palette: Palette, *, wide: bool) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        forwards = list(view.forwards.values())
        failed = [f for f in forwards if f.state.startswith("failed")]
        listening = sum(1 for f in forwards if f.state == "listening")
        text.append(" ⇄ ", style=palette.primary)
        if not forwards:
            text.append("no forwards", style=palette.muted)
        else:
            text.append(f"{len(forwards)} forwards ")
            text.append(f"{listening} up", style=palette.ok if listening else palette.muted)
            if failed:
                text.append(f" {len(failed)} failed", style=palette.bad)
            connections = sum(f.connections for f in forwards)
            if connections:
                text.append(f" {connections} conn", style=palette.muted)
        now = self.clock()
        for sync in view.syncs.values():
            text.append("   ⟳ ", style=palette.primary)
            text.append(f"{sync.name} ")
            style = (
                palette.bad
                if sync.state == "failed"
                else palette.warn
                if sync.state in ("syncing", "pending")
                else palette.ok
            )
            text.append(sync.state, style=style)
            if sync.pending:
                text.append(f" {sync.pending} pending", style=palette.warn)
            if sync.last_sync is not None:
                text.append(f" {humanize.ago(sync.last_sync, now)} ago", style=palette.muted)
        self.show(text)
