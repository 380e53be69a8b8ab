"""The log filter bar: the core query language, checked as you type.

A query that does not parse is never applied: the bar says why and where, and the log pane
keeps showing the last good filter. A good one is applied after a short pause in typing.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from cockpit.core.query import Query, QueryError, parse_query

APPLY_DELAY = 0.12  # seconds of no typing before a changed filter is applied

PLACEHOLDER = "filter: text  /regex/  !not  svc:api  level:warn  src:pod  kind:event"


class FilterInput(Input):
    """The text box; ``escape`` clears the filter and leaves the bar."""

    BINDINGS = [Binding("escape", "leave", "Clear filter", show=False)]

    class Leave(Message):
        """The user pressed escape in the filter box."""

    def action_leave(self) -> None:
        self.post_message(self.Leave())


class FilterBar(Horizontal):
    """Prompt, query box and feedback (what is wrong with the query, or that it is being
    applied; the log pane's title says how many lines match)."""

    DEFAULT_CSS = """
    FilterBar {
        height: 1;
        background: $panel;
    }
    FilterBar > #filter-prompt {
        width: 3;
        color: $text-muted;
        background: $panel;
    }
    FilterBar:focus-within > #filter-prompt {
        color: $accent;
        text-style: bold;
    }
    FilterBar > FilterInput, FilterBar > FilterInput:focus {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0;
        background: $panel;
    }
    FilterBar > FilterInput:focus {
        background: $surface;
    }
    FilterBar > FilterInput.-invalid {
        color: $text-error;
    }
    FilterBar > #filter-feedback {
        width: auto;
        max-width: 60%;
        padding: 0 1;
        color: $text-muted;
        background: $panel;
    }
    FilterBar > #filter-feedback.-error {
        color: $text-error;
        text-style: bold;
    }
    """

    class Changed(Message):
        """A query that parses is to be applied."""

        def __init__(self, query: Query) -> None:
            super().__init__()
            self.query = query

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._timer: Timer | None = None
        self._error: QueryError | None = None
        self._filtering = False

    def compose(self) -> ComposeResult:
        yield Static(" / ", id="filter-prompt")
        yield FilterInput(
            placeholder=PLACEHOLDER, id="filter-input", select_on_focus=False, compact=True
        )
        yield Static("", id="filter-feedback", markup=False)

    @property
    def input(self) -> FilterInput:
        return self.query_one(FilterInput)

    @property
    def text(self) -> str:
        return self.input.value

    @property
    def error(self) -> QueryError | None:
        return self._error

    def set_text(self, text: str, *, apply_now: bool = True) -> None:
        """Replace the query (e.g. selecting a service sets ``svc:``)."""
        self.input.value = text
        self.input.cursor_position = len(text)
        if apply_now:
            self._check(text, delay=0)

    def set_filtering(self, filtering: bool) -> None:
        """Say so while the log pane re-scans its buffer (the counts are in its title)."""
        if self._error is not None or filtering == self._filtering:
            return
        self._filtering = filtering
        # Only on a change: updating a Static lays out the whole screen again.
        self.query_one("#filter-feedback", Static).update("filtering…" if filtering else "")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._check(event.value, delay=APPLY_DELAY)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._check(event.value, delay=0)

    def _check(self, text: str, *, delay: float) -> None:
        parsed = parse_query(text)
        feedback = self.query_one("#filter-feedback", Static)
        box = self.input
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if isinstance(parsed, QueryError):
            self._error = parsed
            box.add_class("-invalid")
            feedback.add_class("-error")
            feedback.update(Text(f"✖ {parsed.message} (at {parsed.position + 1})"))
            return
        if self._error is not None:
            self._error = None
            box.remove_class("-invalid")
            feedback.remove_class("-error")
            feedback.update("")
        if delay:
            self._timer = self.set_timer(delay, lambda: self.post_message(self.Changed(parsed)))
        else:
            self.post_message(self.Changed(parsed))
