"""The cockpit in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen.

Each test starts its own tmux server (a unique ``-L`` socket) and kills only that server.
The app runs over the scripted engine (tests/ui/run_fake.py): these tests are about what
the terminal shows, the engine is tested elsewhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

RUNNER = Path(__file__).resolve().parent / "run_fake.py"


class Terminal:
    """One tmux server with one window running the cockpit."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def start(self, command: str, width: int, height: int, env: dict[str, str]) -> None:
        exports = " ".join(f"{key}={value}" for key, value in env.items())
        # After the app exits the pane keeps its exit code on screen for the test to read.
        # COLUMNS/LINES from the test runner would pin the app's size: the pane decides.
        shell = f"env -u COLUMNS -u LINES {exports} {command}; echo COCKPIT-EXITED-$?; sleep 600"
        subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                str(width),
                "-y",
                str(height),
                shell,
            ],
            check=True,
            timeout=10,
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-x", str(width), "-y", str(height))

    def wait_for(self, *texts: str, within: float = 15.0) -> str:
        deadline = time.monotonic() + within
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.1)
        missing = [text for text in texts if text not in screen]
        raise AssertionError(f"not on screen after {within}s: {missing}\n{screen}")

    def wait_gone(self, text: str, within: float = 10.0) -> str:
        deadline = time.monotonic() + within
        screen = self.screen()
        while text in screen and time.monotonic() < deadline:
            time.sleep(0.1)
            screen = self.screen()
        assert text not in screen, f"still on screen after {within}s: {text!r}\n{screen}"
        return screen

    def kill(self) -> None:
        socket_path = self.tmux("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if socket_path:  # a killed server can leave its socket file behind
            Path(socket_path).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(f"cockpit-test-{os.getpid()}-{secrets.token_hex(4)}")
    yield term
    term.kill()


def _start(terminal: Terminal, tmp_path: Path, width: int, height: int, *args: str) -> None:
    env = {
        "COCKPIT_FAKE_STOPPED": str(tmp_path / "stopped"),
        "TERM": "tmux-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TZ": "UTC",
    }
    command = " ".join([sys.executable, str(RUNNER), "--rate", "2", *args])
    terminal.start(command, width, height, env)


def test_a_session_on_80x24_with_keys_and_clean_quit(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 80, 24)
    screen = terminal.wait_for("kind-dev/shop", "Services (3)", "Alerts (2)", "Logs ·", "q Quit")
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert "api" in screen and "store" in screen and "CrashLoop" not in screen  # compact

    # the filter bar: a bad query is explained, a good one applied
    terminal.keys("/")
    terminal.type("level:loud")
    terminal.wait_for("unknown level 'loud'")
    terminal.keys("Escape")  # clears the bar
    terminal.wait_gone("unknown level")
    terminal.keys("/")
    terminal.type("ZeroDivision")
    terminal.keys("Enter")
    terminal.wait_for("1 of ")
    terminal.keys("Escape")
    terminal.wait_gone("1 of ")

    # a refused restart: the engine's reason shows in a notification and in the alerts
    terminal.keys("BTab")  # shift+tab: from the logs back to the services table
    terminal.keys("Down")
    terminal.keys("r")
    terminal.wait_for("restart denied")
    terminal.wait_for("Alerts (3)")

    # help, then back
    terminal.keys("?")
    terminal.wait_for("Help", "intercept_personal")
    terminal.keys("Escape")
    terminal.wait_gone("intercept_personal")

    # q: cleanup progress on screen, then a clean exit
    terminal.keys("q")
    terminal.wait_for("Cleaning up")
    terminal.wait_for("COCKPIT-EXITED-0", within=20)


def test_a_big_terminal_shows_every_pane_framed(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 160, 50)
    screen = terminal.wait_for(
        "Services (3)", "Port-forwards (2)", "Sync", "Alerts (2)", "CrashLoopBackOff"
    )
    assert "╭─ Services (3)" in screen
    assert "127.0.0.2:8080 ↔ web:8080" in screen
    assert "api ● connected" in screen


def test_resize_to_too_small_and_back(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 120, 40)
    terminal.wait_for("Services (3)")
    terminal.resize(40, 10)
    terminal.wait_for("Terminal too small: 40x10")
    terminal.resize(100, 30)
    terminal.wait_for("Services (3)")
    terminal.wait_gone("Terminal too small")
    terminal.keys("q")
    terminal.wait_for("COCKPIT-EXITED-0", within=20)


def test_pause_shows_new_line_count_and_follow_resumes(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 120, 40, "--rate", "50")
    terminal.wait_for("following")
    terminal.keys("p")
    screen = terminal.wait_for("⏸ paused +")
    assert "new" in screen
    terminal.keys("p")
    terminal.wait_for("following")


def test_remapped_key_from_config_works_in_the_terminal(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 100, 30, "--key", "help=h")
    terminal.wait_for("Services (3)")
    terminal.keys("h")
    terminal.wait_for("intercept_personal")
    terminal.keys("Escape")
    terminal.keys("?")  # no longer the help key: nothing opens
    time.sleep(0.5)
    assert "intercept_personal" not in terminal.screen()


def test_closing_the_terminal_still_stops_the_session(terminal: Terminal, tmp_path: Path) -> None:
    _start(terminal, tmp_path, 100, 30)
    terminal.wait_for("Services (3)")
    terminal.kill()  # the pane's processes get SIGHUP, as when an SSH connection drops
    marker = tmp_path / "stopped"
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the engine was not stopped after the terminal went away"
