"""The shop demo app as real local processes, and the shape of its Kubernetes manifest."""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
APP = SHOP / "app.py"
MANIFEST = SHOP / "k8s" / "shop.yaml"
HOST = "127.0.0.1"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+) ")
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) (web|api|store) .* pod=\S+$"
)
# Environment variables of the test runner that would change how the app behaves.
SCRUBBED = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "COCKPIT_LOCAL",
    "POD_NAME",
    "GREETING",
    "STORE_TOKEN",
    "STORE_HEALTH_URL",
    "API_URL",
    "STORE_URL",
    "LOG_SEED",
)


class ShopProcess:
    """One app.py process on an ephemeral 127.0.0.1 port, its stdout collected line by line."""

    def __init__(self, **env: str) -> None:
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k.upper() not in SCRUBBED and not k.upper().startswith("PYTHON")
        }
        # A quiet heartbeat unless a test asks for noise.
        child_env.update({"BIND": HOST, "PORT": "0", "LOG_INTERVAL": "30", **env})
        self.proc = subprocess.Popen(
            [sys.executable, str(APP)],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate(self.lines)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.lines[-20:])
                    raise AssertionError(f"timed out; last output:\n{tail}")
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"process exited {self.proc.returncode}:\n{self.output}")
                self._changed.wait(min(left, 0.1))

    def wait_for_line(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def search(lines: list[str]) -> re.Match[str] | None:
            return next((m for line in lines if (m := regex.search(line))), None)

        match: re.Match[str] = self.wait_for(search, timeout)
        return match

    def started(self) -> ShopProcess:
        self.port = int(self.wait_for_line(LISTENING.pattern).group(1))
        return self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to this PID only
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)


@pytest.fixture
def shop() -> Iterator[Callable[..., ShopProcess]]:
    """Start app.py processes; each is stopped by PID at the end of the test."""
    started: list[ShopProcess] = []

    def start(**env: str) -> ShopProcess:
        process = ShopProcess(**env)
        started.append(process)
        return process.started()

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def chain(shop: Callable[..., ShopProcess]) -> dict[str, ShopProcess]:
    """web -> api -> store, wired the way the cluster wires them, but on 127.0.0.1 ports."""
    store = shop(SERVICE="store", POD_NAME="store-7d9f-a1", STORE_TOKEN="t0ken", GREETING="hi")
    api = shop(
        SERVICE="api",
        POD_NAME="api-5c4b-b2",
        STORE_URL=store.url,
        STORE_HEALTH_URL=f"{store.url}/healthz",
        STORE_TOKEN="t0ken",
        GREETING="hi",
        COCKPIT_LOCAL="1",
    )
    web = shop(SERVICE="web", POD_NAME="web-6a8e-c3", API_URL=api.url, GREETING="hi")
    return {"web": web, "api": api, "store": store}


def request(
    process: ShopProcess,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | Iterator[bytes] | None = None,
    chunked: bool = False,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, process.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(process: ShopProcess, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, body = request(process, path, **kwargs)
    return status, json.loads(body)


def expected_bytes(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


# -- the running app ----------------------------------------------------------------------


def test_web_answers_with_the_whole_chain_and_its_pods(chain: dict[str, ShopProcess]) -> None:
    status, answer = get_json(chain["web"], "/")

    assert status == 200
    assert answer["chain"] == [
        {"service": "web", "pod": "web-6a8e-c3", "served_by": "cluster"},
        {"service": "api", "pod": "api-5c4b-b2", "served_by": "local"},
        {"service": "store", "pod": "store-7d9f-a1", "served_by": "cluster"},
    ]
    api = answer["upstream"]
    store = api["upstream"]
    assert (answer["service"], api["service"], store["service"]) == ("web", "api", "store")
    assert answer["greeting"] == api["greeting"] == store["greeting"] == "hi"
    assert api["store_health"] == "ok"
    assert store["token"] == "valid"
    assert store["items"] and all({"sku", "name", "price_cents"} <= set(i) for i in store["items"])
    assert "upstream" not in store


def test_baggage_and_trace_context_reach_every_hop(chain: dict[str, ShopProcess]) -> None:
    headers = {
        "baggage": "cockpit-session=abc123,userId=alice",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    status, answer = get_json(chain["web"], "/", headers=headers)

    assert status == 200
    hops = [answer, answer["upstream"], answer["upstream"]["upstream"]]
    assert [hop["baggage"] for hop in hops] == [headers["baggage"]] * 3

    _, plain = get_json(chain["web"], "/")
    assert plain["upstream"]["upstream"]["baggage"] is None


def test_pod_name_falls_back_to_hostname(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store")
    _, answer = get_json(store, "/")
    assert answer["pod"] == socket.gethostname()
    assert answer["token"] == "unchecked"


def test_store_reports_a_wrong_token(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store", STORE_TOKEN="right")
    api = shop(SERVICE="api", STORE_URL=store.url, STORE_TOKEN="wrong")
    status, answer = get_json(api, "/")
    assert status == 200
    assert answer["upstream"]["token"] == "invalid"
    store.wait_for_line(r" WARNING store request with an invalid store token ")


def test_healthz(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store")
    assert request(store, "/healthz") == (200, b"ok")


def test_get_echo_returns_request_headers_without_secrets(
    shop: Callable[..., ShopProcess],
) -> None:
    api = shop(SERVICE="api", POD_NAME="api-0")
    status, answer = get_json(
        api, "/echo?x=1", headers={"X-Cockpit-Test": "yes", "X-Store-Token": "hush"}
    )
    assert status == 200
    assert answer["service"] == "api"
    assert answer["pod"] == "api-0"
    assert answer["path"] == "/echo?x=1"
    assert answer["headers"]["x-cockpit-test"] == "yes"
    assert answer["headers"]["x-store-token"] == "<redacted>"
    assert "hush" not in json.dumps(answer)


def test_post_echo_counts_and_hashes_the_body(shop: Callable[..., ShopProcess]) -> None:
    web = shop(SERVICE="web")
    body = os.urandom(3 * 1024 * 1024 + 7)

    status, answer = get_json(web, "/echo", method="POST", body=body)
    assert status == 200
    assert answer["bytes"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()

    pieces = iter([body[:1000], body[1000:500_000], body[500_000:]])
    status, answer = get_json(web, "/echo", method="POST", body=pieces, chunked=True)
    assert status == 200
    assert (answer["bytes"], answer["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())

    status, answer = get_json(web, "/echo", method="POST", body=b"")
    assert (status, answer["bytes"]) == (200, 0)


def test_bytes_streams_exactly_n_bytes(shop: Callable[..., ShopProcess]) -> None:
    web = shop(SERVICE="web")
    for n in (0, 1, 65_536, 5_000_003):
        status, body = request(web, f"/bytes?n={n}")
        assert status == 200
        assert body == expected_bytes(n)
    for bad in ("-1", "lots", "1e3"):
        status, answer = get_json(web, f"/bytes?n={bad}")
        assert status == 400
        assert "error" in answer


def test_unknown_paths_and_methods(shop: Callable[..., ShopProcess]) -> None:
    web = shop(SERVICE="web")
    assert get_json(web, "/nope")[0] == 404
    assert get_json(web, "/", method="POST", body=b"x")[0] == 405


def test_keep_alive_connection_serves_several_requests(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store")
    conn = http.client.HTTPConnection(HOST, store.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            conn.request("POST", "/echo", body=b"abc")
            response = conn.getresponse()
            assert json.loads(response.read())["bytes"] == 3
    finally:
        conn.close()


def test_failed_upstream_is_a_502_with_an_error_line(shop: Callable[..., ShopProcess]) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind((HOST, 0))
        dead = sock.getsockname()[1]
    api = shop(SERVICE="api", POD_NAME="api-0", STORE_URL=f"http://{HOST}:{dead}")
    web = shop(SERVICE="web", POD_NAME="web-0", API_URL=api.url)

    status, answer = get_json(api, "/")
    assert status == 502
    assert answer["service"] == "api"
    assert answer["upstream_url"] == f"http://{HOST}:{dead}/"
    assert "failed" in answer["error"]
    api.wait_for_line(rf" ERROR api upstream http://127\.0\.0\.1:{dead}/ failed: .* pod=api-0$")
    api.wait_for_line(r" ERROR api GET / 502 [\d.]+ms pod=api-0$")

    status, answer = get_json(web, "/")
    assert status == 502
    assert answer["upstream"]["service"] == "api"
    assert answer["upstream"]["upstream_url"] == f"http://{HOST}:{dead}/"
    web.wait_for_line(r" ERROR web upstream .* failed: HTTP 502 pod=web-0$")


def test_one_log_line_per_request(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store", POD_NAME="store-0")
    request(store, "/healthz")
    line = store.wait_for_line(r".* GET /healthz .*").group(0)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO store GET /healthz 200 \d+\.\dms pod=store-0",
        line,
    )


def test_background_logs_warn_err_and_raise(shop: Callable[..., ShopProcess]) -> None:
    store = shop(SERVICE="store", POD_NAME="store-0", LOG_INTERVAL="0.01", LOG_SEED="7")

    def noisy_enough(lines: list[str]) -> bool:
        text = "\n".join(lines)
        return all(
            marker in text
            for marker in (" INFO store heartbeat ", " WARNING store ", " ERROR store ")
        ) and ("Traceback (most recent call last):" in text and "KeyError" in text)

    store.wait_for(noisy_enough, timeout=20)
    lines = list(store.lines)
    store.stop()
    assert store.proc.returncode == 0
    # Every line is a log line, except the body of a traceback that follows an ERROR line.
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif LOG_LINE.match(line):
            in_traceback = False
        else:
            assert in_traceback, f"stray line: {line!r}"


def test_log_seed_makes_the_noise_repeatable(shop: Callable[..., ShopProcess]) -> None:
    def first_ticks(seed: str) -> list[str]:
        process = shop(SERVICE="web", POD_NAME="web-0", LOG_INTERVAL="0.005", LOG_SEED=seed)
        process.wait_for_line(r" tick=60\b", timeout=20)
        process.stop()
        # Drop timestamps and traceback file paths: both differ between runs.
        messages = [line.split(" ", 1)[1] for line in process.lines if LOG_LINE.match(line)]
        ticks = [m for m in messages if re.search(r" tick=\d+\b", m)]
        return ticks[:60]

    assert first_ticks("42") == first_ticks("42")
    assert first_ticks("42") != first_ticks("43")


def test_the_secret_is_never_logged(shop: Callable[..., ShopProcess]) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    store = shop(SERVICE="store", STORE_TOKEN=secret, LOG_INTERVAL="0.01", LOG_SEED="3")
    api = shop(SERVICE="api", STORE_TOKEN=secret, STORE_URL=store.url, LOG_INTERVAL="0.01")
    for _ in range(5):
        assert get_json(api, "/")[1]["upstream"]["token"] == "valid"
    get_json(store, "/echo", headers={"X-Store-Token": secret})
    store.wait_for_line(r"^Traceback", timeout=20)
    for process in (store, api):
        process.stop()
        assert "STORE_TOKEN is set" in process.output
        assert secret not in process.output


def test_sigterm_exits_zero_promptly_even_mid_download(shop: Callable[..., ShopProcess]) -> None:
    web = shop(SERVICE="web")
    conn = http.client.HTTPConnection(HOST, web.port, timeout=10)
    conn.request("GET", f"/bytes?n={10 * 1024**3}")
    response = conn.getresponse()
    assert len(response.read(1024 * 1024)) == 1024 * 1024

    started = time.monotonic()
    os.kill(web.proc.pid, signal.SIGTERM)
    assert web.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2.0
    conn.close()
    web.wait_for_line(r" INFO web received SIGTERM, shutting down ")


def test_sigterm_closes_the_listener_first_and_lets_a_request_in_flight_finish(
    shop: Callable[..., ShopProcess],
) -> None:
    store = shop(SERVICE="store")
    with socket.create_connection((HOST, store.port), timeout=10) as conn:
        conn.sendall(
            b"POST /echo HTTP/1.1\r\nHost: store\r\nContent-Length: 10\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        # "100 Continue": the request is being answered, its body still to come.
        assert conn.recv(1024).startswith(b"HTTP/1.1 100 ")
        os.kill(store.proc.pid, signal.SIGTERM)
        store.wait_for_line(r" INFO store received SIGTERM, shutting down ")
        # The port is free at once, for the next instance, while this one still answers.
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((HOST, store.port)) != 0:
                    break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.01)
        assert store.proc.poll() is None
        conn.sendall(b"helloworld")
        answer = b""
        while chunk := conn.recv(65536):  # it closes the connection after this answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head
    assert json.loads(body)["sha256"] == hashlib.sha256(b"helloworld").hexdigest()
    assert store.proc.wait(timeout=10) == 0


def test_unknown_service_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(APP)],
        env={**os.environ, "SERVICE": "cart", "BIND": HOST, "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert "SERVICE must be one of web, api, store" in result.stderr


def test_app_uses_the_standard_library_only() -> None:
    tree = ast.parse(APP.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    assert modules
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}


# -- the manifest ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None]
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    assert len(by_key) == len(docs), "duplicate objects"
    return by_key


def deployments(manifest: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: doc for (kind, name), doc in manifest.items() if kind == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(deployment)["env"]}


def test_manifest_has_the_shop_objects_and_no_namespace(
    manifest: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert set(manifest) == {
        ("ConfigMap", "shop-config"),
        ("Secret", "shop-secret"),
        *((kind, name) for kind in ("Deployment", "Service") for name in ("web", "api", "store")),
    }
    assert "namespace:" not in MANIFEST.read_text()
    for doc in manifest.values():
        assert "namespace" not in doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shop"
    assert "GREETING" in manifest["ConfigMap", "shop-config"]["data"]
    assert "STORE_TOKEN" in manifest["Secret", "shop-secret"]["stringData"]


def test_deployments_run_the_local_image_with_the_right_env(
    manifest: dict[tuple[str, str], dict[str, Any]],
) -> None:
    found = deployments(manifest)
    assert {name: d["spec"]["replicas"] for name, d in found.items()} == {
        "web": 1,
        "api": 1,
        "store": 2,
    }
    for name, deployment in found.items():
        labels = {"app": name, "app.kubernetes.io/part-of": "shop"}
        assert deployment["spec"]["selector"]["matchLabels"] == {"app": name}
        assert deployment["spec"]["template"]["metadata"]["labels"] == labels
        c = container(deployment)
        assert c["image"] == "cockpit/shop:dev"
        assert c["imagePullPolicy"] == "Never"
        assert c["command"] == ["python3", "/app/app.py"]
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"] == {"cpu": "10m", "memory": "32Mi"}
        env = env_of(deployment)
        assert env["SERVICE"]["value"] == name
        assert env["PORT"]["value"] == "8080"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["GREETING"]["valueFrom"]["configMapKeyRef"] == {
            "name": "shop-config",
            "key": "GREETING",
        }
    assert env_of(found["web"])["API_URL"]["value"] == "http://api:8080"
    assert env_of(found["api"])["STORE_URL"]["value"] == "http://store:8080"
    secret_refs = [
        item["valueFrom"]["secretKeyRef"]
        for d in found.values()
        for item in container(d)["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    ]
    assert secret_refs
    assert all(ref == {"name": "shop-secret", "key": "STORE_TOKEN"} for ref in secret_refs)


def test_env_expansions_refer_to_variables_defined_earlier(
    manifest: dict[tuple[str, str], dict[str, Any]],
) -> None:
    api_env = env_of(manifest["Deployment", "api"])
    assert api_env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert api_env["STORE_HEALTH_URL"]["value"] == (
        "http://store.$(POD_NAMESPACE).svc.cluster.local:8080/healthz"
    )
    # Kubernetes only expands $(VAR) when VAR comes earlier in the list.
    for deployment in deployments(manifest).values():
        seen: set[str] = set()
        for item in container(deployment)["env"]:
            for ref in re.findall(r"\$\((\w+)\)", item.get("value", "")):
                assert ref in seen, f"{item['name']} uses $({ref}) before it is defined"
            seen.add(item["name"])


def test_services_select_their_pods_and_store_uses_a_named_target_port(
    manifest: dict[tuple[str, str], dict[str, Any]],
) -> None:
    found = deployments(manifest)
    target_ports = {}
    for name in ("web", "api", "store"):
        spec = manifest["Service", name]["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP"
        assert spec["selector"] == {"app": name}
        (port,) = spec["ports"]
        assert port["port"] == 8080
        target_ports[name] = port["targetPort"]
        container_ports = {p["name"]: p["containerPort"] for p in container(found[name])["ports"]}
        if isinstance(port["targetPort"], str):
            assert port["targetPort"] in container_ports
        else:
            assert port["targetPort"] in container_ports.values()
    assert target_ports == {"web": 8080, "api": 8080, "store": "http"}


def test_pods_meet_the_restricted_pod_security_standard(
    manifest: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name, deployment in deployments(manifest).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for key in ("hostNetwork", "hostPID", "hostIPC", "volumes"):
            assert key not in pod, (name, key)
        sc = container(deployment)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert "privileged" not in sc, name


def test_dockerfile_puts_the_app_where_the_manifest_runs_it() -> None:
    text = (SHOP / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^COPY app\.py /app/app\.py$", text, re.M)
    assert re.search(r"^USER 10001\b", text, re.M)
