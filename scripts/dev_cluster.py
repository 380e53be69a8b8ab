#!/usr/bin/env python3
"""dev-cluster: a real single-node Kubernetes (1.20, from Debian's source package) on this machine.

    scripts/dev-cluster up|down|status|kubeconfig|build

Everything it starts is bound to loopback or the node bridge, sits in one cgroup with an
egress guard in front of it, and is stopped by PID on `down`. Built once into
$COCKPIT_CACHE (default ~/.cache/cockpit); `up` after `down` reuses that cache.
Stdlib only: it runs before cockpit's own environment exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

K8S_VERSION = "v1.20.2"
CACHE = Path(os.environ.get("COCKPIT_CACHE", Path.home() / ".cache" / "cockpit"))
STATE = Path(os.environ.get("COCKPIT_CLUSTER_STATE", "/var/lib/cockpit-dev"))
REPO = Path(__file__).resolve().parent.parent
BIN = CACHE / "k8s" / K8S_VERSION / "bin"
IMAGES = CACHE / "images"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
GO = "/usr/lib/go-1.19/bin"

NODE_IP = "10.250.0.1"
NODE_BRIDGE = "cockpit-node"
POD_BRIDGE = "cockpit0"
POD_CIDR = "10.251.0.0/24"
POD_GW = "10.251.0.1"
SERVICE_CIDR = "10.252.0.0/24"
KUBERNETES_SVC_IP = "10.252.0.1"
DNS_IP = NODE_IP
CLUSTER_DOMAIN = "cluster.local"
CGROUP_NAME = "cockpit-dev"
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")
GUARD_CHAIN = "COCKPIT-EGRESS"
MANGLE_CHAIN = "COCKPIT-UPLINK"
API_PORT = 6443
ETCD_PORTS = (2379, 2380)

APT_PACKAGES = (
    "etcd-server",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "debootstrap",
    "golang-1.19-go",
    "golang-github-modern-go-reflect2-dev",
    "rsync",
    "socat",
    "dnsmasq-base",
    "iproute2",
    "dpkg-dev",
    "build-essential",
    "conntrack",
    "util-linux",
    "gcc",
    "libc6-dev",
)
NEEDED_COMMANDS = {
    "etcd": "etcd-server",
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
    "socat": "socat",
    "dnsmasq": "dnsmasq-base",
    "ip": "iproute2",
    "conntrack": "conntrack",
    "gcc": "gcc",
    "rsync": "rsync",
    "dpkg-source": "dpkg-dev",
}


class Fail(Exception):
    """One clear line for the user; `up` rolls back what it started."""


def log(msg: str) -> None:
    print(f"dev-cluster: {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str] | str,
    *,
    check: bool = True,
    quiet: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    shell = isinstance(cmd, str)
    proc = subprocess.run(
        cmd,
        shell=shell,
        env=env,
        cwd=cwd,
        input=input,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        shown = cmd if shell else " ".join(cmd)
        raise Fail(f"`{shown}` failed (exit {proc.returncode}): {err[-1] if err else 'no output'}")
    return proc


# ---------------------------------------------------------------------------------- install


def ensure_packages() -> None:
    missing_cmds = [c for c in NEEDED_COMMANDS if shutil.which(c) is None]
    missing = [
        p
        for p in APT_PACKAGES
        if run(["dpkg-query", "-W", "-f=${Status}", p], check=False).stdout
        != b"install ok installed"
    ]
    if not missing and not missing_cmds and Path(GO).exists():
        return
    if os.geteuid() != 0:
        raise Fail(
            "missing Debian packages "
            + " ".join(missing)
            + " (run as root so apt-get can install them)"
        )
    log(f"installing Debian packages: {' '.join(missing) or '(re-check)'}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update"], env=env)
    run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], env=env)
    still = [c for c in NEEDED_COMMANDS if shutil.which(c) is None]
    if still:
        raise Fail(f"commands still missing after apt-get install: {' '.join(still)}")


def ensure_deb_src() -> None:
    src = Path("/etc/apt/sources.list.d/cockpit-src.sources")
    have = any(
        "deb-src" in p.read_text() for p in Path("/etc/apt").rglob("*.list*") if p.is_file()
    ) or any("deb-src" in p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*.sources"))
    if have:
        return
    src.write_text(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    run(["apt-get", "update"])


# ------------------------------------------------------------------------------------ build


def build() -> None:
    """Build the Kubernetes server binaries once from Debian bookworm's source package."""
    if all((BIN / b).exists() for b in BINARIES):
        return
    ensure_packages()
    ensure_deb_src()
    srcroot = CACHE / "src"
    srcroot.mkdir(parents=True, exist_ok=True)
    trees = sorted(srcroot.glob("kubernetes-1.20*"))
    if not trees:
        log("fetching Debian's kubernetes source package")
        run(["apt-get", "source", "kubernetes"], cwd=srcroot)  # also applies Debian's patches
        trees = sorted(srcroot.glob("kubernetes-1.20*"))
    if not trees:
        raise Fail("apt-get source kubernetes produced no source tree")
    tree = trees[-1]
    # Go 1.19 + vendored reflect2 v1.0.1 crashes (SIGSEGV) on map-to-JSON; Debian's 1.0.2 fixes it.
    vendored = tree / "vendor/github.com/modern-go/reflect2"
    if not (vendored / "go_above_118.go").exists():
        shutil.rmtree(vendored)
        shutil.copytree(
            "/usr/share/gocode/src/github.com/modern-go/reflect2",
            vendored,
            ignore=shutil.ignore_patterns("go.mod", "*_test.go"),
        )
    log("compiling Kubernetes " + K8S_VERSION + " (one time, ~9 min on 2 cores)")
    t0 = time.monotonic()
    env = dict(
        os.environ,
        PATH=f"{GO}:{os.environ['PATH']}",
        GOPATH=str(tree / ".go"),
        CGO_ENABLED="0",
        HOME=str(CACHE / "gohome"),
        GOFLAGS="-mod=vendor",
        KUBE_GIT_VERSION=K8S_VERSION,
        KUBE_GIT_TREE_STATE="clean",
        KUBE_GIT_COMMIT="faecb196815e248d3ecfb03c680a4507229c2a56",
        KUBE_BUILD_PLATFORMS="linux/amd64",
    )
    (tree / ".go/src/k8s.io").mkdir(parents=True, exist_ok=True)
    link = tree / ".go/src/k8s.io/kubernetes"
    if not link.exists():
        link.symlink_to("../../..")
    logf = CACHE / "build.log"
    with logf.open("wb") as out:
        proc = subprocess.run(
            ["make", "WHAT=" + " ".join(f"cmd/{b}" for b in BINARIES)],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise Fail(f"Kubernetes build failed (exit {proc.returncode}); see {logf}")
    BIN.mkdir(parents=True, exist_ok=True)
    for b in BINARIES:
        shutil.copy2(tree / "_output/bin" / b, BIN / b)
    log(f"built in {time.monotonic() - t0:.0f} s into {BIN}")


def cmd_build(_: argparse.Namespace) -> None:
    build()
    build_images()


# ----------------------------------------------------------------------------------- images


PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGINT, done); signal(SIGTERM, done);
    for (;;) pause();
}
"""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def docker_archive(out: Path, tag: str, layers: list[Path], config: dict[str, object]) -> None:
    """Write a `docker save`-format archive (what `ctr images import` reads) from layer tars."""
    work = out.with_suffix(".d")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    diff_ids, names = [], []
    for i, layer in enumerate(layers):
        (work / f"l{i}").mkdir()
        shutil.copy2(layer, work / f"l{i}" / "layer.tar")
        diff_ids.append("sha256:" + _sha256_file(layer))
        names.append(f"l{i}/layer.tar")
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "cockpit dev-cluster"} for _ in layers],
    }
    raw = json.dumps(cfg, sort_keys=True).encode()
    cfg_name = hashlib.sha256(raw).hexdigest() + ".json"
    (work / cfg_name).write_bytes(raw)
    (work / "manifest.json").write_text(
        json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}])
    )
    tmp = out.with_suffix(".tmp")
    run(["tar", "-C", str(work), "-cf", str(tmp), "."])
    tmp.rename(out)
    shutil.rmtree(work)


IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _layer(root: Path, out: Path) -> None:
    """An image layer: ``root``'s tree as a tar owned by root, whoever builds it."""
    run(["tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0", "-cf", str(out), "."])


def _digest_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_images() -> list[Path]:
    """pause, a Debian python3 base, the demo shop app and the cockpit agent; rebuilt only when
    inputs change."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []

    pause = IMAGES / "pause.tar"
    if not pause.exists():
        work = IMAGES / "pause-build"
        shutil.rmtree(work, ignore_errors=True)
        (work / "root").mkdir(parents=True)
        (work / "pause.c").write_text(PAUSE_C)
        run(["gcc", "-static", "-Os", "-o", str(work / "root/pause"), str(work / "pause.c")])
        _layer(work / "root", work / "layer.tar")
        docker_archive(
            pause,
            "cockpit/pause:dev",
            [work / "layer.tar"],
            {"Entrypoint": ["/pause"], "User": "65535:65535"},
        )
        shutil.rmtree(work)
    built.append(pause)

    base_layer = IMAGES / "python-base.layer.tar"
    base = IMAGES / "python-base.tar"
    if not base_layer.exists():
        log("bootstrapping a minimal Debian bookworm rootfs with python3 (one time)")
        rootfs = IMAGES / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,ca-certificates,curl,tar",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ]
        )
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
        ):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / junk).mkdir(parents=True, exist_ok=True)
        tmp = base_layer.with_suffix(".tmp")
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tmp), "."])
        tmp.rename(base_layer)
        shutil.rmtree(rootfs)
    if not base.exists():
        docker_archive(
            base,
            "cockpit/python:dev",
            [base_layer],
            {
                "Cmd": ["python3"],
                "Env": [
                    IMAGE_PATH,
                    "PYTHONUNBUFFERED=1",
                ],
            },
        )
    built.append(base)

    app = REPO / "examples/shop/app.py"
    if app.exists():
        shop = IMAGES / f"shop-{_digest_of([app])}.tar"
        if not shop.exists():
            for old in IMAGES.glob("shop-*.tar"):
                old.unlink()
            work = IMAGES / "shop-build"
            shutil.rmtree(work, ignore_errors=True)
            (work / "root/app").mkdir(parents=True)
            shutil.copy2(app, work / "root/app/app.py")
            _layer(work / "root", work / "layer.tar")
            docker_archive(
                shop,
                "cockpit/shop:dev",
                [base_layer, work / "layer.tar"],
                {
                    "Cmd": ["python3", "/app/app.py"],
                    "WorkingDir": "/app",
                    "Env": [
                        IMAGE_PATH,
                        "PYTHONUNBUFFERED=1",
                    ],
                    "User": "10001",
                },
            )
            shutil.rmtree(work)
        built.append(shop)
    if (REPO / "cockpit/agent").exists():
        built.append(_agent_image(base_layer))
    return built


# bookworm's glibc is 2.36: any manylinux wheel up to that runs in the base image.
AGENT_PLATFORMS = (
    "manylinux_2_36_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def _agent_image(base_layer: Path) -> Path:
    """cockpit/agent:dev = the python base + the agent's wheels (pip --target, for bookworm's
    Python 3.11) + the cockpit package's core and agent (the only parts the agent imports)."""
    pkg = REPO / "cockpit"
    sources = sorted(
        [
            pkg / "__init__.py",
            pkg / "errors.py",
            *(pkg / "core").glob("*.py"),
            *(pkg / "agent").glob("*.py"),
        ]
    )
    requirements = pkg / "agent/requirements.txt"
    out = IMAGES / f"agent-{_digest_of([requirements, *sources])}.tar"
    if out.exists():
        return out
    for old in IMAGES.glob("agent-*.tar"):
        old.unlink()
    log("building the cockpit agent image")
    work = IMAGES / "agent-build"
    shutil.rmtree(work, ignore_errors=True)
    site = work / "root/opt/cockpit/site"
    site.mkdir(parents=True)
    platforms = [arg for p in AGENT_PLATFORMS for arg in ("--platform", p)]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--no-compile",
            "-r",
            str(requirements),
        ]
    )
    for src in sources:
        dest = site / src.relative_to(pkg.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    # Bytecode compiled once here (3.11 magic, hash-checked so mtimes do not matter): the
    # agent's root filesystem is read-only, and a cold start should not compile asyncssh.
    run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            str(site),
        ],
        check=False,
    )
    _layer(work / "root", work / "layer.tar")
    docker_archive(
        out,
        "cockpit/agent:dev",
        [base_layer, work / "layer.tar"],
        {
            "Cmd": ["python3", "-m", "cockpit.agent"],
            "WorkingDir": "/",
            "Env": [
                IMAGE_PATH,
                "PYTHONPATH=/opt/cockpit/site",
                "PYTHONUNBUFFERED=1",
                "PYTHONDONTWRITEBYTECODE=1",
            ],
            "User": "65532:65532",
        },
    )
    shutil.rmtree(work)
    return out


def import_images(paths: list[Path]) -> None:
    stamp_dir = STATE / "imported"
    stamp_dir.mkdir(parents=True, exist_ok=True)
    for p in paths:
        stamp = stamp_dir / (p.name + ".stamp")
        sig = f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
        if stamp.exists() and stamp.read_text() == sig:
            continue
        run(
            [
                "ctr",
                "--address",
                str(CONTAINERD_SOCK),
                "-n",
                "k8s.io",
                "images",
                "import",
                "--no-unpack" if False else "--all-platforms",
                str(p),
            ]
        )
        stamp.write_text(sig)


# ------------------------------------------------------------------------------ processes

RUN = Path("/run/cockpit-dev")
CONTAINERD_SOCK = RUN / "containerd.sock"
PIDS = STATE / "pids"
LOGS = STATE / "logs"
PKI = STATE / "pki"
CONF = STATE / "conf"
KUBECONFIG = STATE / "admin.kubeconfig"
CGROUP = CGROUP_ROOT / CGROUP_NAME
ORDER = (
    "etcd",
    "dnsmasq",
    "containerd",
    "kube-apiserver",
    "api-relay",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "dns-sync",
)


def _join_cgroup() -> None:
    (CGROUP / "cgroup.procs").write_text(str(os.getpid()))


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    out = (LOGS / f"{name}.log").open("ab")
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(STATE),
        "AWS_EC2_METADATA_DISABLED": "true",
        "LANG": "C.UTF-8",
    }
    full_env.update(env or {})
    proc = subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        start_new_session=True,
        preexec_fn=_join_cgroup,
        cwd=str(STATE),
    )
    (PIDS / f"{name}.pid").write_text(f"{proc.pid}\n{_starttime(proc.pid)}\n")
    return proc.pid


def _starttime(pid: int) -> str:
    """The process start time: a PID file names OUR process only while this still matches."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def running(name: str) -> int | None:
    f = PIDS / f"{name}.pid"
    if not f.exists():
        return None
    try:
        pid_s, start = f.read_text().split()[:2]
    except ValueError:
        return None
    pid = int(pid_s)
    return pid if _starttime(pid) == start else None


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(what: str, check, timeout: float, name: str | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = str(exc)
        if name and running(name) is None:
            tail = _log_tail(name)
            raise Fail(f"{name} exited while waiting for {what}: {tail}")
        time.sleep(0.1)
    raise Fail(
        f"timed out after {timeout:.0f} s waiting for {what}"
        + (f" ({last})" if last else "")
        + (f"; see {LOGS / (name + '.log')}" if name else "")
    )


def _log_tail(name: str) -> str:
    try:
        lines = (LOGS / f"{name}.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


# ------------------------------------------------------------------------------------ pki


def pki() -> None:
    PKI.mkdir(parents=True, exist_ok=True)
    os.chmod(PKI, 0o700)
    ossl = ["openssl"]
    if not (PKI / "ca.crt").exists():
        run(
            [
                *ossl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(PKI / "ca.key"),
                "-out",
                str(PKI / "ca.crt"),
                "-days",
                "3650",
                "-subj",
                "/CN=cockpit-dev-ca",
            ]
        )
    if not (PKI / "sa.key").exists():
        run([*ossl, "genrsa", "-out", str(PKI / "sa.key"), "2048"])
        run([*ossl, "rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub")])
    sans_api = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{NODE_IP}",
            f"IP:{KUBERNETES_SVC_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ]
    )
    certs = {
        "apiserver": ("/CN=kube-apiserver", sans_api, "serverAuth"),
        "apiserver-kubelet-client": (
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "",
            "clientAuth",
        ),
        "admin": ("/O=system:masters/CN=cockpit-dev-admin", "", "clientAuth"),
        "controller-manager": ("/CN=system:kube-controller-manager", "", "clientAuth"),
        "scheduler": ("/CN=system:kube-scheduler", "", "clientAuth"),
        "kube-proxy": ("/CN=system:kube-proxy", "", "clientAuth"),
        "kubelet-client": ("/O=system:nodes/CN=system:node:cockpit-dev", "", "clientAuth"),
        "kubelet-server": (
            "/CN=cockpit-dev",
            f"IP:{NODE_IP},IP:127.0.0.1,DNS:cockpit-dev",
            "serverAuth",
        ),
    }
    for name, (subj, sans, usage) in certs.items():
        crt, key, csr = PKI / f"{name}.crt", PKI / f"{name}.key", PKI / f"{name}.csr"
        if crt.exists():
            continue
        run(
            [
                *ossl,
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                subj,
            ]
        )
        ext = PKI / f"{name}.ext"
        ext.write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n" + (f"subjectAltName={sans}\n" if sans else "")
        )
        run(
            [
                *ossl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(PKI / "ca.crt"),
                "-CAkey",
                str(PKI / "ca.key"),
                "-CAcreateserial",
                "-out",
                str(crt),
                "-days",
                "3650",
                "-extfile",
                str(ext),
            ]
        )
        csr.unlink()
        ext.unlink()


def kubeconfig(path: Path, user: str, server: str = f"https://127.0.0.1:{API_PORT}") -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "cockpit-dev",
        "clusters": [
            {
                "name": "cockpit-dev",
                "cluster": {"server": server, "certificate-authority-data": b64(PKI / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(PKI / f"{user}.crt"),
                    "client-key-data": b64(PKI / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "cockpit-dev",
                "context": {"cluster": "cockpit-dev", "user": user, "namespace": "default"},
            }
        ],
    }
    write_if_changed(path, json.dumps(doc, indent=1))
    os.chmod(path, 0o600)


def write_if_changed(path: Path, text: str) -> None:
    """kube-proxy exits when its config file is rewritten: only write what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


# --------------------------------------------------------------------------- api helpers


def api(path: str, method: str = "GET", body: object | None = None, timeout: float = 5.0) -> object:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"https://127.0.0.1:{API_PORT}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        raw = resp.read()
    if resp.headers.get_content_type() != "application/json":
        return raw.decode(errors="replace")
    return json.loads(raw or b"{}")


# -------------------------------------------------------------------------------- network


def uplinks() -> list[str]:
    out = run(["ip", "-o", "link", "show"]).stdout.decode()
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [
        n for n in names if n not in ("lo", NODE_BRIDGE, POD_BRIDGE) and not n.startswith("veth")
    ]


def ipt(
    *args: str, table: str = "filter", check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return run(["iptables", "-w", "5", "-t", table, *args], check=check)


def install_egress_guard() -> None:
    """Before any component starts: nothing in our cgroup or pod network may leave this machine."""
    CGROUP.mkdir(exist_ok=True)
    local = ["127.0.0.0/8", f"{NODE_IP}/32", POD_CIDR, SERVICE_CIDR]
    if ipt("-nL", GUARD_CHAIN, check=False).returncode != 0:
        ipt("-N", GUARD_CHAIN)
        for cidr in local:
            ipt("-A", GUARD_CHAIN, "-d", cidr, "-j", "RETURN")
        ipt(
            "-A",
            GUARD_CHAIN,
            "-m",
            "limit",
            "--limit",
            "6/min",
            "-j",
            "LOG",
            "--log-prefix",
            "cockpit-egress-blocked: ",
        )
        ipt("-A", GUARD_CHAIN, "-j", "REJECT")
    if ipt(
        "-C", "OUTPUT", "-m", "cgroup", "--path", CGROUP_NAME, "-j", GUARD_CHAIN, check=False
    ).returncode:
        ipt("-I", "OUTPUT", "1", "-m", "cgroup", "--path", CGROUP_NAME, "-j", GUARD_CHAIN)
    # pods route through FORWARD, not OUTPUT: same verdict for anything from the pod network
    if ipt("-C", "FORWARD", "-s", POD_CIDR, "-j", GUARD_CHAIN, check=False).returncode:
        ipt("-I", "FORWARD", "1", "-s", POD_CIDR, "-j", GUARD_CHAIN)
    if ipt("-nL", MANGLE_CHAIN, table="mangle", check=False).returncode != 0:
        ipt("-N", MANGLE_CHAIN, table="mangle")
        for dev in uplinks():
            for cidr in (POD_CIDR, SERVICE_CIDR, f"{NODE_IP}/32"):
                ipt("-A", MANGLE_CHAIN, "-o", dev, "-s", cidr, "-j", "DROP", table="mangle")
                ipt("-A", MANGLE_CHAIN, "-o", dev, "-d", cidr, "-j", "DROP", table="mangle")
    if ipt("-C", "POSTROUTING", "-j", MANGLE_CHAIN, table="mangle", check=False).returncode:
        ipt("-I", "POSTROUTING", "1", "-j", MANGLE_CHAIN, table="mangle")


def guard_blocked() -> int:
    """Packets the guard rejected or dropped so far (the suite fails if this is not 0)."""
    total = 0
    for table, chain in (("filter", GUARD_CHAIN), ("mangle", MANGLE_CHAIN)):
        res = ipt("-nvxL", chain, table=table, check=False)
        for line in res.stdout.decode().splitlines()[2:]:
            cols = line.split()
            if len(cols) > 2 and cols[2] in ("REJECT", "DROP"):
                total += int(cols[0])
    return total


def remove_egress_guard() -> None:
    ipt("-D", "OUTPUT", "-m", "cgroup", "--path", CGROUP_NAME, "-j", GUARD_CHAIN, check=False)
    ipt("-D", "FORWARD", "-s", POD_CIDR, "-j", GUARD_CHAIN, check=False)
    ipt("-D", "POSTROUTING", "-j", MANGLE_CHAIN, table="mangle", check=False)
    for table, chain in (("filter", GUARD_CHAIN), ("mangle", MANGLE_CHAIN)):
        ipt("-F", chain, table=table, check=False)
        ipt("-X", chain, table=table, check=False)


SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
SYSCTLS_TOUCHED = SYSCTLS.keys() | {
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.conf.all.route_localnet",
}


def setup_network() -> None:
    saved = STATE / "sysctl.saved.json"
    if not saved.exists():
        values = {}
        for key in SYSCTLS_TOUCHED:
            with contextlib.suppress(OSError):
                values[key] = Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()
        saved.write_text(json.dumps(values))
    for key, value in SYSCTLS.items():
        Path("/proc/sys/" + key.replace(".", "/")).write_text(value)
    if run(["ip", "link", "show", NODE_BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE])
    run(["ip", "link", "set", NODE_BRIDGE, "up"])
    # kube-proxy DNATs live ClusterIPs before routing; a pod dialing an unallocated or
    # just-deleted one would otherwise follow the default route to the uplink. On the
    # port-less node bridge it goes nowhere (and host -> ClusterIP still works).
    run(["ip", "route", "replace", SERVICE_CIDR, "dev", NODE_BRIDGE])
    chains_before = STATE / "iptables.before.json"
    if not chains_before.exists():
        chains_before.write_text(json.dumps(sorted(kube_chains())))
    netns = Path("/var/run/netns")
    before = STATE / "netns.before"
    if not before.exists():
        before.write_text(
            "\n".join(sorted(p.name for p in netns.glob("*"))) if netns.exists() else ""
        )


def kube_chains() -> set[tuple[str, str]]:
    """(table, chain) of every KUBE-*/CNI-* chain: kubelet and kube-proxy create these."""
    found = set()
    for table in ("filter", "nat", "mangle"):
        for line in ipt("-S", table=table, check=False).stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-N" and parts[1].startswith(("KUBE-", "CNI-")):
                found.add((table, parts[1]))
    return found


def remove_kube_chains() -> None:
    """Remove the chains made while the cluster ran (kube-proxy --cleanup leaves kubelet's)."""
    before_file = STATE / "iptables.before.json"
    before = (
        {tuple(x) for x in json.loads(before_file.read_text())} if before_file.exists() else set()
    )
    ours = kube_chains() - before
    for table in {t for t, _ in ours}:
        names = {c for t, c in ours if t == table}
        for line in ipt("-S", table=table, check=False).stdout.decode().splitlines():
            parts = shlex.split(line)
            # jumps from built-in chains into ours
            if (
                parts[:1] == ["-A"]
                and "-j" in parts
                and parts[parts.index("-j") + 1] in names
                and parts[1] not in names
            ):
                ipt("-D", *parts[1:], table=table, check=False)
        for chain in names:
            ipt("-F", chain, table=table, check=False)
        for chain in names:
            ipt("-X", chain, table=table, check=False)
    with contextlib.suppress(OSError):
        before_file.unlink()


def teardown_network() -> None:
    before = (
        set((STATE / "netns.before").read_text().split())
        if (STATE / "netns.before").exists()
        else None
    )
    netns = Path("/var/run/netns")
    if before is not None and netns.exists():
        for ns in netns.glob("cni-*"):
            if ns.name not in before:
                run(["ip", "netns", "delete", ns.name], check=False)
                with contextlib.suppress(OSError):
                    ns.unlink()
    for link in (POD_BRIDGE, NODE_BRIDGE):
        run(["ip", "link", "delete", link], check=False)
    saved = STATE / "sysctl.saved.json"
    if saved.exists():
        for key, value in json.loads(saved.read_text()).items():
            with contextlib.suppress(OSError):
                Path("/proc/sys/" + key.replace(".", "/")).write_text(value)
        saved.unlink()
    with contextlib.suppress(OSError):
        (STATE / "netns.before").unlink()


# ------------------------------------------------------------------------------- configs


def write_configs() -> None:
    CONF.mkdir(parents=True, exist_ok=True)
    (STATE / "cni/net.d").mkdir(parents=True, exist_ok=True)
    write_if_changed(
        STATE / "cni/net.d/10-cockpit.conflist",
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "cockpit",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": POD_BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GW}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(STATE / "cni/ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        ),
    )
    write_if_changed(
        CONF / "containerd.toml",
        f"""version = 2
root = "{STATE}/containerd/root"
state = "{RUN}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{CONTAINERD_SOCK}"
[ttrpc]
  address = "{RUN}/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/cockpit/pause:dev"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{STATE}/cni/net.d"
""",
    )
    write_if_changed(
        CONF / "resolv.conf", "# no upstream resolver: pods use the cluster DNS only\n"
    )
    write_if_changed(
        CONF / "kubelet.yaml",
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": NODE_IP,
                "port": 10250,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": 10248,
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(PKI / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "clusterDNS": [DNS_IP],
                "clusterDomain": CLUSTER_DOMAIN,
                "resolvConf": str(CONF / "resolv.conf"),
                "tlsCertFile": str(PKI / "kubelet-server.crt"),
                "tlsPrivateKeyFile": str(PKI / "kubelet-server.key"),
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "serializeImagePulls": False,
                "maxPods": 110,
                "syncFrequency": "10s",
                "nodeStatusUpdateFrequency": "5s",
                "fileCheckFrequency": "5s",
                "volumeStatsAggPeriod": "0s",
            },
            indent=1,
        ),
    )
    write_if_changed(
        CONF / "kube-proxy.yaml",
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clusterCIDR": POD_CIDR,
                "hostnameOverride": "cockpit-dev",
                "bindAddress": "127.0.0.1",
                "healthzBindAddress": "127.0.0.1:10256",
                "metricsBindAddress": "127.0.0.1:10249",
                "nodePortAddresses": [f"{NODE_IP}/32"],
                "clientConnection": {"kubeconfig": str(CONF / "kube-proxy.kubeconfig")},
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                },
                "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
            },
            indent=1,
        ),
    )
    kubeconfig(KUBECONFIG, "admin")
    kubeconfig(CONF / "controller-manager.kubeconfig", "controller-manager")
    kubeconfig(CONF / "scheduler.kubeconfig", "scheduler")
    kubeconfig(CONF / "kube-proxy.kubeconfig", "kube-proxy")
    kubeconfig(CONF / "kubelet.kubeconfig", "kubelet-client")


# ----------------------------------------------------------------------------- components


def argv_for(name: str) -> list[str]:
    b = str(BIN)
    if name == "etcd":
        return [
            "etcd",
            "--name",
            "cockpit-dev",
            "--data-dir",
            str(STATE / "etcd"),
            "--listen-client-urls",
            "http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "cockpit-dev=http://127.0.0.1:2380",
            "--listen-metrics-urls",
            "",
            "--log-level",
            "warn",
            "--logger",
            "zap",
            "--unsafe-no-fsync",
            "--snapshot-count",
            "10000",
        ]
    if name == "dnsmasq":
        (STATE / "dns").mkdir(exist_ok=True)
        hosts = STATE / "dns/hosts"
        if not hosts.exists():
            hosts.write_text("")
        return [
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--addn-hosts={hosts}",
            f"--listen-address={DNS_IP}",
            "--bind-interfaces",
            "--except-interface=lo",
            f"--local=/{CLUSTER_DOMAIN}/",
            "--domain-needed",
            "--bogus-priv",
            "--cache-size=0",
            f"--pid-file={RUN}/dnsmasq.pid",
            "--user=root",
            "--log-facility=-",
        ]
    if name == "containerd":
        return ["containerd", "--config", str(CONF / "containerd.toml")]
    if name == "kube-apiserver":
        return [
            f"{b}/kube-apiserver",
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=127.0.0.1",
            f"--secure-port={API_PORT}",
            "--insecure-port=0",
            f"--advertise-address={NODE_IP}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--client-ca-file={PKI}/ca.crt",
            f"--tls-cert-file={PKI}/apiserver.crt",
            f"--tls-private-key-file={PKI}/apiserver.key",
            f"--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={PKI}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-key-file={PKI}/sa.pub",
            f"--service-account-signing-key-file={PKI}/sa.key",
            f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=false",
            "--profiling=false",
            "--event-ttl=1h",
            "--service-node-port-range=30000-32767",
            "--v=1",
        ]
    if name == "api-relay":
        # pods reach the API through the `kubernetes` Service -> node IP; the API stays on loopback
        return [
            "socat",
            f"TCP-LISTEN:{API_PORT},bind={NODE_IP},fork,reuseaddr",
            f"TCP:127.0.0.1:{API_PORT}",
        ]
    if name == "kube-controller-manager":
        return [
            f"{b}/kube-controller-manager",
            f"--kubeconfig={CONF}/controller-manager.kubeconfig",
            f"--authentication-kubeconfig={CONF}/controller-manager.kubeconfig",
            f"--authorization-kubeconfig={CONF}/controller-manager.kubeconfig",
            "--bind-address=127.0.0.1",
            "--port=0",
            "--secure-port=10257",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={PKI}/sa.key",
            f"--root-ca-file={PKI}/ca.crt",
            f"--cluster-signing-cert-file={PKI}/ca.crt",
            f"--cluster-signing-key-file={PKI}/ca.key",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ]
    if name == "kube-scheduler":
        return [
            f"{b}/kube-scheduler",
            f"--kubeconfig={CONF}/scheduler.kubeconfig",
            f"--authentication-kubeconfig={CONF}/scheduler.kubeconfig",
            f"--authorization-kubeconfig={CONF}/scheduler.kubeconfig",
            "--bind-address=127.0.0.1",
            "--port=0",
            "--secure-port=10259",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
    if name == "kubelet":
        return [
            f"{b}/kubelet",
            f"--kubeconfig={CONF}/kubelet.kubeconfig",
            f"--config={CONF}/kubelet.yaml",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{CONTAINERD_SOCK}",
            "--pod-infra-container-image=docker.io/cockpit/pause:dev",
            f"--node-ip={NODE_IP}",
            "--hostname-override=cockpit-dev",
            f"--root-dir={STATE}/kubelet",
            f"--cert-dir={STATE}/kubelet-pki",
            "--v=1",
        ]
    if name == "kube-proxy":
        return [f"{b}/kube-proxy", f"--config={CONF}/kube-proxy.yaml", "--v=1"]
    if name == "dns-sync":
        return [sys.executable, str(Path(__file__).resolve()), "dns-sync"]
    raise KeyError(name)


def preflight() -> None:
    if os.geteuid() != 0:
        raise Fail("must run as root (it creates bridges, iptables rules and cgroups)")
    if not CGROUP_ROOT.is_dir() or not (CGROUP_ROOT / "cgroup.procs").exists():
        raise Fail(
            f"no cgroup2 hierarchy at {CGROUP_ROOT} (the egress guard needs it): "
            "mount -t cgroup2 none /sys/fs/cgroup/unified"
        )
    checks = [
        ("127.0.0.1", API_PORT, "kube-apiserver"),
        ("127.0.0.1", 2379, "etcd"),
        ("127.0.0.1", 2380, "etcd peer"),
        ("127.0.0.1", 10257, "controller-manager"),
        ("127.0.0.1", 10259, "scheduler"),
        ("127.0.0.1", 10248, "kubelet healthz"),
        ("127.0.0.1", 10249, "kube-proxy metrics"),
        ("127.0.0.1", 10256, "kube-proxy healthz"),
    ]
    for host, port, what in checks:
        if not port_free(host, port):
            raise Fail(
                f"port {host}:{port} (needed for {what}) is already in use: "
                f"stop what listens there (ss -ltnp 'sport = :{port}') and run up again"
            )


def is_up() -> bool:
    if any(running(n) is None for n in ORDER):
        return False
    try:
        return node_ready()
    except Exception:
        return False


def node_ready() -> bool:
    node = api("/api/v1/nodes/cockpit-dev", timeout=2)
    conds = node.get("status", {}).get("conditions", [])  # type: ignore[union-attr]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


SMOKE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "cockpit-dev-smoke", "namespace": "default"},
    "spec": {
        "containers": [
            {"name": "pause", "image": "docker.io/cockpit/pause:dev", "imagePullPolicy": "Never"}
        ],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
    },
}


def cmd_up(_: argparse.Namespace) -> None:
    t0 = time.monotonic()
    if is_up():
        log("already up")
        print(KUBECONFIG)
        return
    if PIDS.exists():
        # a previous run ended without `down` (crash, reboot, killed session): clear its
        # leftovers (processes, containers, mounts, stale runtime state) before starting anew
        log("cleaning up after a previous run that did not go down")
        cmd_down(argparse.Namespace())
    # Ports and privileges first: a taken port is reported before minutes of installing and
    # building, and before anything is written or started.
    preflight()
    ensure_packages()
    build()
    images = build_images()
    for d in (STATE, RUN):
        d.mkdir(parents=True, exist_ok=True)
    started = False
    try:
        install_egress_guard()
        setup_network()
        pki()
        write_configs()
        started = True
        spawn("etcd", argv_for("etcd"))
        spawn("dnsmasq", argv_for("dnsmasq"))
        spawn("containerd", argv_for("containerd"))
        wait_for("etcd", lambda: tcp_open("127.0.0.1", 2379), 20, "etcd")
        spawn("kube-apiserver", argv_for("kube-apiserver"))
        wait_for("containerd", lambda: CONTAINERD_SOCK.exists(), 20, "containerd")
        import_images(images)
        wait_for(
            "the API server", lambda: api("/readyz", timeout=1) is not None, 60, "kube-apiserver"
        )
        spawn("api-relay", argv_for("api-relay"))
        spawn("kube-controller-manager", argv_for("kube-controller-manager"))
        spawn("kube-scheduler", argv_for("kube-scheduler"))
        spawn("kubelet", argv_for("kubelet"))
        spawn("kube-proxy", argv_for("kube-proxy"))
        spawn("dns-sync", argv_for("dns-sync"))
        wait_for("the node to be Ready", node_ready, 60, "kubelet")
        wait_for(
            "the default ServiceAccount",
            lambda: api("/api/v1/namespaces/default/serviceaccounts/default", timeout=2),
            30,
        )
        with contextlib.suppress(urllib.error.HTTPError):
            api("/api/v1/namespaces/default/pods/cockpit-dev-smoke?gracePeriodSeconds=0", "DELETE")
        wait_for(
            "the old smoke pod to go",
            lambda: _gone("/api/v1/namespaces/default/pods/cockpit-dev-smoke"),
            30,
        )
        api("/api/v1/namespaces/default/pods", "POST", SMOKE_POD)
        wait_for(
            "a pod to run",
            lambda: (
                api("/api/v1/namespaces/default/pods/cockpit-dev-smoke")["status"].get("phase")
                == "Running"
            ),
            60,
            "kubelet",
        )  # type: ignore[index]
        api("/api/v1/namespaces/default/pods/cockpit-dev-smoke?gracePeriodSeconds=0", "DELETE")
    except BaseException:
        if started:
            log("up failed: stopping what it started")
            with contextlib.suppress(Exception):
                cmd_down(argparse.Namespace())
        raise
    log(f"up in {time.monotonic() - t0:.1f} s; node Ready, a pod ran")
    print(KUBECONFIG)


def _gone(path: str) -> bool:
    try:
        api(path, timeout=2)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp == str(r) or mp.startswith(str(r) + "/") for r in roots):
            found.append(mp)
    return found


def cmd_down(_: argparse.Namespace) -> None:
    # kubelet first so it restarts nothing; then our containers, then the rest in reverse
    for name in ("kubelet", "dns-sync", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
        pid = running(name)
        if pid:
            stop_pid(pid)
    runc_root = RUN / "containerd/runc/k8s.io"
    if runc_root.exists() and shutil.which("runc"):
        listing = (
            run(["runc", "--root", str(runc_root), "list", "-q"], check=False)
            .stdout.decode()
            .split()
        )
        for cid in listing:
            run(["runc", "--root", str(runc_root), "kill", cid, "KILL"], check=False)
        for cid in listing:
            run(["runc", "--root", str(runc_root), "delete", "-f", cid], check=False)
    for name in reversed(ORDER):
        pid = running(name)
        if pid:
            stop_pid(pid)
    # containerd-shims are our descendants and live in our cgroup: stop exactly those
    if CGROUP.exists():
        for _ in range(50):
            pids = [int(p) for p in (CGROUP / "cgroup.procs").read_text().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
    if BIN.joinpath("kube-proxy").exists():
        run([str(BIN / "kube-proxy"), "--cleanup"], check=False)
    for mp in sorted(mounts_under(STATE, RUN, Path("/var/run/netns")), key=len, reverse=True):
        if (
            mp.startswith("/var/run/netns/cni-")
            or mp.startswith("/run/netns/cni-")
            or not mp.startswith("/var/run/netns")
        ):
            run(["umount", "-l", mp], check=False)
    remove_kube_chains()
    teardown_network()
    remove_egress_guard()
    if CGROUP.exists():
        with contextlib.suppress(OSError):
            CGROUP.rmdir()
    for d in ("etcd", "kubelet", "pids", "cni/ipam", "imported"):
        shutil.rmtree(STATE / d, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)
    log("down: stopped what it started; network, iptables rules and mounts removed")


def cmd_status(_: argparse.Namespace) -> int:
    rows = [(n, running(n)) for n in ORDER]
    for name, pid in rows:
        print(f"{name:<26} {'running pid ' + str(pid) if pid else 'stopped'}")
    ready = False
    if all(pid for _, pid in rows):
        with contextlib.suppress(Exception):
            ready = node_ready()
    print(f"{'node':<26} {'Ready' if ready else 'not ready'}")
    if ipt("-nL", GUARD_CHAIN, check=False).returncode == 0:
        print(f"{'egress guard':<26} installed, {guard_blocked()} packets blocked")
    else:
        print(f"{'egress guard':<26} not installed")
    print(f"{'kubeconfig':<26} {KUBECONFIG}")
    return 0 if ready else 3


def cmd_kubeconfig(_: argparse.Namespace) -> None:
    if not KUBECONFIG.exists():
        raise Fail("no kubeconfig yet: run scripts/dev-cluster up")
    print(KUBECONFIG)


def cmd_kubectl(args: argparse.Namespace) -> None:
    """kubectl (the 1.20 one built with the cluster) against the dev cluster."""
    if not KUBECONFIG.exists():
        raise Fail("no kubeconfig yet: run scripts/dev-cluster up")
    os.execve(
        str(BIN / "kubectl"), ["kubectl", *args.args], dict(os.environ, KUBECONFIG=str(KUBECONFIG))
    )


def cmd_deploy_shop(args: argparse.Namespace) -> None:
    """Deploy the shop demo into a namespace and wait until it is available (idempotent)."""
    kubectl = [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG)]
    ns = args.namespace
    if run([*kubectl, "get", "namespace", ns], check=False).returncode != 0:
        run([*kubectl, "create", "namespace", ns])
    run([*kubectl, "-n", ns, "apply", "-f", str(REPO / "examples/shop/k8s/shop.yaml")])
    for deploy in ("web", "api", "store"):
        run([*kubectl, "-n", ns, "rollout", "status", f"deploy/{deploy}", "--timeout=120s"])
    log(f"shop deployed in namespace {ns}")


def cmd_agent_image(_: argparse.Namespace) -> None:
    """Rebuild the agent image from the working tree and import it into the running cluster:
    agent pods created from now on run it (running ones keep theirs)."""
    base_layer = IMAGES / "python-base.layer.tar"
    if not base_layer.exists() or not CONTAINERD_SOCK.exists():
        raise Fail("the cluster is not up: run scripts/dev-cluster up")
    image = _agent_image(base_layer)
    import_images([image])
    log(f"agent image {image.name} imported")


def cmd_guard(_: argparse.Namespace) -> None:
    print(
        json.dumps(
            {
                "installed": ipt("-nL", GUARD_CHAIN, check=False).returncode == 0,
                "blocked": guard_blocked(),
            }
        )
    )


def cmd_dns_sync(_: argparse.Namespace) -> None:
    """Keep dnsmasq's hosts file equal to the Services (ClusterIP ones), via list+watch."""
    hosts = STATE / "dns/hosts"

    def render(svcs: dict[str, str]) -> str:
        lines = []
        for key, ip in sorted(svcs.items()):
            name, ns = key.split("/")
            lines.append(f"{ip} {name}.{ns}.svc.{CLUSTER_DOMAIN}")
        return "\n".join(lines) + "\n"

    def publish(svcs: dict[str, str]) -> None:
        text = render(svcs)
        if hosts.exists() and hosts.read_text() == text:
            return
        tmp = hosts.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(hosts)
        pid = running("dnsmasq")
        if pid:
            os.kill(pid, signal.SIGHUP)

    def ip_of(svc: dict) -> str | None:  # type: ignore[type-arg]
        ip = svc.get("spec", {}).get("clusterIP")
        return ip if ip and ip != "None" else None

    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    while True:
        try:
            listing = api("/api/v1/services")
            svcs = {
                f"{s['metadata']['name']}/{s['metadata']['namespace']}": ip
                for s in listing["items"]
                if (ip := ip_of(s))
            }  # type: ignore[index]
            publish(svcs)
            rv = listing["metadata"]["resourceVersion"]  # type: ignore[index]
            req = urllib.request.Request(
                f"https://127.0.0.1:{API_PORT}/api/v1/services?watch=1&resourceVersion={rv}"
                "&timeoutSeconds=300&allowWatchBookmarks=true"
            )
            with urllib.request.urlopen(req, context=ctx, timeout=330) as resp:
                for raw in resp:
                    ev = json.loads(raw)
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        break
                    if ev["type"] == "BOOKMARK":
                        continue
                    key = f"{obj['metadata']['name']}/{obj['metadata']['namespace']}"
                    ip = ip_of(obj)
                    if ev["type"] == "DELETED" or not ip:
                        svcs.pop(key, None)
                    else:
                        svcs[key] = ip
                    publish(svcs)
        except Exception as exc:
            print(f"dns-sync: {exc}; retrying", file=sys.stderr, flush=True)
            time.sleep(1)


def main() -> int:
    if sys.argv[1:2] == ["kubectl"]:  # pass every flag through untouched
        try:
            cmd_kubectl(argparse.Namespace(args=sys.argv[2:]))
        except Fail as exc:
            print(f"dev-cluster: error: {exc}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(prog="dev-cluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "build", help="build the Kubernetes binaries and images into the cache"
    ).set_defaults(fn=cmd_build)
    sub.add_parser(
        "up", help="start the cluster (builds once), print the kubeconfig path"
    ).set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop everything up started; safe to run twice").set_defaults(
        fn=cmd_down
    )
    sub.add_parser("status", help="what runs; exit 0 when the node is Ready").set_defaults(
        fn=cmd_status
    )
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path").set_defaults(
        fn=cmd_kubeconfig
    )
    sub.add_parser("guard", help="egress guard counters as JSON").set_defaults(fn=cmd_guard)
    sub.add_parser(
        "agent-image", help="rebuild the agent image and import it into the running cluster"
    ).set_defaults(fn=cmd_agent_image)
    kubectl = sub.add_parser("kubectl", help="run kubectl against the dev cluster")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)
    kubectl.set_defaults(fn=cmd_kubectl)
    shop = sub.add_parser("deploy-shop", help="deploy examples/shop into a namespace and wait")
    shop.add_argument("--namespace", "-n", default="shop")
    shop.set_defaults(fn=cmd_deploy_shop)
    sub.add_parser("dns-sync").set_defaults(fn=cmd_dns_sync)
    args = parser.parse_args()
    try:
        rc = args.fn(args)
    except Fail as exc:
        print(f"dev-cluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
