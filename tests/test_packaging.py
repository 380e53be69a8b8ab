"""The wheel `pip install .` builds: the themes ride inside it, with the package's type marker
and the `cockpit` console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_themes_and_the_cockpit_command(tmp_path: Path) -> None:
    # What `pip install .` builds; the build backend comes from the dev environment (offline).
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("cockpit_k8s-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    themes = sorted(p.name for p in (REPO / "themes").iterdir() if p.suffix in (".yaml", ".yml"))
    assert themes, "the repository's themes/ is empty"
    assert {f"cockpit/themes/{name}" for name in themes} <= names
    assert {"cockpit/py.typed", "cockpit/cli.py", "cockpit/core/config.py"} <= names
    assert "cockpit = cockpit.cli:main" in scripts
    assert not any(name.startswith("tests/") for name in names)
