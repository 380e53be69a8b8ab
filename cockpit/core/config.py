"""cockpit.yaml as typed settings, and a pure parser whose errors name file, line and field.

The pydantic models are the single source of truth: their field docstrings become the
descriptions of the JSON Schema that ``cockpit schema`` prints.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePath
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from cockpit.errors import ConfigError

CONFIG_FILENAME = "cockpit.yaml"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A Kubernetes Service name (DNS-1035 label): the key that ties a local service to the cluster.
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[^=\x00]+$")
# RFC 9110 token characters: what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _show(value: Any) -> str:
    """A short rendering of a user's value for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _single_line(text: str) -> str:
    """Errors are printed as one line: a key or value with a line break must not split it."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _no_nul(value: str) -> str:
    # The OS rejects NUL bytes in argv, env and paths; say so here rather than at start time.
    if "\x00" in value:
        raise PydanticCustomError("nul_byte", "must not contain a NUL byte")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def _command_line(value: Any, _handler: Any) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return _no_nul(value)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(part, str) for part in value)
        and value[0].strip()
    ):
        for part in value:
            _no_nul(part)
        return list(value)
    raise PydanticCustomError(
        "command",
        "expected a command: a string (run by /bin/sh) or a list of strings "
        "(program and arguments), got {got}",
        {"got": _show(value)},
    )


CommandLine = Annotated[str | list[str], WrapValidator(_command_line)]
"""A string runs through ``/bin/sh -c`` (pipes, ``&&``, ``$VARS`` work); a list runs as is."""

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]


def _service_name(value: str) -> str:
    if not _SERVICE_NAME.match(value):
        raise PydanticCustomError(
            "service_name",
            "expected a Kubernetes service name (lowercase letters, digits and '-', "
            "starting with a letter, at most 63), got {got}",
            {"got": _show(value)},
        )
    return value


ServiceName = Annotated[str, AfterValidator(_service_name)]


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise PydanticCustomError(
            "env_name",
            "expected an environment variable name (no '='), got {got}",
            {"got": _show(value)},
        )
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


class _Settings(BaseModel):
    # strict: YAML already types scalars, so '8080' for a port or 'yes' for a flag is a
    # mistake worth naming rather than silently coercing.
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True
    )


class RestartPolicy(_Settings):
    """What to do when the local process exits on its own."""

    on_exit: bool = False
    """Restart the process when it exits on its own (with any exit code)."""
    backoff_initial: Seconds = 1.0
    """Seconds to wait before the first automatic restart; doubles on each further exit."""
    backoff_max: Seconds = 30.0
    """The longest wait between automatic restarts, in seconds."""

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RestartPolicy:
        if self.backoff_max < self.backoff_initial:
            raise PydanticCustomError(
                "backoff_order",
                "backoff_max ({maximum}) must not be below backoff_initial ({initial})",
                {"maximum": self.backoff_max, "initial": self.backoff_initial},
            )
        return self


class InterceptSettings(_Settings):
    """How a personal intercept recognises this session's requests."""

    header: str = "baggage"
    """The HTTP request header that selects this session's requests."""
    value_template: str = "cockpit-session={session}"
    """The value the header must carry; ``{session}`` becomes the session id."""

    @field_validator("header")
    @classmethod
    def _header_is_a_token(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise PydanticCustomError(
                "header_name", "expected an HTTP header name, got {got}", {"got": _show(value)}
            )
        return value.lower()

    @field_validator("value_template")
    @classmethod
    def _template_names_the_session(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise PydanticCustomError(
                "value_template", "not a valid template: {reason}", {"reason": str(exc)}
            ) from exc
        if fields != {"session"}:
            raise PydanticCustomError(
                "value_template",
                "expected a template with exactly one placeholder {session}, got {got}",
                {"got": _show(value)},
            )
        return value


class Hooks(_Settings):
    """Commands run around the local process's life cycle, in order; a failure stops the step."""

    before_start: list[CommandLine] = []
    """Run before each start of the local process (e.g. code generation); must exit 0."""
    after_start: list[CommandLine] = []
    """Run once the local process is ready (its port answers, or it started if no port)."""
    on_intercept_on: list[CommandLine] = []
    """Run after cluster traffic starts flowing to the local process."""
    on_intercept_off: list[CommandLine] = []
    """Run after cluster traffic goes back to the cluster's pods."""
    timeout: Seconds = 120.0
    """Seconds a hook may run before it is stopped and counted as failed."""


class WatchSettings(_Settings):
    """Hot reload: which files restart (or reload) the local process when they change."""

    enabled: bool = True
    """Watch files and reload on change."""
    paths: list[Text] = ["."]
    """Files or directories to watch (recursively), relative to the service's cwd."""
    ignore: list[Text] = []
    """Glob patterns of changes to ignore, relative to the cwd (``*.log``: at any depth;
    ``build/gen``: from the cwd; ``**`` spans directories), on top of the built-in ones (.git,
    __pycache__, node_modules, .venv, tool caches, editor temp and swap files)."""
    debounce: Seconds = 0.05
    """Seconds of quiet after a change before reloading (so a save of many files reloads once;
    a burst of 20 or more files waits at least 0.25 s)."""
    immediate: bool = True
    """Reload at a save's first change when nothing changed for ``debounce`` seconds before
    (no debounce to sit through); changes that follow within ``debounce`` are one more
    reload. Off: every batch waits ``debounce`` seconds of quiet first."""
    reload: CommandLine | None = None
    """A command to run on change instead of restarting the process (e.g. a build step, or
    ``kill -HUP $COCKPIT_PID``: the running process's pid is in ``COCKPIT_PID``)."""


class SyncRule(_Settings):
    """Files pushed into a pod's container when they change (for a service left in the cluster)."""

    local: Text
    """A local directory or file, relative to cockpit.yaml."""
    remote: Text
    """The absolute path in the container it is copied to."""
    container: str | None = None
    """The container to copy into; default: the pod's first container."""
    ignore: list[Text] = []
    """Glob patterns of local files not to copy."""
    post_sync: CommandLine | None = None
    """A command run inside the container after each sync (e.g. to reload the app)."""

    @field_validator("remote")
    @classmethod
    def _remote_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise PydanticCustomError(
                "remote_path",
                "expected an absolute path in the container, got {got}",
                {"got": _show(value)},
            )
        return value


class ServiceConfig(_Settings):
    """One service of the app: how to run it locally, and how to treat it in the cluster."""

    command: CommandLine | None = None
    """The command that runs the service locally; required to `cockpit up` this service."""
    cwd: Text = "."
    """The working directory of the local process, relative to cockpit.yaml."""
    port: Port | None = None
    """The port the local process listens on: its readiness probe and the intercept target."""
    extra_ports: list[Port] = []
    """Further ports the local process listens on (also routed when intercepted)."""
    env: dict[EnvName, Text] = {}
    """Environment variables for the local process, on top of the session's environment."""
    watch: WatchSettings = WatchSettings()
    """Hot reload of the local process."""
    sync: list[SyncRule] = []
    """Files pushed into this service's pods while it runs in the cluster."""
    hooks: Hooks = Hooks()
    """Commands run before/after start and when an intercept goes on or off."""
    restart: RestartPolicy = RestartPolicy()
    """Automatic restart of the local process when it exits."""
    intercept: InterceptSettings = InterceptSettings()
    """Personal intercept matching (header and value)."""
    stop_timeout: Seconds = 5.0
    """Seconds between SIGTERM and SIGKILL when stopping the local process."""
    ready_timeout: Seconds = 30.0
    """Seconds to wait for the port to answer before raising an alert (probing goes on)."""


class CockpitConfig(_Settings):
    """cockpit.yaml: the cluster to use and the services of the app."""

    model_config = ConfigDict(
        title="cockpit.yaml",
        json_schema_extra={"$schema": JSON_SCHEMA_DIALECT},
    )

    context: str | None = None
    """The kubeconfig context to use; default: the kubeconfig's current context."""
    namespace: str | None = None
    """The namespace the app runs in; default: the current context's namespace."""
    services: dict[ServiceName, ServiceConfig] = Field(min_length=1)
    """The app's services by Kubernetes Service name; a service without a command stays remote."""
    keys: dict[str, Text] = {}
    """Key remapping: binding id -> key (e.g. ``restart: ctrl+r``)."""
    theme: str | None = None
    """The name of the UI theme."""

    _filename: str = PrivateAttr(default=CONFIG_FILENAME)
    _base_dir: str = PrivateAttr(default=".")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @field_validator("services", mode="before")
    @classmethod
    def _empty_service_is_remote(cls, value: Any) -> Any:
        # `web:` with nothing under it reads as null: a service that simply stays remote.
        if isinstance(value, dict):
            return {name: {} if body is None else body for name, body in value.items()}
        return value

    @property
    def filename(self) -> str:
        return self._filename

    @property
    def base_dir(self) -> PurePath:
        """The directory relative paths (cwd, sync) are resolved against."""
        return PurePath(self._base_dir)

    def where(self, *path: str | int) -> str:
        """``file:line`` of the deepest part of ``path`` present in the file."""
        return f"{self._filename}:{_line_of(self._lines, path)}"

    def service(self, name: str) -> ServiceConfig:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services))
            raise ConfigError(
                f"{self.where('services')}: no service {name!r} (known: {known})"
            ) from None

    def local_service(self, name: str) -> ServiceConfig:
        """The service ``name`` with a command to run it locally, or a ConfigError saying why."""
        service = self.service(name)
        if service.command is None:
            raise ConfigError(
                f"{self.where('services', name)}: services.{name}.command: missing; "
                f"cockpit needs a command to run {name} locally",
                hint="e.g. command: python app.py",
            )
        return service


class ConfigValidationError(ConfigError):
    """cockpit.yaml parsed but did not validate; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        more = len(problems) - 1
        hint = f"and {more} more problem{'s' if more > 1 else ''}" if more else None
        super().__init__(problems[0], hint=hint)
        self.problems = tuple(problems)


def parse_config(
    text: str, filename: str = CONFIG_FILENAME, *, base_dir: str | None = None
) -> CockpitConfig:
    """Parse and validate cockpit.yaml ``text``; every failure is a ConfigError naming file:line.

    ``filename`` is how errors name the file; relative paths in it resolve against
    ``base_dir`` (default: the directory of ``filename``).
    """
    data, lines = _load_yaml(text, filename)
    if data is None:
        raise ConfigError(
            f"{filename}:1: the file is empty; expected a mapping with a services: key"
        )
    try:
        config = CockpitConfig.model_validate(data)
    except ValidationError as exc:
        located = sorted(
            ((_line_of(lines, _key_path(err["loc"])), _describe(err)) for err in exc.errors()),
            key=lambda problem: problem[0],  # in file order, not pydantic's field order
        )
        problems = [_single_line(f"{filename}:{line}: {text}") for line, text in located]
        raise ConfigValidationError(problems) from exc
    except (RecursionError, ValueError, TypeError) as exc:
        # Self-referencing YAML anchors can build values pydantic cannot walk.
        raise ConfigError(
            _single_line(f"{filename}: cannot read the configuration: {exc}")
        ) from exc
    config._filename = filename
    config._base_dir = base_dir if base_dir is not None else str(PurePath(filename).parent)
    config._lines = lines
    return config


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of cockpit.yaml (what ``cockpit schema`` prints)."""
    return CockpitConfig.model_json_schema()


# -- YAML with line numbers ----------------------------------------------------------------

LineMap = dict[tuple[str | int, ...], int]


def _load_yaml(text: str, filename: str) -> tuple[Any, LineMap]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = _line_map(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "cannot parse"
        if exc.context and problem.startswith("but "):
            problem = f"{exc.context} {problem}"
        raise ConfigError(_single_line(f"{filename}:{line}: malformed YAML: {problem}")) from exc
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        problem = f"character {exc.character!r} is not allowed in YAML"
        raise ConfigError(_single_line(f"{filename}:{at}: malformed YAML: {problem}")) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(_single_line(f"{filename}: malformed YAML: {exc}")) from exc
    except RecursionError as exc:
        raise ConfigError(f"{filename}: malformed YAML: nested too deeply") from exc
    except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
        # PyYAML's constructors are not hardened: explicit tags on bad scalars (`!!int abc`,
        # `!!int ''`, `!!timestamp x`) fail with plain Python errors.
        raise ConfigError(_single_line(f"{filename}: malformed YAML: {exc}")) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _line_map(root: yaml.Node) -> LineMap:
    """(key path) -> 1-based line of each mapping key and sequence item (walked iteratively)."""
    lines: LineMap = {(): root.start_mark.line + 1}
    seen: set[int] = set()
    stack: list[tuple[tuple[str | int, ...], yaml.Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:  # an alias: shared or self-referencing
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                child = (*path, key_node.value)
                lines.setdefault(child, key_node.start_mark.line + 1)
                stack.append((child, value_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((child, item))
    return lines


def _line_of(lines: LineMap, path: Sequence[str | int]) -> int:
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return 1


def _key_path(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    # pydantic marks a bad dict key with a trailing '[key]'; the line is the key's own.
    return tuple(part for part in loc if part != "[key]")


# -- pydantic errors as one line each --------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "none_required": "nothing",
}


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: Mapping[str, Any]) -> str:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        return f"{_field_path(parent)}: unknown key {key!r}{_suggestion(parent, key)}"
    field = _field_path(loc)
    if loc and loc[-1] == "[key]":
        field = f"{field} (the key)"
    if kind == "missing":
        return f"{field}: required, but missing"
    if kind in _EXPECTED:
        message = f"{field}: expected {_EXPECTED[kind]}, got {_show(value)}"
        if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
            message += f" (quote it: '{value}')"
        elif kind == "string_type" and isinstance(value, bool):
            message += " (quote it if you mean the text)"
        return message
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{field}: expected a number {_bounds(loc, ctx)}, got {_show(value)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{field}: expected at least one entry"
    if kind == "recursion_loop":
        return f"{field}: refers to itself (a YAML anchor used inside itself)"
    message = str(err.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"{field}: {message[:1].lower()}{message[1:]}"


def _bounds(loc: Sequence[str | int], ctx: Mapping[str, Any]) -> str:
    limits: dict[str, Any] = {}
    for meta in _metadata(_annotation_at(loc)):
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                limits[name] = getattr(meta, name)
    limits = limits or dict(ctx)
    if "ge" in limits and "le" in limits:
        return f"from {limits['ge']} to {limits['le']}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    return " and ".join(f"{words[name]} {limit}" for name, limit in limits.items()) or "in range"


def _suggestion(parent: Sequence[str | int], key: str) -> str:
    known = _known_keys(parent)
    if not known:
        return ""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(known)}"


def _known_keys(loc: Sequence[str | int]) -> list[str]:
    model = _annotation_at(loc)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Drop Annotated and Optional around a type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _metadata(annotation: Any) -> Iterator[Any]:
    """Constraint objects (Ge, Le, Gt...) attached to a field's type."""
    while True:
        if get_origin(annotation) is Annotated:
            for meta in get_args(annotation)[1:]:
                # Field(ge=..) inside Annotated stays a FieldInfo holding the constraints.
                yield from meta.metadata if isinstance(meta, FieldInfo) else (meta,)
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return
            annotation = args[0]
        else:
            return


def _annotation_at(loc: Sequence[str | int]) -> Any:
    """The declared type at a pydantic error location, walking models, dicts and lists."""
    current: Any = CockpitConfig
    for part in loc:
        if part == "[key]":
            return None
        current_type = _unwrap(current)
        if isinstance(current_type, type) and issubclass(current_type, BaseModel):
            field = current_type.model_fields.get(str(part))
            if field is None:
                return None
            current = _field_annotation(field.annotation, field.metadata)
        elif get_origin(current_type) is dict:
            current = get_args(current_type)[1]
        elif get_origin(current_type) is list:
            current = get_args(current_type)[0]
        else:
            return None
    return current


def _field_annotation(annotation: Any, metadata: list[Any]) -> Any:
    # pydantic moves Annotated constraints of a field into FieldInfo.metadata; put them back.
    if metadata:
        return Annotated[(annotation, *metadata)]
    return annotation


# -- the starter file cockpit init writes -----------------------------------------------------


def starter_config(
    service: str,
    *,
    command: str | None = None,
    port: int | None = None,
    remote: Sequence[str] = (),
    namespace: str | None = None,
    context: str | None = None,
) -> str:
    """A commented cockpit.yaml for one local service (and any that stay remote)."""

    def scalar(value: str) -> str:
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar

    out = [
        "# cockpit.yaml: how `cockpit up SERVICE` runs this app's services.",
        "# `cockpit validate` checks it; `cockpit schema` prints its JSON Schema.",
        f"context: {scalar(context)}"
        if context
        else "# context: my-context  # default: the kubeconfig's current context",
        f"namespace: {scalar(namespace)}"
        if namespace
        else "# namespace: my-namespace  # default: the context's namespace",
        "",
        "services:",
        f"  {service}:",
        f"    command: {scalar(command)}"
        if command
        else f"    # command: python app.py  # required to run {service} locally",
        f"    port: {port}" if port else "    # port: 8080  # readiness probe and intercept target",
        "    # cwd: .",
        "    # env:",
        "    #   LOG_LEVEL: debug",
        "    # restart:",
        "    #   on_exit: true",
    ]
    out += [f"  {name}: {{}}  # stays in the cluster" for name in remote if name != service]
    return "\n".join(out) + "\n"
