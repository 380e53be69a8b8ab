"""cockpit.yaml: typed settings, one-line errors naming file:line:field, a fuzzed loader."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit.core.config import (
    CockpitConfig,
    ConfigValidationError,
    config_json_schema,
    parse_config,
    starter_config,
)
from cockpit.errors import ConfigError

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "cockpit.yaml"

FULL = """\
context: kind-dev
namespace: shop
theme: nord
keys:
  restart: ctrl+r
services:
  api:
    command: [python, app.py]
    cwd: src
    port: 8080
    extra_ports: [9090]
    env:
      LOG_LEVEL: debug
    watch:
      paths: [app.py, lib]
      ignore: ["*.tmp"]
      debounce: 0.5
      reload: make assets
    hooks:
      before_start: [make gen]
      after_start: ["curl -s localhost:8080/healthz"]
      on_intercept_on: [echo on]
      on_intercept_off: [echo off]
      timeout: 30
    restart: {on_exit: true, backoff_initial: 0.5, backoff_max: 10}
    intercept: {header: X-Dev, value_template: "me-{session}"}
    stop_timeout: 2
    ready_timeout: 5
  web:
    sync:
      - local: ./static
        remote: /app/static
        container: web
        post_sync: kill -HUP 1
  store:
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cockpit.yaml")
    line = info.value.one_line()
    assert "\n" not in line
    return line


def test_a_full_file_becomes_typed_settings() -> None:
    config = parse_config(FULL, "app/cockpit.yaml")
    assert (config.context, config.namespace, config.theme) == ("kind-dev", "shop", "nord")
    assert config.keys == {"restart": "ctrl+r"}
    api = config.services["api"]
    assert api.command == ["python", "app.py"]
    assert (api.cwd, api.port, api.extra_ports) == ("src", 8080, [9090])
    assert api.env == {"LOG_LEVEL": "debug"}
    assert api.watch.paths == ["app.py", "lib"] and api.watch.reload == "make assets"
    assert api.hooks.before_start == ["make gen"] and api.hooks.timeout == 30
    assert (api.restart.on_exit, api.restart.backoff_initial, api.restart.backoff_max) == (
        True,
        0.5,
        10,
    )
    assert api.intercept.header == "x-dev"
    assert api.intercept.value_template == "me-{session}"
    assert (api.stop_timeout, api.ready_timeout) == (2, 5)
    rule = config.services["web"].sync[0]
    assert (rule.local, rule.remote, rule.container, rule.post_sync) == (
        "./static",
        "/app/static",
        "web",
        "kill -HUP 1",
    )
    assert config.services["store"].command is None  # an empty entry stays remote
    assert str(config.base_dir) == "app"
    assert config.where("services", "api", "port") == "app/cockpit.yaml:10"
    assert config.where("services", "api", "nothing", "here") == "app/cockpit.yaml:7"


def test_defaults_of_a_minimal_file() -> None:
    config = parse_config("services:\n  api:\n    command: python app.py\n")
    assert config.context is None and config.namespace is None
    api = config.local_service("api")
    assert (api.cwd, api.port, api.env, api.sync) == (".", None, {}, [])
    assert api.restart.on_exit is False
    assert api.intercept.header == "baggage"
    assert api.intercept.value_template == "cockpit-session={session}"
    assert api.stop_timeout == 5.0


def test_the_shop_example_is_valid_with_api_as_the_local_service() -> None:
    config = parse_config(SHOP.read_text(), str(SHOP))
    assert config.namespace == "shop"
    assert set(config.services) == {"web", "api", "store"}
    api = config.local_service("api")
    assert api.command == "python app.py"
    assert api.port == 8080
    assert api.env["SERVICE"] == "api" and api.env["PORT"] == "8080"
    assert api.env["BIND"] == "127.0.0.1"
    assert all(service.port == 8080 for service in config.services.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "services:\n  api:\n    command: python app.py\n    port: abc\n",
            "cockpit.yaml:4: services.api.port: expected an integer, got 'abc'",
        ),
        (
            "services:\n  api:\n    port: 0\n",
            "cockpit.yaml:3: services.api.port: expected a number from 1 to 65535, got 0",
        ),
        (
            "services:\n  api:\n    port: 70000\n",
            "cockpit.yaml:3: services.api.port: expected a number from 1 to 65535, got 70000",
        ),
        (
            "services:\n  api:\n    port: '8080'\n",
            "cockpit.yaml:3: services.api.port: expected an integer, got '8080'",
        ),
        (
            "services:\n  api:\n    command: x\n    prot: 80\n",
            "cockpit.yaml:4: services.api: unknown key 'prot'; did you mean 'port'?",
        ),
        (
            "namespace: shop\nzzz: 1\nservices:\n  api: {}\n",
            "cockpit.yaml:2: (top level): unknown key 'zzz'; expected one of: context, "
            "namespace, services, keys, theme",
        ),
        (
            "services:\n  api:\n    env:\n      PORT: 8080\n",
            "cockpit.yaml:4: services.api.env.PORT: expected a string, got 8080 (quote it: '8080')",
        ),
        (
            "services:\n  api:\n    env:\n      DEBUG: yes\n",
            "cockpit.yaml:4: services.api.env.DEBUG: expected a string, got true "
            "(quote it if you mean the text)",
        ),
        (
            "services:\n  api:\n    restart:\n      on_exit: 'yes'\n",
            "cockpit.yaml:4: services.api.restart.on_exit: expected true or false, got 'yes'",
        ),
        (
            "services:\n  api:\n    restart: {backoff_initial: 5, backoff_max: 1}\n",
            "cockpit.yaml:3: services.api.restart: backoff_max (1.0) must not be below "
            "backoff_initial (5.0)",
        ),
        (
            "services:\n  api:\n    stop_timeout: 0\n",
            "cockpit.yaml:3: services.api.stop_timeout: expected a number greater than 0, got 0",
        ),
        (
            "services:\n  api:\n    command: ''\n",
            "cockpit.yaml:3: services.api.command: expected a command: a string (run by "
            "/bin/sh) or a list of strings (program and arguments), got ''",
        ),
        (
            "services:\n  api:\n    hooks:\n      before_start:\n        - ok\n        - [1]\n",
            "cockpit.yaml:6: services.api.hooks.before_start[1]: expected a command: a string "
            "(run by /bin/sh) or a list of strings (program and arguments), got a list",
        ),
        (
            "services:\n  api:\n    sync:\n      - local: a\n        remote: relative\n",
            "cockpit.yaml:5: services.api.sync[0].remote: expected an absolute path in the "
            "container, got 'relative'",
        ),
        (
            "services:\n  api:\n    sync:\n      - remote: /x\n",
            "cockpit.yaml:4: services.api.sync[0].local: required, but missing",
        ),
        (
            "services:\n  API_svc: {}\n",
            "cockpit.yaml:2: services.API_svc (the key): expected a Kubernetes service name "
            "(lowercase letters, digits and '-', starting with a letter, at most 63), "
            "got 'API_svc'",
        ),
        (
            "services:\n  api:\n    intercept:\n      value_template: fixed\n",
            "cockpit.yaml:4: services.api.intercept.value_template: expected a template with "
            "exactly one placeholder {session}, got 'fixed'",
        ),
        (
            "services:\n  api:\n    intercept:\n      header: 'bad header'\n",
            "cockpit.yaml:4: services.api.intercept.header: expected an HTTP header name, "
            "got 'bad header'",
        ),
        ("services: {}\n", "cockpit.yaml:1: services: expected at least one entry"),
        ("namespace: x\n", "cockpit.yaml:1: services: required, but missing"),
        ("- a\n- b\n", "cockpit.yaml:1: (top level): expected a mapping (key: value), got a list"),
        (
            "services: [api]\n",
            "cockpit.yaml:1: services: expected a mapping (key: value), got a list",
        ),
        ("", "cockpit.yaml:1: the file is empty; expected a mapping with a services: key"),
        (
            "# only a comment\n",
            "cockpit.yaml:1: the file is empty; expected a mapping with a services: key",
        ),
        (
            "services:\n  api:\n    command: x\n   port: 1\n",
            "cockpit.yaml:4: malformed YAML: expected <block end>, but found "
            "'<block mapping start>'",
        ),
        ("a: b: c\n", "cockpit.yaml:1: malformed YAML: mapping values are not allowed here"),
        (
            "services: {api: {}}\n---\nservices: {}\n",
            "cockpit.yaml:2: malformed YAML: expected a single document in the stream but "
            "found another document",
        ),
        (
            "services: !!int nope\n",
            "cockpit.yaml: malformed YAML: invalid literal for int() with base 10: 'nope'",
        ),
    ],
)
def test_each_bad_input_is_one_line_naming_file_line_and_field(text: str, expected: str) -> None:
    assert error_of(text) == expected


def test_every_problem_is_kept_and_the_first_is_the_message() -> None:
    text = "services:\n  api:\n    port: x\n    cwd: 3\n    bogus: 1\n"
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text)
    assert info.value.problems == (
        "cockpit.yaml:3: services.api.port: expected an integer, got 'x'",
        "cockpit.yaml:4: services.api.cwd: expected a string, got 3 (quote it: '3')",
        "cockpit.yaml:5: services.api: unknown key 'bogus'; expected one of: command, cwd, "
        "port, extra_ports, env, watch, sync, hooks, restart, intercept, stop_timeout, "
        "ready_timeout",
    )
    assert info.value.one_line() == f"{info.value.problems[0]} (and 2 more problems)"
    assert info.value.exit_code == 2


def test_a_missing_command_is_reported_only_when_the_service_runs_locally() -> None:
    config = parse_config("namespace: shop\nservices:\n  web:\n  api:\n    port: 8080\n")
    with pytest.raises(ConfigError) as info:
        config.local_service("api")
    assert info.value.one_line() == (
        "cockpit.yaml:4: services.api.command: missing; cockpit needs a command to run api "
        "locally (e.g. command: python app.py)"
    )
    with pytest.raises(ConfigError, match=r"cockpit.yaml:2: no service 'nope' \(known: api, web\)"):
        config.local_service("nope")


def test_anchors_and_merge_keys_work() -> None:
    text = (
        "x-common: &common\n  restart: {on_exit: true}\n"
        "services:\n  api:\n    <<: *common\n    command: run\n"
    )
    # x-common is not a known key: anchors live inside services instead.
    assert "unknown key 'x-common'" in error_of(text)
    text = (
        "services:\n  api: &api\n    command: run\n    env: {A: '1'}\n"
        "  web:\n    <<: *api\n    port: 81\n"
    )
    config = parse_config(text)
    assert config.services["web"].command == "run"
    assert config.services["web"].env == {"A": "1"}


def test_a_self_referencing_anchor_is_a_config_error() -> None:
    assert "cockpit.yaml:1:" in error_of("services: &a {api: *a}\n")
    assert error_of("services:\n  api:\n    extra_ports: &p [*p]\n").startswith("cockpit.yaml:3:")


def test_deep_nesting_is_a_config_error() -> None:
    assert "cockpit.yaml" in error_of("services: " + "[" * 5000 + "]" * 5000 + "\n")


def test_nul_bytes_in_commands_are_refused() -> None:
    line = error_of('services:\n  api:\n    command: "a\\0b"\n')
    assert line == "cockpit.yaml:3: services.api.command: must not contain a NUL byte"


def test_json_schema_has_the_field_docstrings_as_descriptions() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "cockpit.yaml"
    assert schema["required"] == ["services"]
    service = schema["$defs"]["ServiceConfig"]
    assert service["additionalProperties"] is False
    assert "readiness probe" in service["properties"]["port"]["description"]
    assert service["properties"]["port"]["anyOf"][0] == {
        "maximum": 65535,
        "minimum": 1,
        "type": "integer",
    }
    for name, model in schema["$defs"].items():
        for field, spec in model["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    json.dumps(schema)


def test_the_starter_file_is_valid_and_round_trips_its_flags() -> None:
    text = starter_config(
        "api",
        command="python app.py --port 8080",
        port=8080,
        remote=["web", "store"],
        namespace="shop",
        context="kind-dev",
    )
    config = parse_config(text)
    assert (config.context, config.namespace) == ("kind-dev", "shop")
    assert config.local_service("api").command == "python app.py --port 8080"
    assert config.services["api"].port == 8080
    assert config.services["web"].command is None
    assert list(config.services) == ["api", "web", "store"]
    bare = parse_config(starter_config("app"))
    assert bare.services["app"].command is None


# -- fuzzing: the loader either loads or raises ConfigError, never anything else -------------


def loads_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "cockpit.yaml")
    except ConfigError as exc:
        line = exc.one_line()
        assert line.startswith("cockpit.yaml")
        assert "\n" not in line
    else:
        assert isinstance(config, CockpitConfig)
        assert config.services


KEYS = [
    "services", "api", "web", "command", "cwd", "port", "extra_ports", "env", "watch",
    "paths", "ignore", "reload", "sync", "local", "remote", "container", "post_sync", "hooks",
    "before_start", "after_start", "restart", "on_exit", "backoff_initial", "backoff_max",
    "intercept", "header", "value_template", "keys", "theme", "namespace", "context",
    "stop_timeout", "ready_timeout", "timeout", "debounce", "enabled", "<<",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["python app.py", "/app/static", "cockpit-session={session}", "8080", "{x}"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text: str) -> None:
    loads_or_config_error(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_yaml_documents_shaped_like_a_config(document: Any) -> None:
    loads_or_config_error(yaml.safe_dump({"services": document}))
    loads_or_config_error(yaml.safe_dump(document))


YAML_PIECES = [
    "services:", "\n", "  ", "api:", "- ", "&a ", "*a", "<<: ", "!!int ", "!!float ", "!!binary ",
    "!!timestamp ", "!!set ", "!!python/object ", "{", "}", "[", "]", ": ", "'", '"', "#", "|",
    ">", "? ", "---", "...", "%YAML 1.1", "\t", "\x00", "\ufeff", "8080", "command: x",
]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=40))
def test_fuzz_yaml_syntax_fragments(pieces: list[str]) -> None:
    loads_or_config_error("".join(pieces))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations_of_a_real_file(data: st.DataObject) -> None:
    text = FULL
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        piece = data.draw(st.text(alphabet=string.printable + "&*!{}[]:-", max_size=6))
        if action == "delete":
            text = text[:at] + text[at + len(piece) :]
        elif action == "insert":
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    loads_or_config_error(text)
