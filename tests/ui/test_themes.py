"""Themes are data: shipped YAML files, user files, and one notice for a broken one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cockpit.ui import themes as theme_module
from cockpit.ui.themes import builtin_theme_dir, load_themes, theme_from_data, user_theme_dir

from .fakes import FakeEngine, make_app, notices, settle

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "cockpit" / "ui"


def test_shipped_themes_load_without_problems() -> None:
    catalog = load_themes()
    assert catalog.problems == []
    assert {"dark", "light", "high-contrast"} <= set(catalog.names)
    assert catalog.themes["light"].dark is False
    assert catalog.themes["high-contrast"].background == "#000000"


def test_builtin_dir_is_the_repository_themes_in_an_editable_install() -> None:
    found = builtin_theme_dir()
    assert found is not None
    assert {entry.name for entry in found.iterdir()} >= {
        "dark.yaml",
        "light.yaml",
        "high-contrast.yaml",
    }


def test_user_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_theme_dir() == tmp_path / "cockpit" / "themes"


def test_user_theme_is_added_and_may_replace_a_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "solar.yaml").write_text('primary: "#268bd2"\nbackground: "#002b36"\n')
    (tmp_path / "override.yml").write_text('name: light\nprimary: "#ff0000"\ndark: false\n')
    catalog = load_themes(user=tmp_path)
    assert catalog.problems == []
    assert catalog.themes["solar"].primary == "#268bd2"  # name defaults to the file's stem
    assert catalog.themes["light"].primary == "#ff0000"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("primary: [1, 2\n", "bad.yaml:2: malformed YAML"),
        ("- just\n- a list\n", "a theme is a mapping"),
        ("background: '#000000'\n", "primary: missing"),
        ("primary: '#12345z'\n", "primary: '#12345z' is not a colour"),
        ("primary: 0x123456\n", "is not a colour (quote it"),
        ("primary: red\nprimery: blue\n", "unknown field(s) primery"),
        ("primary: red\ndark: maybe\n", "dark: needs true or false"),
        ("primary: red\nvariables: [a]\n", "variables: needs a mapping"),
        ("primary: red\nname: ''\n", "name: needs a non-empty string"),
    ],
)
def test_a_broken_file_is_reported_in_one_line(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    catalog = load_themes(user=tmp_path)
    assert len(catalog.problems) == 1
    assert problem in catalog.problems[0]
    assert str(tmp_path / "bad.yaml") in catalog.problems[0]
    assert "\n" not in catalog.problems[0]
    assert "bad" not in catalog.themes


def test_theme_from_data_accepts_numbers_and_variables() -> None:
    theme = theme_from_data(
        {"primary": "#00ffff", "luminosity_spread": 0.2, "variables": {"border": "#ffffff"}},
        default_name="x",
        where="x.yaml",
    )
    assert not isinstance(theme, str)
    assert theme.luminosity_spread == 0.2
    assert theme.variables == {"border": "#ffffff"}


async def test_broken_user_themes_cost_one_notice_and_the_default_is_used(
    engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    themes_dir = tmp_path / "cockpit" / "themes"
    themes_dir.mkdir(parents=True)
    (themes_dir / "mine.yaml").write_text("primary: [oops\n")
    (themes_dir / "other.yaml").write_text("primary: nocolour\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    app = make_app(engine, theme="mine")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        notes = notices(app)
        assert len(notes) == 1
        assert "mine.yaml" in notes[0] and "other.yaml" in notes[0]
        assert "theme 'mine' not found" in notes[0]
        assert app.theme == "dark"


async def test_a_user_theme_can_be_chosen(
    engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    themes_dir = tmp_path / "cockpit" / "themes"
    themes_dir.mkdir(parents=True)
    (themes_dir / "solar.yaml").write_text('primary: "#268bd2"\nbackground: "#002b36"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    app = make_app(engine, theme="solar")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.theme == "solar"
        assert notices(app) == []


_COLOUR = re.compile(
    r"#[0-9a-fA-F]{3,8}\b|\b(?:rgb|rgba|hsl|hsla)\(|"
    r"\b(?:red|green|blue|white|black|yellow|cyan|magenta|grey|gray|orange|purple)\b"
)


def _stylesheets() -> list[tuple[str, str]]:
    sheets = [(str(path), path.read_text()) for path in UI.rglob("*.tcss")]
    for path in UI.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r'DEFAULT_CSS = """(.*?)"""', text, re.S):
            sheets.append((f"{path}:DEFAULT_CSS", match.group(1)))
    return sheets


def test_stylesheets_use_theme_variables_only() -> None:
    sheets = _stylesheets()
    assert len(sheets) >= 5
    for where, css in sheets:
        css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
        found = _COLOUR.findall(css)
        assert not found, f"{where}: hard-coded colour(s) {found}"


def test_module_reports_its_suffixes() -> None:
    assert theme_module.THEME_SUFFIXES == (".yaml", ".yml")
