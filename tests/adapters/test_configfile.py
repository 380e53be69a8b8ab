"""Finding and reading cockpit.yaml on a real filesystem, and the kubeconfig's defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cockpit.adapters.configfile import (
    find_config,
    kube_target,
    load_config,
    read_config,
    write_config,
)
from cockpit.core.config import parse_config
from cockpit.errors import ConfigError

MINIMAL = "services:\n  api:\n    command: python app.py\n    port: 8080\n"


def test_found_by_walking_up_from_the_cwd(tmp_path: Path) -> None:
    (tmp_path / "cockpit.yaml").write_text(MINIMAL)
    deep = tmp_path / "src" / "api" / "handlers"
    deep.mkdir(parents=True)
    assert find_config(deep) == tmp_path / "cockpit.yaml"
    config = load_config(cwd=deep)
    assert config.services["api"].port == 8080
    assert config.base_dir == tmp_path  # relative paths resolve next to the file
    assert config.filename == str(tmp_path / "cockpit.yaml")  # not below the cwd: absolute


def test_the_nearest_file_wins(tmp_path: Path) -> None:
    (tmp_path / "cockpit.yaml").write_text(MINIMAL)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "cockpit.yaml").write_text(MINIMAL.replace("8080", "9090"))
    assert load_config(cwd=inner).services["api"].port == 9090


def test_errors_name_the_file_relative_to_the_cwd_with_its_line(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "cockpit.yaml").write_text("services:\n  api:\n    port: nope\n")
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, explicit="app/cockpit.yaml")
    assert (
        info.value.one_line()
        == "app/cockpit.yaml:3: services.api.port: expected an integer, got 'nope'"
    )


def test_an_explicit_path_wins_over_the_search(tmp_path: Path) -> None:
    (tmp_path / "cockpit.yaml").write_text(MINIMAL)
    other = tmp_path / "other.yaml"
    other.write_text(MINIMAL.replace("8080", "7070"))
    assert load_config(str(other), cwd=tmp_path).services["api"].port == 7070


def test_no_file_anywhere_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path)
    assert info.value.one_line() == (
        f"no cockpit.yaml in {tmp_path} or any directory above it "
        "(run `cockpit init` to write one, or pass --config PATH)"
    )
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        find_config(tmp_path, "nope.yaml")


def test_unreadable_files_become_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        read_config(tmp_path)
    binary = tmp_path / "cockpit.yaml"
    binary.write_bytes(b"services:\n  api: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"cockpit\.yaml:2: not UTF-8 text"):
        read_config(binary)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text(MINIMAL)
        locked.chmod(0)
        with pytest.raises(ConfigError, match="permission denied"):
            read_config(locked)


def test_write_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "cockpit.yaml"
    write_config(path, MINIMAL)
    with pytest.raises(ConfigError) as info:
        write_config(path, "services: {x: {}}\n")
    assert info.value.one_line() == f"{path} already exists (pass --force to overwrite it)"
    assert path.read_text() == MINIMAL
    write_config(path, "services: {x: {}}\n", force=True)
    assert path.read_text() == "services: {x: {}}\n"
    with pytest.raises(ConfigError, match="cannot write"):
        write_config(tmp_path / "missing-dir" / "cockpit.yaml", MINIMAL)


KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: dev
contexts:
  - name: dev
    context: {cluster: c, user: u, namespace: team-a}
  - name: prod
    context: {cluster: p, user: u}
"""


def test_kube_target_defaults_to_the_kubeconfig_current_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(KUBECONFIG)
    env = {"KUBECONFIG": str(kubeconfig)}
    bare = parse_config(MINIMAL)
    assert (kube_target(bare, env).context, kube_target(bare, env).namespace) == ("dev", "team-a")
    pinned = parse_config("context: prod\n" + MINIMAL)
    assert (kube_target(pinned, env).context, kube_target(pinned, env).namespace) == (
        "prod",
        "default",
    )
    named = parse_config("namespace: shop\n" + MINIMAL)
    assert kube_target(named, env).namespace == "shop"


def test_kube_target_merges_a_kubeconfig_list(tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.write_text("contexts:\n  - name: extra\n    context: {namespace: x}\n")
    second = tmp_path / "b"
    second.write_text(KUBECONFIG)
    env = {"KUBECONFIG": f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{second}"}
    target = kube_target(parse_config(MINIMAL), env)
    assert (target.context, target.namespace) == ("dev", "team-a")


def test_kube_target_without_a_kubeconfig(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("{{{{ not yaml")
    for env in ({"KUBECONFIG": str(tmp_path / "missing")}, {"KUBECONFIG": str(broken)}):
        target = kube_target(parse_config(MINIMAL), env)
        assert (target.context, target.namespace) == ("", "default")
