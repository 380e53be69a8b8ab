"""Layering is a rule with a test: imports only point down (core <- adapters <- engine <- ui)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "cockpit"

# layer -> modules (first-party or third-party) it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": (
        "cockpit.adapters",
        "cockpit.engine",
        "cockpit.ui",
        "cockpit.cli",
        "cockpit.agent",
        "asyncio",
        "textual",
        "kubernetes",
        "asyncssh",
        "watchfiles",
        "subprocess",
        "socket",
    ),
    "adapters": ("cockpit.engine", "cockpit.ui", "cockpit.cli", "textual"),
    "engine": ("cockpit.ui", "cockpit.cli", "textual"),
    "ui": ("cockpit.adapters", "cockpit.cli", "kubernetes", "asyncssh"),
    "agent": ("cockpit.engine", "cockpit.ui", "cockpit.cli", "cockpit.adapters", "textual"),
}


def imported_modules(path: Path, root: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # relative import: resolve against the file's package
            parts = path.relative_to(root.parent).with_suffix("").parts[: -node.level]
            found.add(".".join([*parts, node.module] if node.module else parts))
    return found


def violations(layer: str, root: Path = PKG) -> list[str]:
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        for mod in sorted(imported_modules(path, root)):
            for forbidden in FORBIDDEN[layer]:
                if mod == forbidden or mod.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(root.parent)} imports {mod}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer: str) -> None:
    assert violations(layer) == []


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "cockpit"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text(
        "from cockpit.engine import session\nimport asyncio\nfrom ..ui import app\n"
    )
    assert violations("core", fake) == [
        "cockpit/core/bad.py imports asyncio",
        "cockpit/core/bad.py imports cockpit.engine",
        "cockpit/core/bad.py imports cockpit.ui",
    ]
