"""Remote sync into a BusyBox-only container (no GNU tar, no coreutils): tar over exec needs
nothing else in the image. The image is Debian's busybox-static in a layer of its own, built
and imported into the dev cluster once (outside `dev-cluster up`'s image set)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from cockpit.adapters.kube import Kube
from cockpit.adapters.podsync import KubePodFiles, PodContainer, build_tar, scan_all
from cockpit.core.syncplan import SyncRoots, plan_sync
from tests.conftest import Cluster, make_namespace
from tests.e2e.sync.conftest import _container, pod_manifest, run_in, wait_ready
from tests.e2e.sync.test_sync_pods import rename_and_delete, tree

pytestmark = pytest.mark.cluster

BUSYBOX = "docker.io/cockpit/busybox:dev"


def _dev_cluster():  # type: ignore[no-untyped-def]
    from scripts import dev_cluster

    return dev_cluster


def busybox_image() -> None:
    """Build ``BUSYBOX`` from Debian's busybox-static (its applets as symlinks) and import it
    into the dev cluster's containerd; skip where that cannot be done (another cluster)."""
    dev = _dev_cluster()
    if os.geteuid() != 0 or not dev.CONTAINERD_SOCK.exists():
        pytest.skip("the BusyBox image is built for the dev cluster only (root, its containerd)")
    archive = dev.IMAGES / "busybox.tar"
    if not archive.exists():
        work = Path(tempfile.mkdtemp(prefix="cockpit-busybox-"))
        try:
            download = subprocess.run(
                ["apt-get", "download", "busybox-static"], cwd=work, capture_output=True, text=True
            )
            if download.returncode != 0:
                pytest.skip(f"apt-get download busybox-static failed: {download.stderr.strip()}")
            (deb,) = work.glob("busybox-static_*.deb")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "deb")], check=True)
            root = work / "root"
            (root / "bin").mkdir(parents=True)
            (root / "tmp").mkdir()
            shutil.copy2(work / "deb" / "bin" / "busybox", root / "bin" / "busybox")
            listed = subprocess.run(
                [str(root / "bin" / "busybox"), "--list"],
                check=True,
                capture_output=True,
                text=True,
            )
            for applet in listed.stdout.split():
                if applet != "busybox":
                    (root / "bin" / applet).symlink_to("busybox")
            dev._layer(root, work / "layer.tar")
            dev.docker_archive(
                archive, "cockpit/busybox:dev", [work / "layer.tar"], {"Env": ["PATH=/bin"]}
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    dev.import_images([archive])


@pytest.fixture(scope="module")
def busybox_pod(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """(namespace, pod) of a pod running only BusyBox, /data an emptyDir."""
    busybox_image()
    with make_namespace(cluster, "sync-busybox") as namespace:
        api = cluster.api()
        box = _container(
            "box",
            BUSYBOX,
            ["sleep", "3600"],
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
        )
        manifest = pod_manifest("bb", box, [{"name": "data", "emptyDir": {}}])
        client.CoreV1Api(api).create_namespaced_pod(namespace, manifest)
        wait_ready(api, namespace, "app=bb", 1)
        yield namespace, "bb"


def nothing(_rel: str) -> bool:
    return False


async def test_busybox_tar_takes_a_tree_a_rename_and_a_deletion(
    cluster: Cluster, busybox_pod: tuple[str, str], kube: Kube, tmp_path: Path
) -> None:
    namespace, pod = busybox_pod
    api = cluster.api()
    assert "BusyBox" in run_in(api, namespace, pod, "tar --help; true")  # not GNU tar
    src = tree(tmp_path)
    long_name = "a-name-longer-than-the-hundred-bytes-a-plain-tar-header-holds-" + "x" * 60
    (src / "sub" / long_name).write_text("long\n")
    roots = SyncRoots.of(str(src), "/data/app", local_is_file=False)
    files = KubePodFiles(kube)
    box = PodContainer(namespace, pod, "box")
    plan = plan_sync(roots, scan_all(roots, nothing), [])
    await files.push(box, roots.remote_dir, plan, build_tar(plan.members))
    listing = run_in(api, namespace, pod, "cd /data/app && find . | sort && sub/run.sh")
    assert listing.splitlines() == [
        ".",
        "./empty-dir",
        "./index.html",
        "./sub",
        f"./sub/{long_name}",
        "./sub/deeper",
        "./sub/deeper/ünïcode name.txt",
        "./sub/run.sh",
        "ran",  # the executable bit came along
    ]

    plan = rename_and_delete(src, roots)
    await files.push(box, roots.remote_dir, plan, build_tar(plan.members))
    after = run_in(api, namespace, pod, "cd /data/app && find . | sort && cat home.html")
    assert after.splitlines() == [
        ".",
        "./empty-dir",
        "./home.html",
        "./sub",
        f"./sub/{long_name}",
        "./sub/run.sh",
        "<h1>hi</h1>",
    ]
