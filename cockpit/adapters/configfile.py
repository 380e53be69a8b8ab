"""Finding and reading cockpit.yaml (walking up from the cwd), and the kubeconfig's defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cockpit.core.config import CONFIG_FILENAME, CockpitConfig, parse_config
from cockpit.errors import ConfigError


def find_config(start: Path, explicit: str | None = None) -> Path:
    """``explicit`` if given, else the first cockpit.yaml in ``start`` or a parent directory."""
    if explicit is not None:
        path = start / explicit  # an absolute explicit path stays as it is
        if not path.exists():
            raise ConfigError(f"{explicit}: no such file")
        return path
    start = start.absolute()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILENAME} in {start} or any directory above it",
        hint="run `cockpit init` to write one, or pass --config PATH",
    )


def read_config(path: Path, cwd: Path | None = None) -> CockpitConfig:
    """Read and validate ``path``; errors name it relative to ``cwd`` when it lies below."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: permission denied") from exc
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    absolute = path.absolute()
    return parse_config(
        text, display_path(absolute, cwd or Path.cwd()), base_dir=str(absolute.parent)
    )


def load_config(explicit: str | None = None, cwd: Path | None = None) -> CockpitConfig:
    """Find and read cockpit.yaml as ``cockpit`` does from ``cwd``."""
    here = cwd or Path.cwd()
    return read_config(find_config(here, explicit), here)


def write_config(path: Path, text: str, *, force: bool = False) -> None:
    """Write a new cockpit.yaml; an existing file is kept unless ``force``."""
    try:
        with path.open("w" if force else "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def display_path(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd.absolute()))
    except ValueError:
        return str(path)


@dataclass(frozen=True, slots=True)
class KubeTarget:
    context: str  # "" when there is no kubeconfig
    namespace: str


def kube_target(config: CockpitConfig, environ: Mapping[str, str] | None = None) -> KubeTarget:
    """The context and namespace a session uses: cockpit.yaml's, else the kubeconfig's current.

    Read directly (not through the kubernetes client, whose import costs most of a
    second on every start); a missing or unreadable kubeconfig leaves the context empty.
    """
    env = os.environ if environ is None else environ
    files = env.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    current = ""
    contexts: dict[str, Any] = {}
    for name in files.split(os.pathsep):
        document = _read_kubeconfig(name)
        current = current or str(document.get("current-context") or "")
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                contexts.setdefault(entry["name"], entry.get("context") or {})
    context = config.context or current
    details = contexts.get(context)
    namespace = details.get("namespace") if isinstance(details, dict) else None
    return KubeTarget(context, config.namespace or str(namespace or "default"))


def _read_kubeconfig(name: str) -> dict[str, Any]:
    if not name:
        return {}
    try:
        document = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}
