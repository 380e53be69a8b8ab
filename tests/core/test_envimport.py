"""Env import: Kubernetes' env rules and the rewriting of service names to local forwards."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.envimport import (
    SECRET_MASK,
    ClusterAddresses,
    ForwardedPort,
    ImportedVar,
    ServiceAddress,
    expand,
    format_dotenv,
    import_env,
    parse_quantity,
    quote_dotenv,
    rewrite_value,
    service_link_vars,
)
from cockpit.errors import NotFoundError

CLUSTER = ClusterAddresses(
    "shop",
    {
        "store": ServiceAddress("store", "127.0.0.2", (ForwardedPort(8080, 8080, "http"),)),
        # web's forward could not get port 80 (privileged): it listens on 18080.
        "web": ServiceAddress("web", "127.0.0.3", (ForwardedPort(80, 18080, "http"),)),
        "cache-db": ServiceAddress(
            "cache-db",
            "127.0.0.4",
            (ForwardedPort(6379, 6379, "redis"), ForwardedPort(9121, 40001, "metrics")),
        ),
    },
)


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        # URLs, every way a pod can name the service
        ("STORE_URL", "http://store:8080", "http://127.0.0.2:8080"),
        ("U", "http://store.shop:8080/a?b=c", "http://127.0.0.2:8080/a?b=c"),
        ("U", "http://store.shop.svc:8080", "http://127.0.0.2:8080"),
        ("U", "http://store.shop.svc.cluster.local:8080/healthz", "http://127.0.0.2:8080/healthz"),
        ("U", "http://store.shop.svc.cluster.local.:8080", "http://127.0.0.2:8080"),
        ("U", "HTTP://STORE:8080", "HTTP://127.0.0.2:8080"),
        # the port moves with the host when the forward's differs
        ("U", "http://web:80/x", "http://127.0.0.3:18080/x"),
        ("U", "http://web/x", "http://127.0.0.3:18080/x"),  # implicit :80
        ("U", "http://web", "http://127.0.0.3:18080"),
        ("U", "redis://cache-db", "redis://127.0.0.4"),  # implicit 6379, same local port
        ("U", "redis://:pw@cache-db.shop:6379/0", "redis://:pw@127.0.0.4:6379/0"),
        ("U", "postgres://u:p@store.shop:8080/db", "postgres://u:p@127.0.0.2:8080/db"),
        ("U", "myproto://store/x", "myproto://127.0.0.2/x"),  # unknown scheme: host only
        # host:port anywhere, lists
        ("A", "store:8080", "127.0.0.2:8080"),
        ("A", "store:8080,web:80", "127.0.0.2:8080,127.0.0.3:18080"),
        ("A", "cache-db:9121", "127.0.0.4:40001"),
        ("A", "connect to store:8080 now", "connect to 127.0.0.2:8080 now"),
        ("J", '{"url": "http://store:8080"}', '{"url": "http://127.0.0.2:8080"}'),
        # dotted names are hosts wherever they stand
        ("X", "store.shop", "127.0.0.2"),
        ("X", "store.shop.svc.cluster.local", "127.0.0.2"),
        # a bare word only where the variable's name says "host"
        ("STORE_HOST", "store", "127.0.0.2"),
        ("REDIS_ADDR", "cache-db", "127.0.0.4"),
        ("KAFKA_BROKERS", "store, web", "127.0.0.2, 127.0.0.3"),
    ],
)
def test_names_of_services_become_local_addresses(var: str, value: str, expected: str) -> None:
    assert rewrite_value(var, value, CLUSTER) == expected


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SERVICE", "store"),  # the shop's own SERVICE=store is a role, not a host
        ("MODE", "web"),
        ("STORE_HOST", "the store is closed"),  # a word in a sentence
        ("U", "https://web/x"),  # web has no port 443: as broken as in the cluster
        ("U", "http://store/x"),  # store has no port 80
        ("A", "store:9999"),  # no such service port
        ("A", "mystore:8080"),
        ("A", "store-front:8080"),
        ("A", "store_2:8080"),
        ("A", "store.example.com:8080"),  # another domain
        ("A", "store.other:8080"),  # another namespace (not forwarded)
        ("A", "x.store:8080"),
        ("P", "/srv/store.shop"),  # a path
        ("P", "/api/store:8080"),
        ("U", "http://store:secret@db/"),  # 'store' is the user name
        ("V", "$(STORE_URL)"),
        ("T", "12:80"),
        ("E", ""),
    ],
)
def test_values_that_name_no_service_stay_as_they_are(var: str, value: str) -> None:
    assert rewrite_value(var, value, CLUSTER) == value


_GLUE = st.text(alphabet="abxyz019_-", max_size=4)


@given(
    st.sampled_from(["store", "web", "cache-db"]),
    _GLUE,
    _GLUE,
    st.sampled_from(["", ":8080", ":80"]),
    st.sampled_from(["X", "DB_HOST", "STORE_URL"]),
)
def test_names_glued_into_longer_words_are_not_services(
    name: str, before: str, after: str, port: str, var: str
) -> None:
    if not (before or after):
        return
    value = f"{before}{name}{after}{port}"
    assert rewrite_value(var, value, CLUSTER) == value
    assert rewrite_value(var, f"http://{value}/x", CLUSTER) == f"http://{value}/x"


@given(st.text(alphabet="storeweb:/.8010-_ ,@", max_size=40))
def test_rewriting_is_idempotent(value: str) -> None:
    once = rewrite_value("DB_HOST", value, CLUSTER)
    assert rewrite_value("DB_HOST", once, CLUSTER) == once


# Kubernetes' own expansion cases (third_party/forked/golang/expansion).
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)$(VAR_B)", "AB"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$(VAR_EMPTY)", ""),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$VAR_A", "$VAR_A"),
        ("f$oo", "f$oo"),
        ("$", "$"),
        ("$$", "$"),
        ("$(VAR_A)$", "A$"),
        ("$()", "$()"),
        ("$((VAR_A))", "$((VAR_A))"),
        ("$(VAR_A)$(VAR_REF)", "A$(VAR_A)"),  # values are not expanded again
        ("no refs", "no refs"),
    ],
)
def test_expansion_follows_kubernetes(value: str, expected: str) -> None:
    mapping = {"VAR_A": "A", "VAR_B": "B", "VAR_EMPTY": "", "VAR_REF": "$(VAR_A)"}
    assert expand(value, mapping.get) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Fraction(1, 4)),
        ("1", Fraction(1)),
        ("1.5", Fraction(3, 2)),
        ("128Mi", Fraction(128 * 2**20)),
        ("1G", Fraction(10**9)),
        ("1e3", Fraction(1000)),
        ("500u", Fraction(1, 2000)),
    ],
)
def test_quantities(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


# The shop's api container, as the API server returns it.
SHOP_API: dict[str, Any] = {
    "name": "api",
    "env": [
        {"name": "SERVICE", "value": "api"},
        {"name": "PORT", "value": "8080"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "shop-config", "key": "GREETING"}},
        },
        {"name": "STORE_URL", "value": "http://store:8080"},
        {
            "name": "STORE_HEALTH_URL",
            "value": "http://store.$(POD_NAMESPACE).svc.cluster.local:8080/healthz",
        },
        {
            "name": "STORE_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "shop-secret", "key": "STORE_TOKEN"}},
        },
    ],
    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
}
CONFIG_MAPS = {"shop-config": {"GREETING": "Welcome to the shop"}}
SECRETS = {"shop-secret": {"STORE_TOKEN": "dev-store-token-3f9a1c"}}
FIELDS = {"metadata.name": "api-5c4b-b2", "metadata.namespace": "shop"}


def shop_env(container: dict[str, Any] = SHOP_API, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "cluster": CLUSTER,
        "config_maps": CONFIG_MAPS,
        "secrets": SECRETS,
        "fields": FIELDS,
    }
    args.update(kw)
    return import_env(container, **args)


def test_the_shop_api_environment() -> None:
    env = shop_env()
    values = env.as_dict()
    assert values["STORE_URL"] == "http://127.0.0.2:8080"
    assert values["STORE_HEALTH_URL"] == "http://127.0.0.2:8080/healthz"
    assert values["GREETING"] == "Welcome to the shop"
    assert values["STORE_TOKEN"] == "dev-store-token-3f9a1c"
    assert values["POD_NAMESPACE"] == "shop" and values["SERVICE"] == "api"
    assert values["STORE_SERVICE_HOST"] == "127.0.0.2"
    assert values["STORE_SERVICE_PORT"] == "8080"
    assert values["WEB_SERVICE_PORT"] == "18080"
    assert values["CACHE_DB_SERVICE_PORT_METRICS"] == "40001"
    store_url = env.get("STORE_HEALTH_URL")
    assert store_url is not None
    assert store_url.cluster_value == "http://store.shop.svc.cluster.local:8080/healthz"
    assert env.notes == ()


def test_secrets_are_masked_for_logs_and_summaries() -> None:
    env = shop_env()
    assert env.masked()["STORE_TOKEN"] == SECRET_MASK
    assert env.masked()["GREETING"] == "Welcome to the shop"
    summary = env.summary()
    assert "STORE_TOKEN" in summary and "dev-store-token" not in summary


def test_a_value_built_from_a_secret_is_secret_too() -> None:
    container = {
        "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "DB_URL", "value": "postgres://app:$(PW)@store:8080/db"},
            {"name": "PLAIN", "value": "$(NOT_SECRET)"},
        ]
    }
    env = shop_env(container, secrets={"s": {"pw": "hunter2"}})
    db = env.get("DB_URL")
    assert db is not None and db.secret
    assert db.value == "postgres://app:hunter2@127.0.0.2:8080/db"
    assert env.masked()["DB_URL"] == SECRET_MASK
    plain = env.get("PLAIN")
    assert plain is not None and not plain.secret


def test_env_from_with_prefix_order_and_invalid_names() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "base"}},
            {"configMapRef": {"name": "more"}, "prefix": "APP_"},
            {"secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
        "env": [{"name": "LEVEL", "value": "debug"}, {"name": "REF", "value": "$(APP_X)"}],
    }
    env = shop_env(
        container,
        config_maps={
            "base": {"LEVEL": "info", "STORE_ADDR": "store:8080", "1BAD": "x"},
            "more": {"X": "http://web"},
        },
        secrets={"creds": {"TOKEN": "t0k"}},
    )
    values = env.as_dict()
    assert values["LEVEL"] == "debug"  # env wins over envFrom
    assert values["STORE_ADDR"] == "127.0.0.2:8080"
    assert values["APP_X"] == "http://127.0.0.3:18080"
    assert values["REF"] == "http://127.0.0.3:18080"  # expanded from the cluster value, then moved
    assert "1BAD" not in values
    token = env.get("TOKEN")
    assert token is not None and token.secret and token.source == "secret creds"
    assert any("1BAD" in note for note in env.notes)
    assert any("absent" in note for note in env.notes)


def test_the_pod_own_variables_win_over_service_links() -> None:
    container = {"env": [{"name": "STORE_SERVICE_HOST", "value": "custom"}]}
    assert shop_env(container).as_dict()["STORE_SERVICE_HOST"] == "custom"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "K"}}, "configMap 'nope'"),
        ({"configMapKeyRef": {"name": "shop-config", "key": "NOPE"}}, "key 'NOPE'"),
        ({"secretKeyRef": {"name": "nope", "key": "K"}}, "secret 'nope'"),
    ],
)
def test_a_missing_required_reference_is_one_line(ref: dict[str, Any], message: str) -> None:
    with pytest.raises(NotFoundError) as info:
        shop_env({"env": [{"name": "V", "valueFrom": ref}]})
    assert message in info.value.one_line() and "\n" not in info.value.one_line()


def test_missing_optional_references_are_skipped_with_a_note() -> None:
    container = {
        "env": [
            {
                "name": "A",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "K", "optional": True}},
            },
            {
                "name": "B",
                "valueFrom": {
                    "secretKeyRef": {"name": "shop-secret", "key": "NOPE", "optional": True}
                },
            },
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ]
    }
    env = shop_env(container)
    assert {"A", "B", "C"}.isdisjoint(env.as_dict())
    assert len(env.notes) == 3


@pytest.mark.parametrize(
    ("resource", "divisor", "expected"),
    [
        ("limits.memory", None, str(128 * 2**20)),
        ("limits.memory", "1Mi", "128"),
        ("requests.cpu", None, "1"),  # 10m rounds up to one core
        ("requests.cpu", "1m", "10"),
        ("limits.cpu", None, None),  # not set: the kubelet would use the node's capacity
    ],
)
def test_resource_field_refs(resource: str, divisor: str | None, expected: str | None) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    container = {**SHOP_API, "env": [{"name": "R", "valueFrom": {"resourceFieldRef": ref}}]}
    assert shop_env(container).as_dict().get("R") == expected


def test_service_links_only_for_forwarded_services() -> None:
    links = service_link_vars(CLUSTER)
    assert links["STORE_SERVICE_HOST"] == "127.0.0.2"
    assert links["CACHE_DB_SERVICE_PORT"] == "6379"
    assert links["CACHE_DB_SERVICE_PORT_REDIS"] == "6379"
    assert not any(k.startswith("API_") for k in links)


TRICKY = [
    "plain",
    "",
    "with space",
    "it's quoted",
    'say "hi"',
    "multi\nline",
    "back\\slash",
    "dollar $HOME and $(VAR)",
    "#not a comment",
    "tab\there",
    "both ' and \" and \\n",
    "équipe ☃",
]


@pytest.mark.parametrize("value", TRICKY)
def test_dotenv_reads_back_exactly(value: str, tmp_path: Any) -> None:
    dotenv = pytest.importorskip("dotenv")
    path = tmp_path / ".env"
    path.write_text(format_dotenv([ImportedVar("V", value, "value")], header=["test"]))
    assert dotenv.dotenv_values(path, interpolate=False) == {"V": value}


@pytest.mark.parametrize("value", [v for v in TRICKY if "\n" not in v and "'" not in v])
def test_single_quoted_values_read_back_in_a_shell(value: str, tmp_path: Any) -> None:
    path = tmp_path / ".env"
    path.write_text(f"V={quote_dotenv(value)}\n")
    out = subprocess.run(
        ["sh", "-c", 'set -a; . "$0"; printf %s "$V"', str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == value


def test_dotenv_file_marks_secret_sources_without_logging_values() -> None:
    text = format_dotenv(shop_env(), header=["cockpit env api"])
    assert text.startswith("# cockpit env api\n")
    assert "# STORE_TOKEN: from secret shop-secret\n" in text
    assert "STORE_URL='http://127.0.0.2:8080'\n" in text
