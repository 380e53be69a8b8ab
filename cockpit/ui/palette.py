"""Rich styles for text the widgets build in Python (table cells, log lines), taken from the
current theme's variables so a theme file is the only place a colour is chosen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.style import Style
from textual.color import Color, ColorParseError

# Log sources cycle through these; a theme may set any of log-source-1..8 in its variables.
_SOURCE_BASES = ("primary", "secondary", "accent", "success")


@dataclass(frozen=True, slots=True)
class Palette:
    ok: Style
    warn: Style
    bad: Style
    muted: Style
    accent: Style
    primary: Style
    bold: Style
    cursor: Style
    sources: tuple[Style, ...]

    def source(self, index: int) -> Style:
        return self.sources[index % len(self.sources)]


def _colour(variables: Mapping[str, str], name: str) -> Color | None:
    """The variable as an opaque colour (alpha blended onto the background), or None."""
    value = variables.get(name)
    if not value or value.startswith(("auto", "$")):
        return None
    try:
        colour = Color.parse(value)
    except ColorParseError:
        return None
    if colour.a < 1:
        try:
            background = Color.parse(variables.get("background", "black"))
        except ColorParseError:
            background = Color(0, 0, 0)
        colour = background.blend(colour.with_alpha(1), colour.a)
    return colour


def _style(variables: Mapping[str, str], *names: str, bold: bool = False) -> Style:
    for name in names:
        colour = _colour(variables, name)
        if colour is not None:
            return Style(color=colour.rich_color, bold=bold or None)
    return Style(bold=bold or None)


def palette_from(variables: Mapping[str, str], *, dark: bool = True) -> Palette:
    """Build the palette from ``App.theme_variables`` (the resolved theme)."""
    shade = "lighten" if dark else "darken"
    sources = [
        *(_style(variables, f"log-source-{n + 1}", base) for n, base in enumerate(_SOURCE_BASES)),
        *(
            _style(variables, f"log-source-{n + 5}", f"{base}-{shade}-2", base)
            for n, base in enumerate(_SOURCE_BASES)
        ),
    ]
    cursor_bg = _colour(variables, "block-cursor-background") or _colour(variables, "primary")
    cursor_fg = _colour(variables, "block-cursor-foreground") or _colour(variables, "foreground")
    cursor = Style(
        color=cursor_fg.rich_color if cursor_fg else None,
        bgcolor=cursor_bg.rich_color if cursor_bg else None,
        reverse=None if cursor_bg else True,
    )
    return Palette(
        ok=_style(variables, "text-success", "success"),
        warn=_style(variables, "text-warning", "warning"),
        bad=_style(variables, "text-error", "error"),
        muted=_style(variables, "foreground-muted", "foreground"),
        accent=_style(variables, "text-accent", "accent"),
        primary=_style(variables, "text-primary", "primary"),
        bold=Style(bold=True),
        cursor=cursor,
        sources=tuple(sources),
    )
