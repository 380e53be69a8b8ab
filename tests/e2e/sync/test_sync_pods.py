"""The pod side of remote sync on real pods: tar over exec, deletions, post_sync, and the one
line a user reads for a container without tar or shell, a read-only path, a gone pod."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cockpit.adapters.kube import Kube
from cockpit.adapters.podsync import KubePodFiles, PodContainer, build_tar, scan_all, scan_changes
from cockpit.core.syncplan import SyncPlan, SyncRoots, plan_sync
from cockpit.errors import NotFoundError, SyncError
from tests.e2e.sync.conftest import Pods

pytestmark = pytest.mark.cluster


def nothing(_rel: str) -> bool:
    return False


def full_plan(roots: SyncRoots) -> SyncPlan:
    return plan_sync(roots, scan_all(roots, nothing), [])


def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "index.html").write_text("<h1>hi</h1>\n")
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "sub" / "run.sh").chmod(0o755)
    (src / "sub" / "deeper" / "ünïcode name.txt").write_text("ü\n")
    (src / "empty-dir").mkdir()
    return src


def rename_and_delete(src: Path, roots: SyncRoots) -> SyncPlan:
    """In ``tree``: index.html renamed to home.html and sub/deeper deleted; the plan of that
    one batch."""
    (src / "index.html").rename(src / "home.html")
    (src / "sub" / "deeper" / "ünïcode name.txt").unlink()
    (src / "sub" / "deeper").rmdir()
    present, gone = scan_changes(
        roots, ["index.html", "home.html", "sub/deeper", "sub/deeper/ünïcode name.txt"], nothing
    )
    return plan_sync(roots, present, gone)


async def test_push_creates_deletes_and_renames_in_the_pod(
    pods: Pods, kube: Kube, tmp_path: Path
) -> None:
    src = tree(tmp_path)
    roots = SyncRoots.of(str(src), "/data/t1/app", local_is_file=False)
    files = KubePodFiles(kube)
    box = PodContainer(pods.namespace, "box", "box")
    plan = full_plan(roots)
    await files.push(box, roots.remote_dir, plan, build_tar(plan.members))
    listing = pods.run("box", "cd /data/t1/app && find . | sort && sh sub/run.sh && ls -l sub")
    assert listing.splitlines()[:7] == [
        ".",
        "./empty-dir",
        "./index.html",
        "./sub",
        "./sub/deeper",
        "./sub/deeper/ünïcode name.txt",
        "./sub/run.sh",
    ]
    assert "ran" in listing  # the executable bit came along
    assert "-rwxr-xr-x" in listing

    # a rename and a deletion in one batch: one exec does both
    plan = rename_and_delete(src, roots)
    assert plan.deletes == ("index.html", "sub/deeper")
    await files.push(box, roots.remote_dir, plan, build_tar(plan.members))
    after = pods.run("box", "cd /data/t1/app && find . | sort && cat home.html")
    assert after.splitlines() == [
        ".",
        "./empty-dir",
        "./home.html",
        "./sub",
        "./sub/run.sh",
        "<h1>hi</h1>",
    ]


async def test_file_rule_renames_and_post_sync_runs_after(
    pods: Pods, kube: Kube, tmp_path: Path
) -> None:
    local = tmp_path / "app.ini"
    local.write_text("[app]\ncolour = blue\n")
    roots = SyncRoots.of(str(local), "/data/t2/conf/settings.ini", local_is_file=True)
    plan = full_plan(roots)
    result = await KubePodFiles(kube).push(
        PodContainer(pods.namespace, "box", "box"),
        roots.remote_dir,
        plan,
        build_tar(plan.members),
        post_sync="cat /data/t2/conf/settings.ini; echo reloaded",
    )
    assert result.output.splitlines() == ["[app]", "colour = blue", "reloaded"]


async def test_big_payload_streams_through(pods: Pods, kube: Kube, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    blob = os.urandom(3 * 1024 * 1024 + 7)
    (src / "blob.bin").write_bytes(blob)
    roots = SyncRoots.of(str(src), "/data/t3", local_is_file=False)
    plan = full_plan(roots)
    await KubePodFiles(kube).push(
        PodContainer(pods.namespace, "box", "box"), roots.remote_dir, plan, build_tar(plan.members)
    )
    assert pods.run("box", "wc -c < /data/t3/blob.bin").strip() == str(len(blob))


NO_TAR = "container main of pod notar has no tar; remote sync needs tar in the image"
NO_SH = "container main of pod nosh has no shell (sh); remote sync needs sh and tar in the image"
NO_CONTAINER = "cannot exec into container nope of pod box: container nope is not valid for pod box"


@pytest.mark.parametrize(
    ("pod", "container", "remote", "message"),
    [
        ("notar", "main", "/tmp/app", NO_TAR),
        ("nosh", "main", "/app", NO_SH),
        ("box", "box", "/ro/app", "/ro/app is read-only in container box of pod box"),
        ("box", "nope", "/data", NO_CONTAINER),
    ],
)
async def test_clear_errors(
    pods: Pods, kube: Kube, tmp_path: Path, pod: str, container: str, remote: str, message: str
) -> None:
    src = tree(tmp_path)
    roots = SyncRoots.of(str(src), remote, local_is_file=False)
    plan = full_plan(roots)
    with pytest.raises(SyncError) as caught:
        await KubePodFiles(kube).push(
            PodContainer(pods.namespace, pod, container), remote, plan, build_tar(plan.members)
        )
    assert caught.value.one_line() == message


async def test_read_only_deletion_and_failed_post_sync(pods: Pods, kube: Kube) -> None:
    files = KubePodFiles(kube)
    box = PodContainer(pods.namespace, "box", "box")
    pods.run("box", "mkdir -p /data/t5 && echo x > /data/t5/keep")
    failed = r"^post_sync failed in container box of pod box \(exit 3\): nope$"
    with pytest.raises(SyncError, match=failed):
        await files.push(box, "/data/t5", SyncPlan(), None, post_sync="echo nope >&2; exit 3")
    # /proc/1 is not a place anyone can delete in
    with pytest.raises(SyncError, match=r"^deleting in /proc/1 in container box of pod box failed"):
        await files.push(box, "/proc/1", SyncPlan(deletes=("status",)), None)
    assert pods.run("box", "cat /data/t5/keep").strip() == "x"


async def test_a_gone_pod_is_not_found(pods: Pods, kube: Kube) -> None:
    with pytest.raises(NotFoundError, match="pod 'gone' not found"):
        await KubePodFiles(kube).push(
            PodContainer(pods.namespace, "gone", "main"), "/data", SyncPlan(deletes=("x",)), None
        )
