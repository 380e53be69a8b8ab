"""The single declaration of keys: unique, remappable, documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.ui.bindings import (
    KEYS,
    KEYS_BY_ID,
    display_key,
    markdown_table,
    resolve_keys,
    textual_bindings,
    textual_key,
)

REPO = Path(__file__).resolve().parents[2]


def test_ids_and_keys_are_unique() -> None:
    assert len(KEYS_BY_ID) == len(KEYS)
    keys = [textual_key(spec.key) for spec in KEYS]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    "binding_id",
    [
        "intercept",
        "intercept_personal",
        "restart",
        "filter",
        "clear",
        "logs",
        "shell",
        "forward",
        "next_pane",
        "prev_pane",
        "detail",
        "help",
        "palette",
        "theme",
        "quit",
    ],
)
def test_every_key_the_issue_names_is_declared(binding_id: str) -> None:
    assert binding_id in KEYS_BY_ID


def test_defaults_match_k9s_habits() -> None:
    defaults = {spec.id: spec.key for spec in KEYS}
    assert defaults["intercept"] == "i"
    assert defaults["intercept_personal"] == "I"
    assert defaults["filter"] == "/"
    assert defaults["clear"] == "escape"
    assert defaults["help"] == "?"
    assert defaults["palette"] == "ctrl+p"
    assert defaults["quit"] == "q"


def test_textual_bindings_carry_ids_for_keymaps() -> None:
    bindings = textual_bindings()
    assert [b.id for b in bindings] == [spec.id for spec in KEYS]
    by_id = {b.id: b for b in bindings}
    assert by_id["help"].key == "question_mark"
    assert by_id["filter"].key == "slash"
    assert by_id["help"].key_display == "?"


def test_overrides_apply_by_id() -> None:
    keys, problems = resolve_keys({"restart": "ctrl+r", "quit": "Q"})
    assert problems == []
    assert keys["restart"] == "ctrl+r"
    assert keys["quit"] == "Q"
    assert keys["filter"] == "/"


def test_unknown_ids_empty_keys_and_clashes_keep_the_default() -> None:
    keys, problems = resolve_keys({"restrat": "x", "shell": " ", "logs": "r"})
    assert keys["logs"] == "l"
    assert keys["shell"] == "s"
    assert problems[0].startswith("keys.restrat: no such binding (known: ")
    assert problems[1] == "keys.shell: needs a key, like ctrl+r"
    assert problems[2] == "keys.logs: 'r' is already the key of restart; keeping 'l'"


def test_a_swap_is_not_a_clash() -> None:
    keys, problems = resolve_keys({"restart": "l", "logs": "r"})
    assert problems == []
    assert (keys["restart"], keys["logs"]) == ("l", "r")


def test_markdown_table_has_a_row_per_binding() -> None:
    table = markdown_table()
    rows = table.strip().splitlines()
    assert rows[0] == "| key | id | what it does |"
    assert len(rows) == 2 + len(KEYS)
    assert "| `?` | `help` |" in table
    assert "| `esc` | `clear` |" in table
    assert "| `shift+tab` | `prev_pane` |" in table
    assert "| `ctrl+r` | `restart` |" in markdown_table({"restart": "ctrl+r"})


def test_display_key() -> None:
    assert display_key("escape") == "esc"
    assert display_key("I") == "I"
    assert display_key("question_mark") == "?"
    assert display_key("ctrl+p") == "ctrl+p"


def test_readme_key_table_is_generated_from_the_declaration() -> None:
    readme = (REPO / "README.md").read_text()
    if "<!-- keys:start -->" not in readme:
        pytest.skip("README has no generated key table yet")
    start = readme.index("<!-- keys:start -->") + len("<!-- keys:start -->")
    end = readme.index("<!-- keys:end -->")
    assert readme[start:end].strip() == markdown_table().strip()
