"""Theme files (YAML data) loaded into Textual themes: the ones cockpit ships, then the user's.

A theme file that cannot be used is skipped and reported; loading never raises, so a typo in
a user theme costs one notice, not the session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "dark"
THEME_SUFFIXES = (".yaml", ".yml")

_COLOR_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)
_OTHER_FIELDS = ("name", "dark", "luminosity_spread", "text_alpha", "variables")


@dataclass(slots=True)
class ThemeCatalog:
    """The themes found, in order (shipped first, then the user's), and why any were skipped."""

    themes: dict[str, Theme] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.themes)


def builtin_theme_dir() -> Traversable | None:
    """Where the shipped themes are: inside the wheel (``cockpit/themes``), or the repository's
    ``themes/`` next to the package for an editable install."""
    try:
        packaged = resources.files("cockpit") / "themes"
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, OSError):
        pass
    repo = Path(__file__).resolve().parent.parent.parent / "themes"
    return repo if repo.is_dir() else None


def user_theme_dir() -> Path:
    """``$XDG_CONFIG_HOME/cockpit/themes`` (``~/.config/cockpit/themes`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cockpit" / "themes"


def load_themes(
    builtin: Traversable | None = None, user: Traversable | None = None
) -> ThemeCatalog:
    """Read every theme file of the shipped and user directories; a user theme may replace a
    shipped one of the same name."""
    catalog = ThemeCatalog()
    for directory in (builtin or builtin_theme_dir(), user or user_theme_dir()):
        if directory is None or not directory.is_dir():
            continue
        files = sorted(
            (entry for entry in directory.iterdir() if entry.name.endswith(THEME_SUFFIXES)),
            key=lambda entry: entry.name,
        )
        for entry in files:
            result = theme_from_file(entry)
            if isinstance(result, Theme):
                catalog.themes[result.name] = result
            else:
                catalog.problems.append(result)
    return catalog


def theme_from_file(entry: Traversable) -> Theme | str:
    """A Theme from one YAML file, or the one-line reason it cannot be used."""
    where = str(entry)
    try:
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        return f"{where}{line}: malformed YAML: {exc.problem or 'cannot parse'}"
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        return f"{where}: cannot read: {exc}"
    stem = entry.name.rsplit(".", 1)[0]
    return theme_from_data(data, default_name=stem, where=where)


def theme_from_data(data: Any, *, default_name: str, where: str) -> Theme | str:
    """Validate a parsed theme mapping; return the Theme or the first problem found."""
    if not isinstance(data, dict):
        return f"{where}: a theme is a mapping with at least primary: (a colour)"
    unknown = sorted(str(key) for key in data if key not in (*_COLOR_FIELDS, *_OTHER_FIELDS))
    if unknown:
        return f"{where}: unknown field(s) {', '.join(unknown)}"
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        return f"{where}: name: needs a non-empty string"
    if "primary" not in data:
        return f"{where}: primary: missing (the main accent colour, like '#5fafff')"
    colors: dict[str, str] = {}
    for key in _COLOR_FIELDS:
        if key not in data or data[key] is None:
            continue
        value = data[key]
        problem = _color_problem(value)
        if problem:
            return f"{where}: {key}: {problem}"
        colors[key] = str(value)
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        return f"{where}: dark: needs true or false"
    numbers: dict[str, float] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"{where}: {key}: needs a number"
            numbers[key] = float(value)
    variables = data.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(key, str) and isinstance(value, str | int | float)
        for key, value in variables.items()
    ):
        return f"{where}: variables: needs a mapping of CSS variable names to values"
    return Theme(
        name=name.strip(),
        primary=colors["primary"],
        secondary=colors.get("secondary"),
        accent=colors.get("accent"),
        foreground=colors.get("foreground"),
        background=colors.get("background"),
        surface=colors.get("surface"),
        panel=colors.get("panel"),
        boost=colors.get("boost"),
        success=colors.get("success"),
        warning=colors.get("warning"),
        error=colors.get("error"),
        dark=dark,
        luminosity_spread=numbers.get("luminosity_spread", 0.15),
        text_alpha=numbers.get("text_alpha", 0.95),
        variables={key: str(value) for key, value in variables.items()},
    )


def _color_problem(value: Any) -> str:
    if not isinstance(value, str):
        return f"{value!r} is not a colour (quote it: '#5fafff')"
    try:
        Color.parse(value)
    except ColorParseError:
        return f"{value!r} is not a colour"
    return ""
