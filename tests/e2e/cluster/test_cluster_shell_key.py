"""The UI's shell key on the real cluster, in a real terminal: `s` on a cluster service hands the
terminal to a TTY in one of its pods, and exiting that shell gives the cockpit screen back."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster, write_shop_config
from tests.e2e.cluster.cluster_env import pod_names
from tests.ui.test_tmux import Terminal

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal(f"cockpit-shell-{os.getpid()}-{secrets.token_hex(4)}")
    yield term
    term.kill()


def test_shell_key_opens_a_pod_shell_and_gives_the_screen_back(
    cluster: Cluster, shop: str, terminal: Terminal, tmp_path: Path
) -> None:
    write_shop_config(tmp_path, shop)
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "TERM": "tmux-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "SHELL": "/bin/sh",
    }
    command = f"sh -c 'cd {tmp_path} && exec {sys.executable} -m cockpit up api'"
    terminal.start(command, 120, 36, env)
    terminal.wait_for("Services (3)", "store", "web", within=90)
    # the services table lists the local service first, then the others by name: api, store
    terminal.wait_for("2/2", within=60)  # store's pods are ready
    terminal.keys("Down")
    terminal.keys("s")
    screen = terminal.wait_for("exit the shell to return", within=30)
    assert "shell store" in screen, screen
    # the prompt may name the pod too: mark the command's own output
    terminal.type("hostname | sed 's/^/HOST=/'")
    terminal.keys("Enter")
    screen = terminal.wait_for("HOST=store-", within=30)
    pods = pod_names(cluster.api(), shop, "store")
    assert any(f"HOST={pod}" in screen for pod in pods), (pods, screen)
    terminal.type("exit")
    terminal.keys("Enter")
    terminal.wait_for("Services (3)", within=30)
    terminal.wait_gone("exit the shell to return", within=30)
    terminal.keys("q")
    terminal.wait_for("COCKPIT-EXITED-0", within=60)
