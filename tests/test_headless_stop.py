"""`cockpit up --headless` stops on quit and on SIGTERM even while hot reload is in a storm of
changes (here the service writes a file in its own watched directory each time it starts, so
every start is a change that restarts it); and its own output file in the watched directory
(`cockpit up api --headless > session.jsonl` in the repo) is not a change at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_cli import COCKPIT

CONFIG = """\
services:
  api:
    command: |
      echo starting
      date +%s%N > stamp
      exit 3
    restart: {on_exit: true, backoff_initial: 0.2, backoff_max: 1}
"""


def start_headless(folder: Path, output: Path) -> subprocess.Popen[str]:
    """`cockpit up api --headless > output` in ``folder``, with no cluster to reach."""
    env = {**os.environ, "KUBECONFIG": str(folder / "no-kubeconfig")}
    with output.open("w") as out:
        return subprocess.Popen(
            [str(COCKPIT), "up", "api", "--headless"],
            cwd=folder, env=env, stdin=subprocess.PIPE, stdout=out,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


@pytest.mark.parametrize("how", ["quit", "sigterm"])
def test_headless_stops_while_the_service_keeps_reloading_itself(tmp_path: Path, how: str) -> None:
    (tmp_path / "cockpit.yaml").write_text(CONFIG)
    output = tmp_path / "session.jsonl"
    proc = start_headless(tmp_path, output)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and output.read_text().count('"restarts"') < 40:
            time.sleep(0.1)  # until the storm runs: reloads keep restarting the service
        assert "api: stamp changed; reloading" in output.read_text()
        assert "hot reload stopped" not in output.read_text()  # a reload mid-start is no crash
        assert proc.stdin is not None
        if how == "quit":
            proc.stdin.write('{"cmd": "quit"}\n')
            proc.stdin.flush()
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert events[-1] == {
        "key": "cleanup", "text": events[-1]["text"], "level": "info", "type": "Notice",
    }  # fmt: skip
    assert events[-1]["text"].startswith("done: session ")


TICKING = """\
services:
  api:
    command: |
      echo starting
      while true; do echo tick; sleep 0.02; done
"""


def test_its_own_output_file_in_the_watched_directory_is_not_a_change(tmp_path: Path) -> None:
    (tmp_path / "cockpit.yaml").write_text(TICKING)
    (tmp_path / "app.py").write_text("print('v1')\n")
    output = tmp_path / "session.jsonl"
    proc = start_headless(tmp_path, output)

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in output.read_text().splitlines() if line.endswith("}")]

    def wait_for(what: str, count: int = 1) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and output.read_text().count(what) < count:
            time.sleep(0.05)
        assert output.read_text().count(what) >= count, what

    try:
        # 100 lines written to session.jsonl while the watcher runs: not one reload.
        wait_for('"state": "watching"')
        wait_for('"text": "tick"', 100)
        assert "changed; reloading" not in output.read_text()
        starts = [e for e in events() if e.get("status") == "running"]
        assert len(starts) == 1
        # ...while a save of the service's own file still reloads it.
        (tmp_path / "app.py").write_text("print('v2')\n")
        wait_for("api: app.py changed; reloading")
        wait_for('"status": "running"', 2)
        assert "session.jsonl" not in "".join(
            str(e.get("text", "")) for e in events() if e.get("type") == "LogLine"
        )
        assert proc.stdin is not None
        proc.stdin.write('{"cmd": "quit"}\n')
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
