"""Benchmark: the cockpit idling in a real terminal on a namespace with 50 Services.

Goal: CPU <= 1 % (process CPU time / wall time) and RSS <= 150 MB over 30 s after settling.
Prints human lines, then one JSON object as the last line. ``--seconds 10`` for a quick run.

Setup: a namespace of its own with one Deployment `api` (2 pause pods) and 50 Services
(`api`, `svc-01` .. `svc-49`) that all select those pods.
Measured ("value"): `cockpit up api` (the real engine on the real cluster: the live model of
50 services, 49 port-forward listeners, pod log follows, the local `api` a `sleep` process)
in a real terminal (tmux, 160x50). Once "Services (50)" is on screen and 5 s more have
passed, the cockpit process's CPU seconds (user + system, every thread, not its children)
are read from /proc before and after ``--seconds`` of idling; RSS at the end.
Baseline: a bare Textual App showing one Static widget, in the same terminal size, measured
the same way. ratio = our CPU % / the bare app's CPU %; the JSON also has ``ratio_to_goal``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchenv as benchenv  # noqa: E402
from _uibench import cpu_seconds, rss_mb  # noqa: E402

SERVICES = 50
GOAL_CPU_PERCENT = 1.0
GOAL_RSS_MB = 150.0
SETTLE_SECONDS = 5.0
COCKPIT = Path(sys.executable).parent / "cockpit"

BARE_APP = """
from textual.app import App
from textual.widgets import Static

class Bare(App[None]):
    def compose(self):
        yield Static("still " + "idle")

Bare().run()
"""


def create_namespace(api: object, namespace: str) -> None:
    from kubernetes import client

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": namespace, "labels": {"cockpit-bench": "1"}}})
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(namespace).items:
        if time.monotonic() > deadline:
            sys.exit("bench/ui_idle: the namespace got no ServiceAccount")
        time.sleep(0.2)
    labels = {"app": "api"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "api", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {
                                "name": "api",
                                "image": "docker.io/cockpit/pause:dev",
                                "imagePullPolicy": "IfNotPresent",
                                "ports": [{"containerPort": 8080, "name": "http"}],
                            }
                        ],
                    },
                },
            },
        },
    )
    for n in range(SERVICES):
        name = "api" if n == 0 else f"svc-{n:02d}"
        core.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": "http"}]},
            },
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dep = apps.read_namespaced_deployment(name="api", namespace=namespace)
        if (dep.status.available_replicas or 0) == 2:
            return
        time.sleep(0.5)
    sys.exit(f"bench/ui_idle: the pods in {namespace} did not become available")


class Terminal:
    """A tmux server of our own (unique socket) running one command in a 160x50 window."""

    def __init__(self) -> None:
        self.socket = f"cockpit-bench-{os.getpid()}-{secrets.token_hex(3)}"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def start(self, argv: list[str], cwd: str, env: dict[str, str]) -> int:
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        command = f"cd {cwd} && exec env -u COLUMNS -u LINES {exports} {' '.join(argv)}"
        subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
             "-x", "160", "-y", "50", command],
            check=True, timeout=10,
        )  # fmt: skip
        return int(self.tmux("display-message", "-p", "#{pane_pid}").strip())

    def wait_for(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if text in self.tmux("capture-pane", "-p"):
                return
            time.sleep(0.2)
        screen = self.tmux("capture-pane", "-p")
        self.kill()
        sys.exit(f"bench/ui_idle: {text!r} not on screen after {within:.0f} s:\n{screen}")

    def kill(self) -> None:
        path = self.tmux("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        if path:
            Path(path).unlink(missing_ok=True)


def idle(terminal: Terminal, pid: int, seconds: float) -> tuple[float, float]:
    """(CPU % over ``seconds`` of wall time, RSS MB at the end) of ``pid``."""
    time.sleep(SETTLE_SECONDS)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    return 100 * (cpu1 - cpu0) / (wall1 - wall0), rss_mb(pid)


def wait_exit(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/ui_idle: tmux is not installed")
    from kubernetes import client, config

    kubeconfig = benchenv.kubeconfig("ui_idle")
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    api = client.ApiClient(cfg)
    namespace = f"bench-ui-idle-{secrets.token_hex(3)}"
    base_env = {"TERM": "tmux-256color", "TZ": "UTC"}
    try:
        create_namespace(api, namespace)
        print(f"{namespace}: {SERVICES} Services over one Deployment's 2 pods, ready")
        with tempfile.TemporaryDirectory() as workdir:
            # Baseline: the bare app, same terminal, same clock.
            bare = Terminal()
            try:
                Path(workdir, "bare.py").write_text(BARE_APP)
                pid = bare.start([sys.executable, "bare.py"], workdir, base_env)
                bare.wait_for("still idle", 30)
                bare_cpu, bare_rss = idle(bare, pid, args.seconds)
            finally:
                bare.kill()
            print(f"bare Textual app, one Static: CPU {bare_cpu:.2f} %, RSS {bare_rss:.1f} MB")

            Path(workdir, "cockpit.yaml").write_text(
                f"namespace: {namespace}\nservices:\n  api:\n    command: [sleep, '86400']\n"
            )
            env = {
                **base_env,
                "KUBECONFIG": kubeconfig,
                "XDG_CONFIG_HOME": f"{workdir}/config",
                "XDG_STATE_HOME": f"{workdir}/state",
            }
            ours = Terminal()
            try:
                pid = ours.start([str(COCKPIT), "up", "api"], workdir, env)
                ours.wait_for(f"Services ({SERVICES})", 90)
                cpu, rss = idle(ours, pid, args.seconds)
                ours.tmux("send-keys", "q")
                clean = wait_exit(pid, 60)
            finally:
                ours.kill()
    finally:
        client.CoreV1Api(api).delete_namespace(namespace, _preload_content=False)
    print(
        f"cockpit up, {SERVICES} services, idle {args.seconds:.0f} s: CPU {cpu:.2f} %, "
        f"RSS {rss:.1f} MB (quit {'cleanly' if clean else 'NOT within 60 s'})"
    )
    passed = cpu <= GOAL_CPU_PERCENT and rss <= GOAL_RSS_MB
    print(
        json.dumps(
            {
                "bench": "ui_idle",
                "value": round(cpu, 2),
                "baseline": round(bare_cpu, 2),
                "unit": "% CPU",
                "ratio": round(cpu / bare_cpu, 2) if bare_cpu > 0 else None,
                "ratio_to_goal": round(cpu / GOAL_CPU_PERCENT, 2),
                "goal": "<= 1 % CPU, RSS <= 150 MB",
                "pass": passed,
                "rss_mb": round(rss, 1),
                "baseline_rss_mb": round(bare_rss, 1),
                "seconds": args.seconds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
