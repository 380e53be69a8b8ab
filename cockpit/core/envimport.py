"""The local service's environment, imported from its Deployment: Kubernetes' own rules for
``env``, ``envFrom``, ``valueFrom`` and ``$(VAR)``, with cluster service names rewritten to the
local forwards, plus ``<SVC>_SERVICE_HOST``/``_PORT`` variables pointing at them.

Pure: the adapter (``cockpit.adapters.envsource``) reads the objects; this decides the values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from cockpit.errors import ConfigError, NotFoundError

SECRET_MASK = "********"


# -- where services are reachable locally ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardedPort:
    """One port of a service and the local port its forward listens on."""

    port: int  # the Service's port
    local_port: int
    name: str = ""  # the Service port's name ("" when unnamed)


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """A cluster service and the loopback address of its forward."""

    name: str
    host: str  # "127.0.0.2"
    ports: tuple[ForwardedPort, ...]

    def local_port(self, port: int) -> int | None:
        for p in self.ports:
            if p.port == port:
                return p.local_port
        return None


@dataclass(frozen=True, slots=True)
class ClusterAddresses:
    """The namespace the service runs in and every forwarded service in it."""

    namespace: str
    services: Mapping[str, ServiceAddress]
    cluster_domain: str = "cluster.local"


# -- rewriting values --------------------------------------------------------------------

# Ports a URL means when it names none.
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "grpc": 80,
    "h2c": 80,
    "redis": 6379,
    "rediss": 6379,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mongodb": 27017,
    "amqp": 5672,
    "amqps": 5671,
    "nats": 4222,
    "memcached": 11211,
    "kafka": 9092,
    "ftp": 21,
}

# A hostname-looking token: labels joined by dots, an optional trailing dot (FQDN), an
# optional :port. The lookbehind keeps "mystore", "x.store", "my-store" and "/path/store"
# from matching "store"; the lookahead keeps "store-front" and "store_x" from matching.
_HOST_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_.\-/])(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?)"
    r"(?::(?P<port>[0-9]{1,5})(?![0-9]))?(?![A-Za-z0-9_\-])"
)
# The same, allowed right after "//" (a URL's authority) or "@" (after userinfo).
_AUTHORITY_TOKEN = re.compile(
    r"(?<=//)(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?)"
    r"(?::(?P<port>[0-9]{1,5})(?![0-9]))?(?![A-Za-z0-9_\-])"
)
# What follows a name that is really the user of "user:password@host" or "user@host".
_USERINFO_AFTER = re.compile(r"[^/?#@\s]*@")
_SCHEME_BEFORE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?:[^/?#@\s]*@)?$")
# Variable names whose value is a host even when it is one bare word ("DB_HOST=store"); a
# bare word elsewhere ("SERVICE=store", "MODE=web") is left alone.
_HOST_VAR = re.compile(
    r"(?:^|_)(?:HOST|HOSTNAME|HOSTS|ADDR|ADDRESS|ADDRS|SERVER|SERVERS|ENDPOINT|ENDPOINTS"
    r"|BROKER|BROKERS|NODE|NODES|PEER|PEERS|UPSTREAM|BACKEND|TARGET)$",
    re.IGNORECASE,
)


def _name_forms(cluster: ClusterAddresses) -> dict[str, tuple[ServiceAddress, bool]]:
    """Every way a pod in the namespace can name a forwarded service -> (service, dotted)."""
    forms: dict[str, tuple[ServiceAddress, bool]] = {}
    ns = cluster.namespace.lower()
    domain = cluster.cluster_domain.lower().strip(".")
    for name, address in cluster.services.items():
        svc = name.lower()
        forms[svc] = (address, False)
        for form in (f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.{domain}"):
            forms[form] = (address, True)
        forms[f"{svc}.{ns}.svc.{domain}."] = (address, True)
    return forms


def rewrite_value(var: str, value: str, cluster: ClusterAddresses) -> str:
    """``value`` with every mention of a forwarded service replaced by its local address.

    Rewritten: ``scheme://svc[.ns[.svc[.domain]]][:port]`` (the port too when the forward's
    differs, and added when the scheme's default port maps to another local port),
    ``svc:port`` anywhere, dotted names anywhere, and a bare ``svc`` when the variable's name
    says it holds a host (``*_HOST``, ``*_ADDR``...). A port the service does not have is
    left alone, as is everything that names no service.
    """
    forms = _name_forms(cluster)
    if not forms or not value:
        return value
    lowered = value.lower()
    if not any(name in lowered for name in forms):
        return value  # the common case, and the guarantee: no service named, no change
    host_var = bool(_HOST_VAR.search(var))
    edits: list[tuple[int, int, str]] = []
    taken: set[int] = set()
    for pattern in (_AUTHORITY_TOKEN, _HOST_TOKEN):
        for m in pattern.finditer(value):
            if m.start() in taken:
                continue
            found = forms.get(m["host"].lower())
            if found is None or _USERINFO_AFTER.match(value, m.end()):
                continue
            address, dotted = found
            scheme_m = _SCHEME_BEFORE.search(value, 0, m.start())
            replacement = _replacement(m, address, dotted, scheme_m, host_var, value)
            if replacement is not None:
                taken.add(m.start())
                edits.append((m.start(), m.end(), replacement))
    if not edits:
        return value
    out = []
    last = 0
    for start, end, text in sorted(edits):
        if start < last:
            continue
        out.append(value[last:start])
        out.append(text)
        last = end
    out.append(value[last:])
    return "".join(out)


def _replacement(
    m: re.Match[str],
    address: ServiceAddress,
    dotted: bool,
    scheme_m: re.Match[str] | None,
    host_var: bool,
    value: str,
) -> str | None:
    port_text = m["port"]
    if port_text is not None:
        local = address.local_port(int(port_text))
        return None if local is None else f"{address.host}:{local}"
    if scheme_m is not None:
        default = DEFAULT_PORTS.get(scheme_m["scheme"].lower())
        if default is None:
            return address.host  # the client picks the port; only the host moves
        local = address.local_port(default)
        if local is None:
            return None  # the service has no such port: as broken here as in the cluster
        return address.host if local == default else f"{address.host}:{local}"
    if dotted:
        return address.host
    # A bare word: a host only where the variable's name says so, and only as a whole item
    # of the value ("store" or "store,cache"), never inside a sentence.
    if host_var and _whole_item(value, m.start(), m.end()):
        return address.host
    return None


def _whole_item(value: str, start: int, end: int) -> bool:
    before = value[:start].rstrip()
    after = value[end:].lstrip()
    return (not before or before[-1] in ",;") and (not after or after[0] in ",;")


# -- $(VAR) expansion, as the kubelet does it ---------------------------------------------


def expand(value: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$(NAME)`` becomes NAME's value, or stays as written
    when NAME is not defined; ``$$`` is a literal ``$``; any other ``$`` stays as is."""
    if "$" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = value.find(")", i + 2)
            if close < 0:
                out.append("$(")  # an unclosed reference stays as written
                i += 2
            else:
                name = value[i + 2 : close]
                found = lookup(name)
                out.append(found if found is not None else f"$({name})")
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _references(value: str) -> set[str]:
    """The names ``value`` refers to with ``$(NAME)``."""
    names: set[str] = set()

    def record(name: str) -> str | None:
        names.add(name)
        return None

    expand(value, record)
    return names


# -- quantities for resourceFieldRef ------------------------------------------------------

_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes quantity ("250m", "1Gi", "1e3") as an exact number."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    number = Fraction(m[1])
    if m[2] is not None:
        return number * Fraction(10) ** int(m[2])
    return number * _SUFFIX[m[3] or ""]


# -- the import itself --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportedVar:
    name: str
    value: str = field(repr=False)  # never in a repr: it may be a secret
    source: str = "value"  # "value", "configMap shop-config", "secret shop-secret", ...
    secret: bool = False  # from a Secret, or built from one: never logged
    cluster_value: str = field(default="", repr=False)  # as the pod sees it (not rewritten)

    @property
    def shown(self) -> str:
        """The value for logs and screens: masked when it comes from a Secret."""
        return SECRET_MASK if self.secret else self.value


@dataclass(frozen=True, slots=True)
class ImportedEnv:
    vars: tuple[ImportedVar, ...]
    notes: tuple[str, ...] = ()  # what could not be imported, one line each

    def as_dict(self) -> dict[str, str]:
        return {v.name: v.value for v in self.vars}

    def masked(self) -> dict[str, str]:
        """Names and values with every secret-sourced value masked: safe to log."""
        return {v.name: v.shown for v in self.vars}

    def summary(self) -> str:
        """One line for a log: how many variables from where, names of the secret ones."""
        secrets = sorted(v.name for v in self.vars if v.secret)
        rewritten = sorted(v.name for v in self.vars if v.value != v.cluster_value)
        parts = [f"{len(self.vars)} variables"]
        if rewritten:
            parts.append(f"{len(rewritten)} pointed at local forwards ({', '.join(rewritten)})")
        if secrets:
            parts.append(f"secret: {', '.join(secrets)}")
        return "; ".join(parts)

    def get(self, name: str) -> ImportedVar | None:
        for v in self.vars:
            if v.name == name:
                return v
        return None


# Kubernetes 1.20's rule for names from envFrom (IsEnvVarName).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def service_link_vars(cluster: ClusterAddresses) -> dict[str, str]:
    """``<SVC>_SERVICE_HOST``, ``_SERVICE_PORT`` and ``_SERVICE_PORT_<NAME>`` for every
    forwarded service, pointing at the forwards (Kubernetes points them at the ClusterIP)."""
    out: dict[str, str] = {}
    for name in sorted(cluster.services):
        address = cluster.services[name]
        if not address.ports:
            continue
        prefix = name.upper().replace("-", "_")
        out[f"{prefix}_SERVICE_HOST"] = address.host
        out[f"{prefix}_SERVICE_PORT"] = str(address.ports[0].local_port)
        for p in address.ports:
            if p.name:
                out[f"{prefix}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.local_port)
    return out


@dataclass
class _Builder:
    cluster: ClusterAddresses
    what: str  # "container 'api' of deployment 'api'", for messages
    cluster_values: dict[str, str] = field(default_factory=dict)
    vars: dict[str, ImportedVar] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, name: str, cluster_value: str, source: str, secret: bool, rewrite: bool) -> None:
        local = rewrite_value(name, cluster_value, self.cluster) if rewrite else cluster_value
        self.cluster_values[name] = cluster_value
        self.vars.pop(name, None)  # a later definition wins, and takes the later place
        self.vars[name] = ImportedVar(name, local, source, secret, cluster_value)


def import_env(
    container: Mapping[str, Any],
    *,
    cluster: ClusterAddresses,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    fields: Mapping[str, str],
    resources: Mapping[str, Mapping[str, Any]] | None = None,
    what: str = "the container",
) -> ImportedEnv:
    """The environment of ``container`` (a Kubernetes container spec as JSON: ``env``,
    ``envFrom``, ``resources``, ``name``) for a local run.

    ``config_maps``/``secrets`` map names to decoded data (a missing name = does not exist);
    ``fields`` maps fieldRef paths ("metadata.name", "status.podIP", "metadata.labels['a']")
    to values; ``resources`` maps container names to their ``resources`` (for
    resourceFieldRef with another ``containerName``). Raises NotFoundError for a required
    ConfigMap/Secret/key that does not exist (the pod would not start either).
    """
    b = _Builder(cluster, what)
    links = service_link_vars(cluster)
    for ref in container.get("envFrom") or ():
        _env_from(b, ref, config_maps, secrets)
    for item in container.get("env") or ():
        _env_item(b, item, container, links, fields, resources, config_maps, secrets)
    for name, value in links.items():
        if name not in b.vars:  # the pod's own variables win, as in the kubelet
            b.set(name, value, "service link", False, False)
    return ImportedEnv(tuple(b.vars.values()), tuple(b.notes))


def _source_data(
    b: _Builder,
    kind: str,
    name: str,
    optional: bool,
    store: Mapping[str, Mapping[str, str]],
    var: str,
) -> Mapping[str, str] | None:
    data = store.get(name)
    if data is None:
        if optional:
            b.notes.append(f"{var}: optional {kind} '{name}' does not exist; skipped")
            return None
        raise NotFoundError(
            f"{kind} '{name}' used by {b.what} not found in namespace '{b.cluster.namespace}'"
        )
    return data


def _env_item(
    b: _Builder,
    item: Mapping[str, Any],
    container: Mapping[str, Any],
    links: Mapping[str, str],
    fields: Mapping[str, str],
    resources: Mapping[str, Mapping[str, Any]] | None,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> None:
    name = str(item.get("name", ""))
    value_from = item.get("valueFrom")
    if not value_from:
        raw = str(item.get("value") or "")

        def lookup(ref: str) -> str | None:
            if ref in b.cluster_values:
                return b.cluster_values[ref]
            return links.get(ref)

        expanded = expand(raw, lookup)
        # A value built from a secret-sourced variable is itself secret.
        secret = any(b.vars[r].secret for r in _references(raw) if r in b.vars)
        b.set(name, expanded, "value", secret, True)
        return
    if "configMapKeyRef" in value_from:
        ref = value_from["configMapKeyRef"]
        _key_ref(b, name, ref, "configMap", config_maps, secret=False)
    elif "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        _key_ref(b, name, ref, "secret", secrets, secret=True)
    elif "fieldRef" in value_from:
        path = str(value_from["fieldRef"].get("fieldPath", ""))
        if path in fields:
            b.set(name, fields[path], f"field {path}", False, False)
        else:
            b.notes.append(f"{name}: field {path!r} has no local value; skipped")
    elif "resourceFieldRef" in value_from:
        _resource_ref(b, name, value_from["resourceFieldRef"], container, resources)
    else:
        b.notes.append(f"{name}: unsupported valueFrom {sorted(value_from)}; skipped")


def _key_ref(
    b: _Builder,
    var: str,
    ref: Mapping[str, Any],
    kind: str,
    store: Mapping[str, Mapping[str, str]],
    *,
    secret: bool,
) -> None:
    source = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    data = _source_data(b, kind, source, optional, store, var)
    if data is None:
        return
    if key not in data:
        if optional:
            b.notes.append(f"{var}: key '{key}' not in optional {kind} '{source}'; skipped")
            return
        raise NotFoundError(f"key '{key}' not in {kind} '{source}' (used by {var} of {b.what})")
    b.set(var, data[key], f"{kind} {source}", secret, True)


def _resource_ref(
    b: _Builder,
    var: str,
    ref: Mapping[str, Any],
    container: Mapping[str, Any],
    resources: Mapping[str, Mapping[str, Any]] | None,
) -> None:
    resource = str(ref.get("resource", ""))
    other = ref.get("containerName")
    spec = (
        (resources or {}).get(str(other), {})
        if other and other != container.get("name")
        else container.get("resources") or {}
    )
    kind, _, res = resource.partition(".")
    quantity = (spec.get(kind) or {}).get(res) if kind in ("limits", "requests") else None
    if quantity is None:
        # The kubelet falls back to the node's allocatable, which a local run has no view of.
        b.notes.append(f"{var}: {resource} is not set on the container; skipped")
        return
    try:
        divisor = parse_quantity(str(ref.get("divisor") or "1"))
        amount = parse_quantity(str(quantity))
    except ValueError as exc:
        raise ConfigError(f"{var}: {exc}") from exc
    if divisor <= 0:
        raise ConfigError(f"{var}: divisor must be positive")
    b.set(var, str(math.ceil(amount / divisor)), f"resource {resource}", False, False)


def _env_from(
    b: _Builder,
    ref: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> None:
    prefix = str(ref.get("prefix") or "")
    if "configMapRef" in ref:
        kind, spec, store, secret = "configMap", ref["configMapRef"], config_maps, False
    elif "secretRef" in ref:
        kind, spec, store, secret = "secret", ref["secretRef"], secrets, True
    else:
        b.notes.append(f"envFrom: unsupported source {sorted(ref)}; skipped")
        return
    name = str(spec.get("name", ""))
    data = _source_data(b, kind, name, bool(spec.get("optional")), store, "envFrom")
    if data is None:
        return
    invalid = []
    for key in sorted(data):
        var = prefix + key
        if not _ENV_NAME.match(var):
            invalid.append(var)
            continue
        b.set(var, data[key], f"{kind} {name}", secret, True)
    if invalid:
        b.notes.append(f"envFrom {kind} '{name}': invalid names skipped: {', '.join(invalid)}")


# -- .env files ---------------------------------------------------------------------------


def quote_dotenv(value: str) -> str:
    """A value as a .env file (python-dotenv, docker compose, IDE env files) reads it back:
    single quotes (nothing inside is interpreted) unless the value holds a quote or a line
    break, then double quotes with backslash escapes."""
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def format_dotenv(env: ImportedEnv | Iterable[ImportedVar], header: Iterable[str] = ()) -> str:
    """The .env text: header comment lines, then ``NAME='value'`` lines."""
    items = env.vars if isinstance(env, ImportedEnv) else tuple(env)
    lines = [f"# {line}" for line in header]
    for v in items:
        if v.secret:
            lines.append(f"# {v.name}: from {v.source}")
        lines.append(f"{v.name}={quote_dotenv(v.value)}")
    return "\n".join(lines) + "\n"
