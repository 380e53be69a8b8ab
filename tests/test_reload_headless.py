"""Hot reload through the real `cockpit up --headless`: an edit is served by the new code, and
the reload's progress is in the JSON stream as SyncChanged."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.engine.test_reloader import get, server_app
from tests.test_cli import Headless, alive


def test_an_edit_reloads_and_the_stream_says_so(tmp_path: Path) -> None:
    app, port, yaml = server_app(tmp_path, "    watch: {ignore: ['*.log']}\n")
    (tmp_path / "cockpit.yaml").write_text(yaml)
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    run = Headless(["up", "api", "--headless"], tmp_path, env)
    try:
        first = run.until(lambda o: o["type"] == "ProcessChanged" and o["status"] == "ready")
        watching = run.until(lambda o: o["type"] == "SyncChanged")
        assert watching["name"] == "api (reload)"
        assert (watching["state"], watching["paths"]) == ("watching", ["."])
        assert get(port) == "one"

        (app / "debug.log").write_text("ignored\n")  # matches watch.ignore: no reload
        (app / "message.py").write_text('MESSAGE = "second"\n')
        done = run.until(
            lambda o: o["type"] == "SyncChanged" and o["state"] == "in-sync", within=30
        )
        assert (done["files"], done["bytes"]) == (1, len('MESSAGE = "second"\n'))
        assert done["duration"] > 0 and done["last_sync"] <= time.time()
        states = [o["state"] for o in run.seen if o["type"] == "SyncChanged"]
        assert states == ["watching", "pending", "syncing", "in-sync"]
        assert get(port) == "second"
        said = [o["text"] for o in run.seen if o["type"] == "LogLine"]
        assert "api: message.py changed; reloading" in said
        second = run.until(lambda o: o["type"] == "ProcessChanged" and o["restarts"] == 1)
        assert second["pid"] != first["pid"] and not alive(first["pid"])

        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    assert all(not alive(pid) for pid in run.pids())
