"""The multiplexed log pane: its own bounded ring, an index of the lines the filter lets
through, and a Line API view that renders only the rows on screen.

Appending a batch costs one filter test per line and one refresh; changing the filter
re-scans the ring in an exclusive thread worker, so typing in the filter bar never waits
for a scan of the whole buffer.
"""

from __future__ import annotations

import enum
import re
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from cockpit.core.events import Level, LogLine, SourceKind
from cockpit.core.query import Query
from cockpit.ui.palette import Palette

DEFAULT_MAX_LINES = 50_000

# ANSI sequences (CSI, OSC) and C0 controls: a log line must never move the cursor or
# change the terminal's colours under the UI.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|[\x00-\x08\x0a-\x1f\x7f]"  # every other control but tab (expanded below)
)
_EMPTY_QUERY = Query("")


class Jump(enum.Enum):
    """What ``LogView.jump_to_seq`` could do."""

    SHOWN = "shown"
    FILTERED_OUT = "filtered out"  # held, but the filter hides it
    GONE = "gone"  # dropped from the ring (too old) or never received


def clean_text(text: str) -> str:
    """A log line made safe to draw: no escape sequences or control characters, tabs expanded."""
    if "\x1b" in text or not text.isprintable():
        text = _CONTROL.sub("", text)
        if "\t" in text:
            text = text.expandtabs(4)
    return text


def short_source(source: str, width: int) -> str:
    """``source`` in at most ``width`` cells: first without its ``/container``, then cut in the
    middle (pod names end with the part that tells replicas apart)."""
    if len(source) <= width:
        return source
    if "/" in source:
        source = source.rsplit("/", 1)[0]
        if len(source) <= width:
            return source
    if width <= 3:
        return source[:width]
    tail = min(6, (width - 1) // 2)
    return f"{source[: width - 1 - tail]}…{source[-tail:]}"


def source_label(line: LogLine) -> str:
    """A short, stable name for where a line came from: ``web·x2x4k`` for replica x2x4k of
    web's pods (the container too when it is not named after the service), ``store·event``
    for a Kubernetes event, the service name for the local process (``api·old`` for an old
    process finishing its requests after a restart)."""
    service = line.service
    if line.kind is SourceKind.POD:
        pod, _, container = line.source.partition("/")
        replica = pod.rsplit("-", 1)[-1] if "-" in pod else pod
        label = f"{service}·{replica}" if service else pod
        if container and container != service:
            label += f"/{container}"
        return label
    if line.kind is SourceKind.EVENT:
        return f"{service}·event" if service else "event"
    if line.kind is SourceKind.COCKPIT:
        return "cockpit"
    if service and line.source.startswith(f"{service}·"):
        return line.source
    return service or line.source or "?"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    lines: list[LogLine]
    base: int  # ordinal of lines[0]


class LogView(ScrollView, can_focus=True):
    """Every log line of the session in one stream, newest at the bottom."""

    DEFAULT_CSS = """
    LogView {
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    """

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First line", show=False),
        Binding("end,G", "last", "Follow", show=False),
    ]

    class StateChanged(Message):
        """Follow/pause, the filter or the counts changed: titles need redrawing."""

    def __init__(
        self,
        palette: Palette,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.palette = palette
        self.max_lines = max_lines
        self._lines: list[LogLine] = []
        self._base = 0  # ordinal (count of lines ever appended) of _lines[0]
        self._shown: list[int] = []  # ordinals of the lines the query lets through
        self._query: Query = _EMPTY_QUERY
        self._match = self._query.predicate()
        self._follow = True
        self._new_while_paused = 0
        self._cursor: int | None = None  # index into _shown
        self._filtering = False
        self._dropped = 0  # dropped by this pane's ring
        self._source_index: dict[str, int] = {}  # colour of each source, in order of arrival
        self._labels: dict[str, str] = {}
        self._widest_label = 0
        self._cache: LRUCache[tuple[int, int, bool], Strip] = LRUCache(1024)
        # Widget.rich_style walks every ancestor's styles (~1 ms): once per style change,
        # not once per line per frame (a flood repaints the whole pane 10 times a second).
        self._base_style: Style | None = None
        self.show_time = False
        self.source_width = 14

    # -- what the titles show ---------------------------------------------------------

    @property
    def follow(self) -> bool:
        return self._follow

    @property
    def filter_query(self) -> Query:
        return self._query

    @property
    def total(self) -> int:
        """Lines held."""
        return len(self._lines)

    @property
    def shown(self) -> int:
        """Lines the filter lets through."""
        return len(self._shown)

    @property
    def new_while_paused(self) -> int:
        return self._new_while_paused

    @property
    def filtering(self) -> bool:
        return self._filtering

    @property
    def dropped(self) -> int:
        return self._dropped

    def visible_lines(self) -> list[LogLine]:
        """The lines in the viewport, top to bottom (for tests and the detail view)."""
        top = round(self.scroll_y)
        ordinals = self._shown[top : top + self.scrollable_content_region.height]
        return [self._lines[ordinal - self._base] for ordinal in ordinals]

    def cursor_line(self) -> LogLine | None:
        if self._cursor is None or not 0 <= self._cursor < len(self._shown):
            return None
        return self._lines[self._shown[self._cursor] - self._base]

    # -- feeding ----------------------------------------------------------------------

    def append(self, lines: Sequence[LogLine]) -> None:
        """Add a batch of lines (the only way lines come in: never one call per line)."""
        if not lines:
            return
        start = self._base + len(self._lines)
        self._lines.extend(lines)
        labels = self._labels
        for line in lines:
            if line.source not in labels:
                self._new_source(line)
        before = len(self._shown)
        if self._query.is_empty:
            self._shown.extend(range(start, start + len(lines)))
        else:
            match = self._match
            self._shown.extend(ordinal for ordinal, line in enumerate(lines, start) if match(line))
        added = len(self._shown) - before
        self._trim()
        self._after_growth(added)

    def _new_source(self, line: LogLine) -> None:
        label = self._labels[line.source] = source_label(line)
        self._source_index[line.source] = len(self._source_index)
        if len(label) > self._widest_label:
            # The source column is as wide as the widest label (up to source_width).
            self._widest_label = len(label)
            self._cache.clear()

    def _trim(self) -> None:
        # Trim in chunks (25% slack) so the list move is paid once per many batches.
        excess = len(self._lines) - self.max_lines
        if excess <= self.max_lines // 4:
            return
        del self._lines[:excess]
        self._base += excess
        self._dropped += excess
        cut = bisect_left(self._shown, self._base)
        if cut:
            del self._shown[:cut]
            if self._cursor is not None:
                self._cursor = max(0, self._cursor - cut)
            if not self._follow:
                # Keep the same lines on screen while older ones leave the buffer.
                self._scroll_to_line(max(0, self.scroll_y - cut))
        self._cache.clear()

    def _after_growth(self, added: int) -> None:
        self._set_virtual_size()
        if self._follow:
            self._scroll_to_end()
        else:
            self._new_while_paused += added
        self.refresh()

    def _scroll_to_end(self) -> None:
        # force: right after the buffer grows the scrollbar is not laid out yet, and an
        # unforced scroll would be refused as "not scrollable".
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def _scroll_to_line(self, y: float) -> None:
        self.scroll_to(y=y, animate=False, immediate=True, force=True)

    def _set_virtual_size(self) -> None:
        size = Size(self.scrollable_content_region.width, len(self._shown))
        old = self.virtual_size
        if size == old:
            return
        height = self.scrollable_content_region.height
        if size.width == old.width and old.height > height and size.height > height:
            # Growing while already scrolling: only the scrollbar changes. Assigning
            # virtual_size would lay out the whole screen again (20 times a second under
            # a busy stream); this is the path Textual itself takes for a resize without
            # layout.
            self.set_reactive(LogView.virtual_size, size)
            self._scroll_update(size)
            return
        self.virtual_size = size

    def clear(self) -> None:
        self._lines.clear()
        self._shown.clear()
        self._base = 0
        self._cursor = None
        self._new_while_paused = 0
        self._cache.clear()
        self._set_virtual_size()
        self.refresh()
        self.post_message(self.StateChanged())

    # -- filtering ----------------------------------------------------------------------

    def set_query(self, query: Query) -> None:
        """Show only the lines ``query`` matches; scans the buffer in a worker."""
        if query == self._query:
            return
        self._query = query
        self._match = query.predicate()
        if query.is_empty:
            self._apply_filter(list(range(self._base, self._base + len(self._lines))), None)
            return
        self._filtering = True
        self.post_message(self.StateChanged())
        self._refilter(query, _Snapshot(list(self._lines), self._base))

    @work(thread=True, exclusive=True, group="log-filter", exit_on_error=False)
    def _refilter(self, query: Query, snapshot: _Snapshot) -> None:
        worker = get_current_worker()
        match = query.predicate()
        found: list[int] = []
        keep = found.append
        lines = snapshot.lines
        step = 8192
        for chunk_start in range(0, len(lines), step):
            if worker.is_cancelled:
                return
            base = snapshot.base + chunk_start
            for offset, line in enumerate(lines[chunk_start : chunk_start + step]):
                if match(line):
                    keep(base + offset)
        if not worker.is_cancelled:
            self.app.call_from_thread(self._apply_filter, found, (query, snapshot))

    def _apply_filter(self, found: list[int], origin: tuple[Query, _Snapshot] | None) -> None:
        if origin is not None:
            query, snapshot = origin
            if query != self._query:
                return  # a newer filter is already on its way
            # Lines that came in (or left) while the worker scanned.
            scanned_end = snapshot.base + len(snapshot.lines)
            start = bisect_left(found, self._base)
            found = found[start:]
            match = self._match
            first_new = max(scanned_end, self._base)
            found.extend(
                ordinal
                for ordinal in range(first_new, self._base + len(self._lines))
                if match(self._lines[ordinal - self._base])
            )
        self._shown = found
        self._filtering = False
        self._cursor = None
        self._new_while_paused = 0
        self._cache.clear()
        self._set_virtual_size()
        if self._follow:
            self._scroll_to_end()
        else:
            self._scroll_to_line(min(self.scroll_y, self.max_scroll_y))
        self.refresh()
        self.post_message(self.StateChanged())

    # -- follow / pause / cursor ----------------------------------------------------------

    def pause(self) -> None:
        if self._follow:
            self._follow = False
            self._new_while_paused = 0
            self.post_message(self.StateChanged())

    def resume(self) -> None:
        self._follow = True
        self._new_while_paused = 0
        self._set_cursor(None)
        self._scroll_to_end()
        self.post_message(self.StateChanged())

    def toggle_follow(self) -> None:
        if self._follow:
            self.pause()
        else:
            self.resume()

    def _set_cursor(self, index: int | None) -> None:
        if index is not None:
            index = max(0, min(index, len(self._shown) - 1)) if self._shown else None
        self._cursor = index
        if index is not None:
            height = self.scrollable_content_region.height
            top = round(self.scroll_y)
            if index < top:
                self._scroll_to_line(index)
            elif index >= top + height:
                self._scroll_to_line(index - height + 1)
        self.refresh()

    def _move(self, delta: int) -> None:
        if not self._shown:
            return
        if self._cursor is None:
            # The first move picks a line at the edge the user is moving from.
            self.pause()
            top = round(self.scroll_y)
            bottom = min(len(self._shown) - 1, top + self.scrollable_content_region.height - 1)
            anchor = bottom if delta < 0 else top
            step = 0 if abs(delta) == 1 else delta
            self._set_cursor(anchor + step)
            return
        self._set_cursor(self._cursor + delta)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        if self._cursor is None and self._follow:
            return  # already at the newest line
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        if self._cursor is None and self._follow:
            return
        self._move(max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self.pause()
        self._set_cursor(0)

    def action_last(self) -> None:
        self.resume()

    def jump_to_seq(self, seq: int) -> Jump:
        """Pause and put the cursor on the line with this engine ``seq``."""
        if seq <= 0 or not self._lines:
            return Jump.GONE
        index = bisect_left(self._lines, seq, key=lambda line: line.seq)
        if index >= len(self._lines) or self._lines[index].seq != seq:
            return Jump.GONE
        ordinal = self._base + index
        position = bisect_left(self._shown, ordinal)
        if position >= len(self._shown) or self._shown[position] != ordinal:
            return Jump.FILTERED_OUT
        self.pause()
        self._set_cursor(position)
        # Centre the line so its context (the lines before a traceback) is on screen too.
        height = self.scrollable_content_region.height
        self._scroll_to_line(max(0, position - height // 2))
        return Jump.SHOWN

    # -- rendering ------------------------------------------------------------------------

    def set_palette(self, palette: Palette) -> None:
        self.palette = palette
        self._cache.clear()
        self._base_style = None
        self.refresh()

    def set_columns(self, *, show_time: bool, source_width: int) -> None:
        if (show_time, source_width) != (self.show_time, self.source_width):
            self.show_time = show_time
            self.source_width = source_width
            self._cache.clear()
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()
        self._base_style = None

    def on_resize(self) -> None:
        self._cache.clear()
        self._set_virtual_size()
        if self._follow:
            self._scroll_to_end()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = round(self.scroll_y) + y
        base_style = self._base_style
        if base_style is None:
            base_style = self._base_style = self.rich_style
        if index >= len(self._shown) or width <= 0:
            return Strip.blank(width, base_style)
        ordinal = self._shown[index]
        selected = index == self._cursor
        key = (ordinal, width, selected)
        strip = self._cache.get(key)
        if strip is None:
            line = self._lines[ordinal - self._base]
            strip = self._render_log_line(line, width, base_style, selected)
            self._cache[key] = strip
        return strip

    def _render_log_line(self, line: LogLine, width: int, base: Style, selected: bool) -> Strip:
        palette = self.palette
        segments: list[Segment] = []
        if self.show_time:
            stamp = time.strftime("%H:%M:%S ", time.localtime(line.ts))
            segments.append(Segment(stamp, base + palette.muted))
        source = line.source
        if source not in self._labels:
            self._new_source(line)
        label_width = min(self.source_width, self._widest_label)
        label = short_source(self._labels[source], label_width).ljust(label_width)
        segments.append(Segment(label, base + palette.source(self._source_index[source])))
        segments.append(Segment(" ", base))
        level = line.level
        if level >= Level.ERROR:
            text_style = base + palette.bad
        elif level >= Level.WARNING:
            text_style = base + palette.warn
        elif level <= Level.DEBUG or line.kind is SourceKind.COCKPIT:
            text_style = base + palette.muted
        else:
            text_style = base
        segments.append(Segment(clean_text(line.text), text_style))
        strip = Strip(segments)
        if strip.cell_length > width and width > 1:
            # Cut lines say so; enter on the line shows all of it.
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", palette.muted)])])
        strip = strip.crop_extend(0, width, base)
        if selected:
            strip = strip.apply_style(palette.cursor)
        return strip
