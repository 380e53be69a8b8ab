"""Screens over the cockpit: help, item detail, cleanup progress on quit, and the notice shown
instead of the cockpit when the terminal is too small to draw it."""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown, Static

from cockpit.ui.bindings import markdown_table

FILTER_HELP = """\
## Filter language

Terms are separated by spaces; every term must match.

| term | matches |
|---|---|
| `word` / `"two words"` | text contains it (any case) |
| `/regex/` | regex search; lower-case pattern ignores case, `/x/i` always |
| `!term` | inverts any term: `!healthz`, `!svc:web` |
| `svc:api` / `svc:api,web` | lines of that service (or of either) |
| `level:warn` | that level or worse: debug, info, warn, error, fatal |
| `src:TEXT` | the source (pod/container) contains TEXT |
| `kind:pod` | pod, local, event or cockpit |
"""

LOG_KEYS_HELP = """\
## In the log pane

`↑`/`k` `↓`/`j` move a cursor (and pause), `pgup`/`pgdn` page, `g`/`home` first line,
`G`/`end` follow again, `enter` shows the whole line.
"""


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
        width: 96;
        max-width: 100%;
        height: 90%;
        border: round $primary;
        border-title-color: $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        super().__init__()
        self._keys = dict(keys)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "Help"
            scroll.border_subtitle = "esc to close"
            yield Markdown(
                "## Keys\n\n"
                + markdown_table(self._keys)
                + "\n"
                + LOG_KEYS_HELP
                + "\n"
                + FILTER_HELP
            )

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
