"""Every benchmark script loads: its imports resolve (``make bench`` must not meet a typo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))

LOAD = """
import importlib.util, sys
path = sys.argv[1]
sys.path.insert(0, path.rsplit("/", 1)[0])  # as `python bench/NAME.py` has it
spec = importlib.util.spec_from_file_location("bench_script", path)
module = importlib.util.module_from_spec(spec)
sys.modules["bench_script"] = module
spec.loader.exec_module(module)  # top level only: main() runs under __main__
assert callable(getattr(module, "main", None)), f"{path} has no main()"
"""


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_loads(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
