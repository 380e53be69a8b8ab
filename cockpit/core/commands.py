"""Commands the UI, headless stdin and the palette submit to the engine: one vocabulary for all.

``parse_command`` turns a headless JSON object into a command, so scripts drive exactly
what the keys drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

InterceptMode = Literal["global", "personal"]


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command. ``request_id`` is echoed in the CommandResult."""

    request_id: str = ""

    @property
    def name(self) -> str:
        return _NAMES_BY_TYPE[type(self)]


@dataclass(frozen=True, slots=True)
class Restart(Command):
    service: str = ""  # "" = the local service
    pod: str = ""  # a cluster service: replace only this pod (default: rollout-restart all)


@dataclass(frozen=True, slots=True)
class ToggleIntercept(Command):
    service: str = ""  # "" = the local service
    mode: InterceptMode = "global"
    on: bool | None = None  # None = toggle


@dataclass(frozen=True, slots=True)
class SetFilter(Command):
    query: str = ""


@dataclass(frozen=True, slots=True)
class ToggleForward(Command):
    service: str = ""


@dataclass(frozen=True, slots=True)
class Quit(Command):
    pass


_TYPES: dict[str, type[Command]] = {
    "restart": Restart,
    "intercept": ToggleIntercept,
    "filter": SetFilter,
    "forward": ToggleForward,
    "quit": Quit,
}
_NAMES_BY_TYPE = {v: k for k, v in _TYPES.items()}


class CommandParseError(ValueError):
    """A headless command line that is not a known command."""


def parse_command(obj: Any) -> Command:
    """``{"cmd": "intercept", "mode": "personal", "on": true, "id": "7"}`` -> ToggleIntercept."""
    if not isinstance(obj, dict):
        raise CommandParseError('a command is a JSON object like {"cmd": "restart"}')
    name = obj.get("cmd")
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CommandParseError(f"unknown cmd {name!r}; known: {', '.join(sorted(_TYPES))}")
    fields = {k: v for k, v in obj.items() if k not in ("cmd", "id")}
    allowed = set(cls.__dataclass_fields__) - {"request_id"}
    unknown = set(fields) - allowed
    if unknown:
        raise CommandParseError(f"{name}: unknown field(s) {', '.join(sorted(unknown))}")
    if cls is ToggleIntercept and fields.get("mode", "global") not in ("global", "personal"):
        raise CommandParseError("intercept: mode must be 'global' or 'personal'")
    return cls(request_id=str(obj.get("id", "")), **fields)
