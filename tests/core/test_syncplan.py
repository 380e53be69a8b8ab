"""Sync planning: path mapping, safety (nothing outside the remote path), deletions, members."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.core.syncplan import (
    LocalEntry,
    SyncRoots,
    check_relative,
    plan_sync,
    split_deletes,
)
from cockpit.errors import SyncError

DIR = SyncRoots.of("/src/static", "/app/static/", local_is_file=False)
FILE = SyncRoots.of("/src/conf/app.ini", "/etc/app/settings.ini", local_is_file=True)


def test_directory_rule_maps_below_both_roots() -> None:
    assert DIR.remote_dir == "/app/static"
    assert DIR.relative("/src/static/css/site.css") == "css/site.css"
    assert DIR.remote_path("css/site.css") == "/app/static/css/site.css"
    assert DIR.relative("/src/static") is None  # the root itself is not a change to push
    assert DIR.relative("/src/staticfiles/x") is None  # a sibling with the same prefix
    assert DIR.relative("/elsewhere/x") is None


def test_file_rule_maps_one_name_and_renames_it() -> None:
    assert (FILE.local_dir, FILE.remote_dir) == ("/src/conf", "/etc/app")
    assert FILE.local == "/src/conf/app.ini" and FILE.remote == "/etc/app/settings.ini"
    assert FILE.relative("/src/conf/app.ini") == "app.ini"
    assert FILE.relative("/src/conf/other.ini") is None
    assert FILE.arcname("app.ini") == "settings.ini"
    with pytest.raises(SyncError, match=r"covers app\.ini only"):
        FILE.arcname("other.ini")


def test_file_rule_onto_root_is_refused() -> None:
    with pytest.raises(SyncError, match="name the remote file"):
        SyncRoots.of("/src/a.txt", "/", local_is_file=True)


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "normalised"),
        ("a/./b", "normalised"),
        ("a/", "normalised"),
        ("a\x00b", "NUL"),
    ],
)
def test_unsafe_relative_paths_are_refused(rel: str, why: str) -> None:
    with pytest.raises(SyncError, match=why):
        check_relative(rel)


def test_plan_uploads_present_and_deletes_gone() -> None:
    plan = plan_sync(
        DIR,
        [
            LocalEntry("js/app.js", "file", size=10, mode=0o100755, mtime=5.0),
            LocalEntry("js", "dir", mode=0o40755),
            LocalEntry("index.html", "file", size=3),
        ],
        ["old.css", "gone/a", "gone", "gone/b/c"],
    )
    assert [(m.arcname, m.kind) for m in plan.members] == [
        ("index.html", "file"),
        ("js", "dir"),
        ("js/app.js", "file"),
    ]
    app = plan.members[2]
    assert (app.source, app.size, app.mode, app.mtime) == ("/src/static/js/app.js", 10, 0o755, 5.0)
    assert plan.deletes == ("gone", "old.css")  # gone/a and gone/b/c go with gone
    assert (plan.files, plan.bytes) == (4, 13)
    assert plan.sample(3) == ("index.html", "js/app.js", "gone (deleted)")


def test_a_path_both_present_and_gone_is_uploaded() -> None:
    # An editor's atomic save: the old file is removed, a new one renamed into place.
    plan = plan_sync(DIR, [LocalEntry("a.py", "file", size=1)], ["a.py", "a.py.swp"])
    assert [m.arcname for m in plan.members] == ["a.py"]
    assert plan.deletes == ("a.py.swp",)


def test_file_rule_deletion_maps_to_the_remote_name() -> None:
    assert plan_sync(FILE, [], ["app.ini"]).deletes == ("settings.ini",)


def test_unsafe_paths_in_a_plan_are_refused() -> None:
    with pytest.raises(SyncError):
        plan_sync(DIR, [], ["../x"])
    with pytest.raises(SyncError):
        plan_sync(DIR, [LocalEntry("/etc/x", "file")], [])


def test_empty_plan() -> None:
    plan = plan_sync(DIR, [], [])
    assert plan.empty and plan.files == 0 and plan.bytes == 0


def test_split_deletes_keeps_order_and_bound() -> None:
    paths = [f"dir/file-{i:04d}.txt" for i in range(100)]
    chunks = split_deletes(paths, 200)
    assert [p for chunk in chunks for p in chunk] == paths
    assert all(sum(len(p) + 1 for p in chunk) <= 200 for chunk in chunks)
    assert split_deletes(["x" * 500, "y"], 100) == [("x" * 500,), ("y",)]
    assert split_deletes([], 100) == []


# -- properties ------------------------------------------------------------------------------

segment = st.sampled_from(["a", "b", "..", ".", "", "c.txt", "-rf", "sp ace", "ü"])
rel_paths = st.lists(segment, min_size=1, max_size=5).map("/".join)
remote_roots = st.sampled_from(["/", "/app", "/app/static", "/srv/x/y"])


@given(remote_roots, st.lists(rel_paths, max_size=8), st.lists(rel_paths, max_size=8))
def test_nothing_is_planned_outside_the_remote_path(
    remote: str, present: list[str], gone: list[str]
) -> None:
    roots = SyncRoots.of("/src", remote, local_is_file=False)
    try:
        plan = plan_sync(roots, [LocalEntry(p, "file") for p in present], gone)
    except SyncError:
        return  # refused as a whole: nothing is pushed
    for name in [m.arcname for m in plan.members] + list(plan.deletes):
        full = posixpath.normpath(posixpath.join(roots.remote_dir, name))
        assert full != roots.remote_dir  # never the root itself
        assert full.startswith(roots.remote_dir.rstrip("/") + "/")
        assert full == posixpath.join(roots.remote_dir, name)  # already normalised


@given(st.lists(rel_paths, max_size=12))
def test_deletions_cover_every_gone_path_once(gone: list[str]) -> None:
    safe = []
    for rel in gone:
        try:
            safe.append(check_relative(rel))
        except SyncError:
            continue
    plan = plan_sync(DIR, [], safe)
    for rel in safe:  # each gone path is deleted itself or by a deleted parent
        assert any(rel == d or rel.startswith(d + "/") for d in plan.deletes)
    for a in plan.deletes:  # and no deletion is inside another
        assert not any(a != b and a.startswith(b + "/") for b in plan.deletes)


@given(st.lists(st.text(min_size=1, max_size=30), max_size=40), st.integers(1, 200))
def test_split_deletes_property(paths: list[str], limit: int) -> None:
    chunks = split_deletes(paths, limit)
    assert [p for chunk in chunks for p in chunk] == paths
    for chunk in chunks:
        assert len(chunk) == 1 or sum(len(p.encode()) + 1 for p in chunk) <= limit
