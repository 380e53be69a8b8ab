"""The local side of remote sync on real files: scanning changes, walking new directories with
the ignore rules, the tar stream, and the messages for failed pushes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cockpit.adapters import podsync
from cockpit.adapters.podsync import PodContainer, build_tar, push_error, scan_all, scan_changes
from cockpit.core.syncplan import SyncRoots, plan_sync
from cockpit.core.watchrules import WatchRules
from cockpit.errors import SyncError

RULES = WatchRules.of(["*.log", "build"])


def make_tree(root: Path) -> None:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_bytes(b"\0")
    (root / "debug.log").write_text("noise\n")
    (root / "app.py").write_text("print('hi')\n")
    (root / "link.py").symlink_to(root / "app.py")
    (root / "broken.py").symlink_to(root / "missing.py")


def members(payload: podsync.TarPayload) -> dict[str, bytes | None]:
    data = payload.data if payload.path is None else Path(payload.path).read_bytes()
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar.getmembers():
            f = tar.extractfile(info)
            out[info.name] = f.read() if f is not None else None
    return out


def test_full_scan_skips_ignored_and_follows_links(tmp_path: Path) -> None:
    make_tree(tmp_path)
    roots = SyncRoots.of(str(tmp_path), "/app", local_is_file=False)
    entries = scan_all(roots, RULES.ignores)
    assert sorted((e.rel, e.kind) for e in entries) == [
        ("app.py", "file"),
        ("link.py", "file"),  # a symlink is copied as the file it points at
        ("pkg", "dir"),
        ("pkg/mod.py", "file"),
    ]
    plan = plan_sync(roots, entries, [])
    payload = build_tar(plan.members)
    assert payload is not None and payload.members == 4
    assert members(payload) == {
        "app.py": b"print('hi')\n",
        "link.py": b"print('hi')\n",
        "pkg": None,
        "pkg/mod.py": b"x = 1\n",
    }


def test_changes_walk_a_new_directory_and_find_deletions(tmp_path: Path) -> None:
    make_tree(tmp_path)
    roots = SyncRoots.of(str(tmp_path), "/app", local_is_file=False)
    present, gone = scan_changes(roots, ["pkg", "gone.py", "debug.log", "app.py"], RULES.ignores)
    assert [e.rel for e in present] == ["app.py", "pkg", "pkg/mod.py"]
    assert gone == ["gone.py"]


def test_scan_all_of_a_missing_path_is_a_sync_error(tmp_path: Path) -> None:
    roots = SyncRoots.of(str(tmp_path / "nope"), "/app", local_is_file=False)
    with pytest.raises(SyncError, match=r"cannot read .*nope: No such file or directory"):
        scan_all(roots, RULES.ignores)


def test_file_rule_scans_its_one_file(tmp_path: Path) -> None:
    (tmp_path / "a.ini").write_text("a")
    (tmp_path / "b.ini").write_text("b")
    roots = SyncRoots.of(str(tmp_path / "a.ini"), "/etc/x.ini", local_is_file=True)
    assert [e.rel for e in scan_all(roots, RULES.ignores)] == ["a.ini"]
    plan = plan_sync(roots, scan_all(roots, RULES.ignores), [])
    payload = build_tar(plan.members)
    assert payload is not None and members(payload) == {"x.ini": b"a"}


def test_a_file_gone_since_the_scan_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    roots = SyncRoots.of(str(tmp_path), "/app", local_is_file=False)
    plan = plan_sync(roots, scan_all(roots, RULES.ignores), [])
    (tmp_path / "b.txt").unlink()
    payload = build_tar(plan.members)
    assert payload is not None and payload.members == 1
    assert members(payload) == {"a.txt": b"a"}
    assert build_tar(()) is None


def test_a_big_payload_is_spooled_to_a_file_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podsync, "IN_MEMORY_MAX", 10)
    monkeypatch.setattr(podsync, "READ_WHOLE_MAX", 10)
    blob = os.urandom(100_000)
    (tmp_path / "blob").write_bytes(blob)
    roots = SyncRoots.of(str(tmp_path), "/app", local_is_file=False)
    payload = build_tar(plan_sync(roots, scan_all(roots, RULES.ignores), []).members)
    assert payload is not None and payload.path is not None
    assert b"".join(payload.chunks()) == Path(payload.path).read_bytes()
    assert members(payload) == {"blob": blob}
    payload.discard()
    assert not os.path.exists(payload.path)


TARGET = PodContainer("ns", "web-1", "app")
AT = "in container app of pod web-1"
NO_SH = 'exec: "sh": executable file not found in $PATH'


@pytest.mark.parametrize(
    ("code", "stderr", "message", "output", "expected"),
    [
        (127, "cockpit-sync: tar: not found\n", "", "", "container app of pod web-1 has no tar; "
         "remote sync needs tar in the image"),
        (127, "", NO_SH, "", "container app of pod web-1 has no shell (sh); "
         "remote sync needs sh and tar in the image"),
        (92, "tar: x: Cannot open: Read-only file system\n", "", "", f"/app is read-only {AT}"),
        (91, "rm: cannot remove 'x': Read-only file system\n", "", "", f"/app is read-only {AT}"),
        (90, "mkdir: cannot create directory '/app': Permission denied\n", "", "",
         f"cannot write to /app {AT}: permission denied (the container's user may not write "
         "there)"),
        (92, "tar: x: Wrote only 512 of 10240 bytes\ntar: No space left on device\n", "", "",
         f"no space left under /app {AT}"),
        (93, "cockpit-sync: post_sync exited with 2\n", "", "reloading\nboom\n",
         f"post_sync failed {AT} (exit 2): boom"),
        (92, "tar: This does not look like a tar archive\n", "", "",
         f"extracting into /app {AT} failed (exit 92): tar: This does not look like a tar archive"),
        (1, "", "", "", f"syncing into /app {AT} failed (exit 1): no output"),
    ],
)  # fmt: skip
def test_push_errors_read_as_one_line(
    code: int, stderr: str, message: str, output: str, expected: str
) -> None:
    assert push_error(TARGET, "/app", code, stderr, message, output).one_line() == expected
