"""Every key of the cockpit, declared once: the footer, the help screen, the command palette and
the README table are all built from ``KEYS``, and users remap any of them by id (``keys:`` in
cockpit.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from textual.binding import Binding
from textual.keys import _character_to_key, format_key


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One user-facing key: a stable ``id`` (what config remaps), the default ``key``, the
    app ``action`` it runs, and the ``description`` shown in the footer, help and palette."""

    id: str
    key: str  # as a person types it: "i", "I", "/", "?", "ctrl+p", "shift+tab"
    action: str
    description: str
    help: str  # one sentence for the help screen, the palette and the README
    footer: bool = True  # shown in the footer (the footer is one line: keep it short)
    palette: bool = True  # offered in the command palette
    # Handled before the focused pane sees the key: keys typed right after it (a paste, a
    # fast typist) then reach the pane the action focuses instead of the old one.
    priority: bool = False


KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "intercept",
        "i",
        "intercept('global')",
        "Intercept",
        "Toggle a global intercept: all of the service's cluster traffic goes to your machine.",
    ),
    KeySpec(
        "intercept_personal",
        "I",
        "intercept('personal')",
        "Personal",
        "Toggle a personal intercept: only requests carrying your session header come to you.",
        footer=False,
    ),
    KeySpec("restart", "r", "restart", "Restart", "Restart the selected service."),
    KeySpec(
        "filter",
        "/",
        "filter",
        "Filter",
        "Edit the log filter: text, /regex/, !negation, svc:NAME, level:warn, src:, kind:.",
        priority=True,
    ),
    KeySpec(
        "clear",
        "escape",
        "clear",
        "Clear",
        "Clear the log filter (or leave the filter bar, or close a dialog).",
        footer=False,
    ),
    KeySpec(
        "logs",
        "l",
        "logs",
        "Logs",
        "Show only the selected service's logs (press again to show every service).",
    ),
    KeySpec("shell", "s", "shell", "Shell", "Open a shell in the selected service's pod."),
    KeySpec(
        "forward",
        "f",
        "forward",
        "Forward",
        "Toggle the port-forward of the selected service.",
    ),
    KeySpec(
        "follow",
        "p",
        "follow",
        "Pause",
        "Pause or follow the log stream (new lines are counted while paused).",
        footer=False,
    ),
    KeySpec(
        "next_pane", "tab", "app.focus_next", "Next pane", "Move to the next pane.", footer=False
    ),
    KeySpec(
        "prev_pane",
        "shift+tab",
        "app.focus_previous",
        "Previous pane",
        "Move to the previous pane.",
        footer=False,
        palette=False,
    ),
    KeySpec(
        "detail",
        "enter",
        "detail",
        "Detail",
        "Show the selected item in detail; on an alert, jump to its log line.",
        footer=False,
    ),
    KeySpec("help", "?", "help", "Help", "Show every key and the filter language."),
    KeySpec(
        "palette",
        "ctrl+p",
        "command_palette",
        "Palette",
        "Open the command palette: every action by name.",
        footer=False,
        palette=False,
    ),
    KeySpec("theme", "t", "next_theme", "Theme", "Switch to the next theme.", footer=False),
    KeySpec(
        "quit",
        "q",
        "quit",
        "Quit",
        "Quit: stop the session and undo everything it changed in the cluster.",
    ),
)

KEYS_BY_ID: dict[str, KeySpec] = {spec.id: spec for spec in KEYS}


def textual_key(key: str) -> str:
    """The key name Textual uses for ``key`` as a person writes it ("?" -> "question_mark")."""
    parts = [part.strip() for part in key.split(",")]
    return ",".join(_character_to_key(part) if len(part) == 1 else part for part in parts)


def display_key(key: str) -> str:
    """How a key is written on screen and in docs: "?" stays "?", "escape" becomes "esc"."""
    names = {"escape": "esc", "enter": "enter", "tab": "tab", "shift+tab": "shift+tab"}
    first = key.split(",")[0].strip()
    if first in names:
        return names[first]
    if len(first) == 1:
        return first
    return format_key(textual_key(first))


def resolve_keys(
    overrides: Mapping[str, str] | None,
) -> tuple[dict[str, str], list[str]]:
    """Apply user remappings to the defaults.

    Returns the effective ``{binding id: key}`` for every binding, and one line per problem
    (an unknown binding id, an empty key, or two bindings on one key); a problematic
    override is ignored and the default kept, so a typo never leaves an action without a key.
    """
    keys = {spec.id: spec.key for spec in KEYS}
    problems: list[str] = []
    for binding_id, key in (overrides or {}).items():
        if binding_id not in KEYS_BY_ID:
            known = ", ".join(sorted(KEYS_BY_ID))
            problems.append(f"keys.{binding_id}: no such binding (known: {known})")
            continue
        if not isinstance(key, str) or not key.strip():
            problems.append(f"keys.{binding_id}: needs a key, like ctrl+r")
            continue
        keys[binding_id] = key.strip()
    taken: dict[str, str] = {}
    for spec in KEYS:
        normalized = textual_key(keys[spec.id])
        other = taken.get(normalized)
        if other is not None:
            problems.append(
                f"keys.{spec.id}: {keys[spec.id]!r} is already the key of {other}; "
                f"keeping {spec.key!r}"
            )
            keys[spec.id] = spec.key
            normalized = textual_key(spec.key)
        taken[normalized] = spec.id
    return keys, problems


def textual_bindings(keys: Mapping[str, str] | None = None) -> list[Binding]:
    """The app's ``BINDINGS``: one Binding per KeySpec, with its id so keymaps apply."""
    keys = keys or {}
    return [
        Binding(
            textual_key(keys.get(spec.id, spec.key)),
            spec.action,
            spec.description,
            show=spec.footer,
            key_display=display_key(keys.get(spec.id, spec.key)),
            id=spec.id,
            tooltip=spec.help,
            priority=spec.priority,
        )
        for spec in KEYS
    ]


def markdown_table(keys: Mapping[str, str] | None = None, specs: Iterable[KeySpec] = KEYS) -> str:
    """The bindings as a Markdown table (for the README and the help screen)."""
    keys = keys or {}
    rows = ["| key | id | what it does |", "|---|---|---|"]
    for spec in specs:
        key = display_key(keys.get(spec.id, spec.key)).replace("|", "\\|")
        rows.append(f"| `{key}` | `{spec.id}` | {spec.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m cockpit.ui.bindings > the README's key table
    print(markdown_table(), end="")
