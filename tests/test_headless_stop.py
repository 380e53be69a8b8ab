"""`cockpit up --headless` stops on quit and on SIGTERM even while hot reload is in a storm of
changes: here its own output file sits in the watched directory, so every line it prints is a
change that restarts the service (`cockpit up api --headless > session.jsonl` in the repo)."""

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
      exit 3
    restart: {on_exit: true, backoff_initial: 0.2, backoff_max: 1}
"""


@pytest.mark.parametrize("how", ["quit", "sigterm"])
def test_headless_stops_while_its_own_output_keeps_reloading_the_service(
    tmp_path: Path, how: str
) -> None:
    (tmp_path / "cockpit.yaml").write_text(CONFIG)
    output = tmp_path / "session.jsonl"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    with output.open("w") as out:
        proc = subprocess.Popen(
            [str(COCKPIT), "up", "api", "--headless"],
            cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=out,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and output.read_text().count('"restarts"') < 40:
            time.sleep(0.1)  # until the storm runs: reloads keep restarting the service
        assert "api: session.jsonl changed; reloading" in output.read_text()
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
