"""`cockpit up` in a real terminal on the real cluster: `f` stops and restarts a service's
port-forward, `q` shows the engine's cleanup steps and exits 0."""

from __future__ import annotations

import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.e2e.forward.test_forward_toggle import free_port, shop_config
from tests.ui.test_tmux import Terminal, terminal  # noqa: F401 - the fixture

pytestmark = [pytest.mark.tmux, pytest.mark.cluster]

COCKPIT = Path(sys.executable).parent / "cockpit"


def forward_line(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f"↔ {name}" in line), "")


def wait_forward(term: Terminal, name: str, state: str, within: float = 60.0) -> str:
    deadline = time.monotonic() + within
    line = ""
    while time.monotonic() < deadline:
        line = forward_line(term.screen(), name)
        if state in line:
            return line
        time.sleep(0.1)
    raise AssertionError(f"{name} not {state} after {within}s: {line!r}\n{term.screen()}")


def test_f_toggles_a_forward_and_q_shows_the_cleanup_steps(
    terminal: Terminal,  # noqa: F811 - the fixture
    cluster: Cluster,
    shared_shop: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "cockpit.yaml").write_text(shop_config(shared_shop, port))
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "TERM": "tmux-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TZ": "UTC",
    }
    terminal.start(f"sh -c 'cd {tmp_path} && exec {COCKPIT} up api'", 160, 50, env)
    terminal.wait_for("Services (3)", "Port-forwards (2)", within=90)
    line = wait_forward(terminal, "store:8080", "listening")
    address = re.search(r"(127\.0\.\d+\.\d+):(\d+) ↔ store:8080", line)
    assert address is not None, line
    host, fwd_port = address.group(1), int(address.group(2))

    # The services pane has the focus: api (local) first, then store.
    terminal.keys("Down")
    terminal.keys("f")
    wait_forward(terminal, "store:8080", "stopped")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, fwd_port), 5):
        pass
    terminal.keys("f")
    again = wait_forward(terminal, "store:8080", "listening")
    assert f"{host}:{fwd_port} ↔ store:8080" in again  # the same address
    with urllib.request.urlopen(f"http://{host}:{fwd_port}/", timeout=20) as resp:
        assert resp.status == 200

    terminal.keys("q")
    screens: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        screens.append(terminal.screen())
        if "COCKPIT-EXITED-" in screens[-1]:
            break
        time.sleep(0.05)
    assert "COCKPIT-EXITED-0" in screens[-1], screens[-1]
    progress = [s for s in screens if "Cleaning up" in s]
    assert progress, "the quit screen never showed"
    assert any("stopping the local process api" in s for s in progress), progress[-1]
    with socket.socket() as s:  # the local process went with the session
        assert s.connect_ex(("127.0.0.1", port)) != 0
