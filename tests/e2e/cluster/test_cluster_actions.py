"""Acting on remote services on the real cluster: rollout restart and single-pod restart with
their progress reported, and ``cockpit shell`` as a real terminal (pty): TTY, resize, exit code."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from kubernetes import client

from cockpit.adapters.kube import RESTARTED_AT, Kube
from cockpit.engine.cluster import ClusterWatcher
from cockpit.errors import NotFoundError, UsageError
from tests.conftest import Cluster
from tests.e2e.cluster.cluster_env import (
    COCKPIT,
    Recorder,
    deploy,
    pod_names,
    python_deployment,
    running,
    service_for,
)

pytestmark = pytest.mark.cluster

SLEEPER = "import time\nwhile True: time.sleep(3600)"


async def test_restart_rolls_every_pod_and_reports_until_done(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    deploy(
        api, namespace, service_for("box"), python_deployment("box", SLEEPER, replicas=2, grace=1)
    )
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, ["box"], rec.publish)
    async with running(watcher):
        await watcher.wait_for(lambda: watcher.views["box"].ready == 2, 60)
        before = set(watcher.views["box"].pods)
        message = await watcher.restart("box", within=90)
        assert message.startswith("restarted box in ")
        notices = rec.notices("restart:box")
        assert notices[0] == "restarting box: rollout started"
        assert notices[-1] == message
        assert any("new pods" in n or "old pod" in n for n in notices[1:-1]), notices
        after = set(watcher.views["box"].pods)
        assert len(after) == 2 and not after & before
        assert watcher.views["box"].ready == 2
        deployment = client.AppsV1Api(api).read_namespaced_deployment("box", namespace)
        assert RESTARTED_AT in deployment.spec.template.metadata.annotations


async def test_deleting_one_pod_reports_its_replacement(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    deploy(api, namespace, service_for("box"), python_deployment("box", SLEEPER, grace=1))
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, ["box"], rec.publish)
    async with running(watcher):
        await watcher.wait_for(lambda: watcher.views["box"].ready == 1, 60)
        (pod,) = watcher.views["box"].pods
        message = await watcher.delete_pod(pod, within=60)
        assert message.startswith(f"replaced pod {pod} of box in ") and message.endswith(
            "(1/1 ready)"
        )
        assert rec.notices("restart:box") == [
            f"deleted pod {pod}; waiting for box to be ready",
            message,
        ]
        assert pod_names(api, namespace, "box") != [pod]


async def test_restart_refuses_what_it_cannot_do_and_changes_nothing(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    bare = {
        "metadata": {"name": "lonely", "labels": {"app": "lonely"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/cockpit/pause:dev",
                    "imagePullPolicy": "Never",
                }
            ]
        },
    }
    client.CoreV1Api(api).create_namespaced_pod(namespace, bare)
    deploy(api, namespace, service_for("lonely"), service_for("box"))
    deploy(api, namespace, python_deployment("box", SLEEPER))
    watcher = ClusterWatcher(kube, namespace, None, Recorder().publish)
    async with running(watcher):
        with pytest.raises(NotFoundError) as missing:
            await watcher.restart("bxo")
        assert missing.value.one_line() == (
            f"service 'bxo' not found in namespace '{namespace}' (did you mean 'box'?)"
        )
        with pytest.raises(UsageError, match="not backed by a Deployment"):
            await watcher.restart("lonely")
        with pytest.raises(NotFoundError, match="not a pod of this session"):
            await watcher.delete_pod("no-such-pod")
    template = client.AppsV1Api(api).read_namespaced_deployment("box", namespace).spec.template
    assert RESTARTED_AT not in (template.metadata.annotations or {})
    assert (
        client.CoreV1Api(api).read_namespaced_pod("lonely", namespace).metadata.deletion_timestamp
        is None
    )


# -- cockpit shell in a real terminal ---------------------------------------------------------


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def read_until(fd: int, needle: bytes, within: float = 20.0) -> bytes:
    out = b""
    deadline = time.monotonic() + within
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {out[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def cockpit(*args: str, kubeconfig: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.Popen([*COCKPIT, *args], env=env, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture
def box(cluster: Cluster, namespace: str) -> str:
    api = cluster.api()
    deploy(api, namespace, service_for("box"), python_deployment("box", SLEEPER, grace=1))
    deadline = time.monotonic() + 60
    apps = client.AppsV1Api(api)
    while (apps.read_namespaced_deployment("box", namespace).status.available_replicas or 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    return namespace


def test_shell_is_a_real_terminal_with_resize_and_exit_code(
    cluster: Cluster, box: str, tmp_path: Path
) -> None:
    master, slave = os.openpty()
    set_size(slave, 40, 120)
    before = termios.tcgetattr(slave)
    proc = cockpit(
        "shell", "box", "--namespace", box,
        kubeconfig=cluster.kubeconfig, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
    )  # fmt: skip
    try:
        read_until(master, b"@box-")  # the remote prompt
        os.write(master, b"stty size; echo ready-$((6*7))\n")
        out = read_until(master, b"ready-42")
        assert b"40 120" in out  # the remote TTY has our size
        set_size(slave, 50, 100)
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"stty size; tty; exit 5\n")
        out = read_until(master, b"/dev/pts/")
        assert b"50 100" in out  # the new size reached the remote TTY
        assert proc.wait(timeout=20) == 5, out
        assert termios.tcgetattr(slave) == before  # the local terminal is back as it was
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


def test_shell_runs_a_command_in_the_named_container(
    cluster: Cluster, box: str, tmp_path: Path
) -> None:
    proc = cockpit(
        "shell", "box", "-c", "main", "--namespace", box, "--", "sh", "-c", "echo $((2+3)); exit 3",
        kubeconfig=cluster.kubeconfig, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (3, b"5\n", b"")


async def test_shell_reads_a_script_from_a_pipe(cluster: Cluster, box: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *COCKPIT, "shell", "box", "--namespace", box,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)), cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(b"echo piped-$((1+1))\nexit 7\n"), 30)
    assert (proc.returncode, out, err) == (7, b"piped-2\n", b"")
