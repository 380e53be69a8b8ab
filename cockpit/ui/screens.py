"""Screens over the cockpit: help, item detail, cleanup progress on quit, and the notice shown
instead of the cockpit when the terminal is too small to draw it."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from cockpit.ui.bindings import KEYS, display_key

FILTER_TERMS: tuple[tuple[str, str], ...] = (
    ('word  "two words"', "the text contains it (any case)"),
    ("/regex/", "regex search: a lower-case pattern ignores case, /x/i always"),
    ("!term", "inverts any term: !healthz  !svc:web"),
    ("svc:api  svc:api,web", "lines of that service (or of either)"),
    ("level:warn", "that level or worse: debug, info, warn, error, fatal"),
    ("src:TEXT", "the source (pod/container) contains TEXT"),
    ("kind:pod", "pod, local, event or cockpit"),
)

LOG_KEYS: tuple[tuple[str, str], ...] = (
    ("↑ k  ↓ j", "move a cursor over the lines (pauses the stream)"),
    ("pgup pgdn", "a page up or down"),
    ("g home", "the first line held"),
    ("G end", "follow the stream again"),
    ("enter", "the whole line, with its source and time"),
)


def _grid(rows: Sequence[tuple[str, ...]], *, headers: Sequence[str] = ()) -> Table:
    # Keys stay on one line and narrow; the description takes the rest of the width and
    # wraps (a Markdown table splits the width evenly, which on 80 columns wraps the keys).
    columns = len(headers) if headers else len(rows[0]) if rows else 0
    table = Table(
        box=None,
        show_header=bool(headers),
        header_style="bold",
        pad_edge=False,
        padding=(0, 2, 0, 0),
        expand=True,
    )
    for index in range(columns):
        table.add_column(
            headers[index] if headers else "",
            no_wrap=index != 1,
            ratio=1 if index == 1 else None,
        )
    for row in rows:
        table.add_row(Text(row[0], style="bold"), *(Text(cell) for cell in row[1:]))
    return table


class HelpScreen(ModalScreen[None]):
    """Every key (as remapped), what it does, and the filter language."""

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 100;
        max-width: 100%;
        height: 90%;
        border: round $primary;
        border-title-color: $text-primary;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen .help-heading {
        color: $text-primary;
        text-style: bold;
        margin: 1 0 0 0;
    }
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        super().__init__()
        self._keys = dict(keys)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "Help"
            scroll.border_subtitle = "esc to close"
            yield Static("Keys", classes="help-heading")
            rows = [
                (display_key(self._keys.get(spec.id, spec.key)), spec.help, spec.id)
                for spec in KEYS
            ]
            yield Static(_grid(rows, headers=("key", "what it does", "id (keys: in config)")))
            yield Static("In the log pane", classes="help-heading")
            yield Static(_grid(LOG_KEYS))
            yield Static("Filter language (every term must match)", classes="help-heading")
            yield Static(_grid(FILTER_TERMS))

    @property
    def text(self) -> str:
        """The help as plain text (what the tests read)."""
        parts: list[str] = []
        for static in self.query(Static):
            console = Console(width=200, record=True, file=io.StringIO())
            console.print(static.content)
            parts.append(console.export_text())
        return "\n".join(parts)

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """The whole of one item: a log line, an alert's traceback, a service's state."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close", show=False)]

    DEFAULT_CSS = """
    DetailScreen {
        align: center middle;
    }
    DetailScreen > VerticalScroll {
        width: 90%;
        height: auto;
        max-height: 80%;
        border: round $primary;
        border-title-color: $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, title: str, body: Text | str) -> None:
        super().__init__()
        self._title = title
        self._body = body

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = self._title
            scroll.border_subtitle = "esc to close"
            yield Static(self._body, markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[None]):
    """Shown while the session is torn down: each cleanup step as the engine reports it."""

    BINDINGS = [Binding("ctrl+c", "force", "Quit now", show=False)]

    DEFAULT_CSS = """
    QuitScreen {
        align: center middle;
    }
    QuitScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 90%;
        border: round $warning;
        border-title-color: $warning;
        background: $surface;
        padding: 0 1;
    }
    QuitScreen #quit-steps {
        height: auto;
    }
    QuitScreen #quit-hint {
        color: $text-muted;
        margin-top: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._steps: list[str] = []
        self._started = time.monotonic()

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Cleaning up"
            yield Static("Stopping the session…", id="quit-steps", markup=False)
            yield Static(
                "ctrl+c: quit without waiting (then run `cockpit down` to finish cleaning up)",
                id="quit-hint",
                markup=False,
            )

    def on_mount(self) -> None:
        self.set_interval(0.5, self._tick)

    def add_step(self, text: str) -> None:
        """A cleanup progress message (same text twice is shown once)."""
        if not self._steps or self._steps[-1] != text:
            self._steps.append(text)
        self._redraw()

    @property
    def steps(self) -> list[str]:
        return list(self._steps)

    def _tick(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        lines = [f"✔ {step}" for step in self._steps[:-1]]
        if self._steps:
            lines.append(f"… {self._steps[-1]}")
        else:
            lines.append("… stopping the session")
        elapsed = time.monotonic() - self._started
        self.query_one("#quit-steps", Static).update("\n".join(lines[-12:]) + f"\n\n{elapsed:.0f}s")

    def action_force(self) -> None:
        self.app.exit(return_code=130)


class TooSmallScreen(Screen[None]):
    """Instead of a garbled cockpit: how big the terminal is and how big it needs to be."""

    DEFAULT_CSS = """
    TooSmallScreen {
        align: center middle;
        background: $background;
    }
    TooSmallScreen > Static {
        width: auto;
        height: auto;
        text-align: center;
        color: $text-warning;
    }
    """

    def __init__(self, min_width: int, min_height: int) -> None:
        super().__init__()
        self.min_width = min_width
        self.min_height = min_height

    def compose(self) -> ComposeResult:
        yield Static("", id="too-small", markup=False)

    def on_mount(self) -> None:
        self.show_size(self.app.size.width, self.app.size.height)

    def show_size(self, width: int, height: int) -> None:
        self.query_one("#too-small", Static).update(
            f"Terminal too small: {width}x{height}\n"
            f"cockpit needs at least {self.min_width}x{self.min_height}.\n"
            "Enlarge the window, or press q to quit."
        )
