"""`scripts/dev-cluster up` refuses a taken port with one line before it installs, builds,
writes or starts anything (run on the real script, without touching the running cluster)."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dev_cluster.py"


@pytest.fixture
def dev_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its state and cgroup pointed at a scratch directory."""
    spec = importlib.util.spec_from_file_location("dev_cluster_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.procs").touch()
    monkeypatch.setattr(module, "CGROUP_ROOT", cgroup)
    monkeypatch.setattr(module, "STATE", tmp_path / "state")
    monkeypatch.setattr(module, "PIDS", tmp_path / "state" / "pids")
    monkeypatch.setattr(module, "RUN", tmp_path / "run")
    monkeypatch.setattr(module.os, "geteuid", lambda: 0)
    return module


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_preflight_names_the_taken_port_and_how_to_free_it(
    dev_cluster: ModuleType, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev_cluster, "API_PORT", taken_port)
    with pytest.raises(dev_cluster.Fail) as failed:
        dev_cluster.preflight()
    assert str(failed.value) == (
        f"port 127.0.0.1:{taken_port} (needed for kube-apiserver) is already in use: stop what "
        f"listens there (ss -ltnp 'sport = :{taken_port}') and run up again"
    )


def test_preflight_without_root_or_cgroup2_says_so(
    dev_cluster: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(dev_cluster.Fail, match=r"^must run as root"):
        dev_cluster.preflight()
    monkeypatch.setattr(dev_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(dev_cluster, "CGROUP_ROOT", tmp_path / "no-cgroup2")
    with pytest.raises(dev_cluster.Fail, match=r"^no cgroup2 hierarchy at .*: mount -t cgroup2"):
        dev_cluster.preflight()


def test_up_with_a_port_taken_fails_before_installing_building_or_starting(
    dev_cluster: ModuleType,
    taken_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    touched: list[str] = []
    for step in (
        "ensure_packages",
        "build",
        "build_images",
        "install_egress_guard",
        "setup_network",
        "spawn",
    ):
        monkeypatch.setattr(dev_cluster, step, lambda *_, name=step, **__: touched.append(name))
    monkeypatch.setattr(dev_cluster, "is_up", lambda: False)
    monkeypatch.setattr(dev_cluster, "API_PORT", taken_port)
    monkeypatch.setattr(sys, "argv", ["dev-cluster", "up"])
    assert dev_cluster.main() == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"dev-cluster: error: port 127.0.0.1:{taken_port} (needed for kube-apiserver) is already "
        f"in use: stop what listens there (ss -ltnp 'sport = :{taken_port}') and run up again"
    ]
    assert touched == []
    assert not (tmp_path / "state").exists() and not (tmp_path / "run").exists()
