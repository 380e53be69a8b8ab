"""The real `cockpit` command in a subprocess: help, schema, init, validate, bad input, headless."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COCKPIT = REPO / ".venv" / "bin" / "cockpit"
SHOP = REPO / "examples" / "shop" / "cockpit.yaml"
PY = sys.executable


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig of the developer's leaks in."""
    return {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}


def cockpit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COCKPIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def test_version_and_help(tmp_path: Path, env: dict[str, str]) -> None:
    version = cockpit("--version", cwd=tmp_path, env=env)
    assert (version.returncode, version.stdout.strip()) == (0, "cockpit 0.1.0")
    helped = cockpit("--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0
    for command in ("up", "validate", "schema", "init"):
        assert command in helped.stdout
    up_help = cockpit("up", "--help", cwd=tmp_path, env=env)
    assert "--headless" in up_help.stdout and "--config" in up_help.stdout


def test_schema_is_a_json_schema_the_example_passes(tmp_path: Path, env: dict[str, str]) -> None:
    result = cockpit("schema", cwd=tmp_path, env=env)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load(SHOP.read_text()))
    errors = list(validator.iter_errors({"services": {"api": {"port": "abc", "bogus": 1}}}))
    assert len(errors) == 2


def test_init_then_validate(tmp_path: Path, env: dict[str, str]) -> None:
    made = cockpit(
        "init", "--service", "api", "--command", "python app.py", "--port", "8080",
        "--remote", "web", "--namespace", "shop", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == (
        "wrote cockpit.yaml: api runs `python app.py`; check it with `cockpit validate`"
    )
    checked = cockpit("validate", cwd=tmp_path / ".", env=env)
    assert checked.returncode == 0
    assert checked.stdout.strip() == (
        "cockpit.yaml: ok; services: api, web; can run locally: api; namespace: shop"
    )
    again = cockpit("init", cwd=tmp_path, env=env)
    assert again.returncode == 2
    assert again.stderr == (
        "cockpit: error: cockpit.yaml already exists (pass --force to overwrite it)\n"
    )
    forced = cockpit("init", "--force", "--service", "web", cwd=tmp_path, env=env)
    assert forced.returncode == 0
    assert "  web:" in (tmp_path / "cockpit.yaml").read_text()


def test_validate_lists_every_problem(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "cockpit.yaml").write_text("services:\n  api:\n    port: x\n    prot: 1\n")
    result = cockpit("validate", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "cockpit: error: cockpit.yaml:3: services.api.port: expected an integer, got 'x'",
        "cockpit: error: cockpit.yaml:4: services.api: unknown key 'prot'; did you mean 'port'?",
    ]


BAD_INPUTS = {
    "malformed yaml": (
        "services:\n  api: [\n",
        "cockpit.yaml:3: malformed YAML: expected the node content, but found '<stream end>'",
        2,
    ),
    "unknown key": (
        "services:\n  api:\n    command: x\n    comand: y\n",
        "cockpit.yaml:4: services.api: unknown key 'comand'; did you mean 'command'?",
        2,
    ),
    "wrong type": (
        "services:\n  api:\n    command: x\n    port: abc\n",
        "cockpit.yaml:4: services.api.port: expected an integer, got 'abc' (and 0 more problems)",
        2,
    ),
    "missing command": (
        "services:\n  api:\n    port: 8080\n",
        "cockpit.yaml:2: services.api.command: missing; cockpit needs a command to run api "
        "locally (e.g. command: python app.py)",
        2,
    ),
    "unknown service": (
        "services:\n  web:\n    command: x\n",
        "cockpit.yaml:1: no service 'api' (known: web)",
        2,
    ),
    "missing cwd": (
        "services:\n  api:\n    command: x\n    cwd: nowhere\n",
        "api: working directory {dir}/nowhere does not exist",
        3,
    ),
    "failing before_start hook": (
        "services:\n  api:\n    command: x\n"
        "    hooks: {before_start: ['echo generating; exit 4']}\n",
        "api: before_start hook `echo generating; exit 4` exited with code 4 (generating)",
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_a_nonzero_exit(
    case: str, tmp_path: Path, env: dict[str, str]
) -> None:
    text, expected, code = BAD_INPUTS[case]
    expected = expected.replace(" (and 0 more problems)", "")
    (tmp_path / "cockpit.yaml").write_text(text)
    result = cockpit("up", "api", "--headless", cwd=tmp_path, env=env)
    assert result.returncode == code
    assert result.stderr == f"cockpit: error: {expected.format(dir=tmp_path)}\n"
    assert "Traceback" not in result.stderr + result.stdout


def test_a_port_in_use_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (tmp_path / "cockpit.yaml").write_text(
            f"services:\n  api:\n    command: sleep 30\n    port: {port}\n"
        )
        result = cockpit("up", "api", "--headless", cwd=tmp_path, env=env)
    assert result.returncode == 3
    assert result.stderr == (
        f"cockpit: error: api: port {port} is already in use (stop whatever listens there, "
        "or change the service's port in cockpit.yaml)\n"
    )


def test_no_config_anywhere_and_debug_shows_the_traceback(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = cockpit("up", "api", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"cockpit: error: no cockpit.yaml in {tmp_path}")
    assert len(result.stderr.splitlines()) == 1
    debug = cockpit("up", "api", "--debug", cwd=tmp_path, env=env)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("cockpit: error: no cockpit.yaml")


# -- headless up with a real local process -----------------------------------------------------


class Headless:
    """`cockpit up SERVICE --headless` running; its stdout read as JSON lines."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], argv: list[str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            argv or [str(COCKPIT), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, match: Callable[[dict[str, Any]], bool], within: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + within
        for obj in self.seen:
            if match(obj):
                return obj
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"not seen in time; last: {self.seen[-5:]}") from None
            if line is None:
                raise AssertionError(
                    f"stdout ended; stderr: {self.stderr()}; last: {self.seen[-5:]}"
                )
            self.raw.append(line)
            obj = json.loads(line)  # every line is one JSON object
            self.seen.append(obj)
            if match(obj):
                return obj

    def send(self, obj: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def finish(self, within: float = 20) -> int:
        """Wait for the exit; the rest of stdout is read (and must be JSON lines too)."""
        code = self.proc.wait(within)
        while (line := self._lines.get(timeout=5)) is not None:
            self.raw.append(line)
            self.seen.append(json.loads(line))
        return code

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else "(running)"

    def pids(self) -> set[int]:
        return {o["pid"] for o in self.seen if o.get("type") == "ProcessChanged" and o["pid"]}


@pytest.fixture
def headless(env: dict[str, str]) -> Iterator[Callable[..., Headless]]:
    runs: list[Headless] = []

    def start(*args: str, cwd: Path) -> Headless:
        run = Headless(list(args), cwd, env)
        runs.append(run)
        return run

    yield start
    for run in runs:  # a failed test must not leave cockpit (or its children) running
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def web_server_config(tmp_path: Path, port: int, extra: str = "") -> None:
    (tmp_path / "cockpit.yaml").write_text(
        "namespace: demo\n"
        "services:\n"
        "  web:\n"
        f"    command: [{PY}, -m, http.server, '{port}', --bind, 127.0.0.1]\n"
        f"    port: {port}\n"
        "    stop_timeout: 5\n" + extra
    )


def test_headless_up_restart_and_sigterm(tmp_path: Path, headless: Callable[..., Headless]) -> None:
    port = free_port()
    web_server_config(tmp_path, port)
    run = headless("up", "web", "--headless", cwd=tmp_path)
    info = run.until(lambda o: o["type"] == "SessionInfo")
    assert (info["service"], info["namespace"], info["context"]) == ("web", "demo", "")
    first = run.until(lambda o: o["type"] == "ProcessChanged" and o["status"] == "ready")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.0 200")
    run.until(lambda o: o["type"] == "LogLine" and '"GET / HTTP/1.0" 200' in o["text"])
    log = next(o for o in run.seen if o["type"] == "LogLine" and "GET /" in o["text"])
    assert (log["service"], log["stream"], log["kind"]) == ("web", "stderr", "local")
    assert log["seq"] > 0 and log["ts"] > 0

    run.send({"cmd": "restart", "id": "r1"})
    result = run.until(lambda o: o["type"] == "CommandResult")
    assert result["ok"] is True and result["request_id"] == "r1"
    second = run.until(
        lambda o: o["type"] == "ProcessChanged" and o["status"] == "ready" and o["restarts"] == 1
    )
    assert second["pid"] != first["pid"]
    assert not alive(first["pid"])

    run.send({"cmd": "intercept", "id": "i1"})
    refused = run.until(lambda o: o["type"] == "CommandResult" and o["request_id"] == "i1")
    # No cluster here (no kubeconfig): refused with a reason, never a pretended success.
    assert refused["ok"] is False and refused["message"] and "\n" not in refused["message"]
    run.send("this is not json")
    bad = run.until(
        lambda o: o["type"] == "CommandResult" and o["message"].startswith("not a JSON")
    )
    assert bad["ok"] is False

    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    assert run.stderr() == ""
    stopped = [o for o in run.seen if o["type"] == "ProcessChanged"][-1]
    assert stopped["status"] == "stopped"
    assert all(not alive(pid) for pid in run.pids())
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", port))


def test_headless_sigint_and_a_child_that_forks(
    tmp_path: Path, headless: Callable[..., Headless]
) -> None:
    (tmp_path / "cockpit.yaml").write_text(
        "services:\n  api:\n    command: 'sleep 300 & echo child $!; wait'\n    stop_timeout: 2\n"
    )
    run = headless("up", "api", "--headless", cwd=tmp_path)
    child = int(
        run.until(lambda o: o["type"] == "LogLine" and o["text"].startswith("child"))[
            "text"
        ].split()[1]
    )
    assert alive(child)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert not alive(child)
    assert all(not alive(pid) for pid in run.pids())


def test_headless_quit_command_and_an_exit_alert(
    tmp_path: Path, headless: Callable[..., Headless]
) -> None:
    (tmp_path / "cockpit.yaml").write_text(
        "services:\n  api:\n    command: 'echo starting; echo fatal: no db >&2; exit 5'\n"
    )
    run = headless("up", "api", "--headless", cwd=tmp_path)
    alert = run.until(lambda o: o["type"] == "Alert" and o["key"] == "process-exit:api")
    assert alert["title"] == "api exited with code 5"
    assert alert["detail"] == "last 2 lines:\nstarting\nfatal: no db"
    assert alert["level"] == "error"
    run.send({"cmd": "quit", "id": "q"})
    assert run.until(lambda o: o["type"] == "CommandResult")["ok"] is True
    assert run.finish() == 0


def test_up_without_headless_falls_back_when_there_is_no_ui(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "cockpit.yaml").write_text("services:\n  api:\n    command: sleep 30\n")
    # The same entry point, in a build whose UI module is missing.
    code = "import sys, cockpit.cli as c; c.UI_MODULE = 'cockpit.ui.missing'; sys.exit(c.main())"
    run = Headless([], tmp_path, env, argv=[PY, "-c", code, "up", "api"])
    try:
        run.until(lambda o: o["type"] == "ProcessChanged" and o["status"] == "running")
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
        assert run.stderr() == (
            "cockpit: the terminal UI is not part of this build; running headless\n"
        )
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_headless_filter_command_narrows_the_printed_lines(
    tmp_path: Path, headless: Callable[..., Headless]
) -> None:
    loop = (
        "import itertools, sys, time\n"
        "for n in itertools.count():\n"
        "    print(f'info {n}'); print(f'ERROR boom {n}'); sys.stdout.flush(); time.sleep(0.02)\n"
    )
    (tmp_path / "cockpit.yaml").write_text(
        f"services:\n  api:\n    command: {json.dumps([PY, '-c', loop])}\n"
    )
    run = headless("up", "api", "--headless", cwd=tmp_path)
    run.until(lambda o: o["type"] == "LogLine" and o["text"].startswith("info"))
    run.send({"cmd": "filter", "query": "level:error", "id": "f"})
    result = run.until(lambda o: o["type"] == "CommandResult")
    assert result["ok"] is True and result["message"] == "filter: level:error"
    after = len(run.seen)
    run.until(lambda o: o["type"] == "LogLine" and o["text"] == "ERROR boom 60", within=30)
    shown = [o for o in run.seen[after:] if o["type"] == "LogLine"]
    assert len(shown) >= 5
    assert all(o["level"] == "error" and o["text"].startswith("ERROR boom") for o in shown)
    run.send({"cmd": "filter", "query": "/(/", "id": "bad"})
    bad = run.until(lambda o: o["type"] == "CommandResult" and o["request_id"] == "bad")
    assert bad["ok"] is False and bad["message"].startswith("filter: bad /regex/")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0
