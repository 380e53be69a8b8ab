"""DirWatch against the real kernel: events of a watched directory, forgetting, closing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cockpit.adapters import inotify
from cockpit.adapters.inotify import DirWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux")


def test_a_write_a_rename_and_a_deletion_in_a_watched_directory(tmp_path: Path) -> None:
    watch = DirWatch.open()
    assert watch is not None
    try:
        assert watch.read() == []  # nothing queued: no blocking
        assert watch.add(str(tmp_path))
        assert watch.watches(str(tmp_path))
        (tmp_path / "sub").mkdir()
        (tmp_path / "a.py").write_text("x")
        (tmp_path / "a.py").rename(tmp_path / "b.py")
        (tmp_path / "b.py").unlink()
        (tmp_path / "sub" / "deep.py").write_text("not watched: a subdirectory")
        events = [(Path(e.path).name, e.mask & ~inotify.IN_ISDIR, e.is_dir) for e in watch.read()]
        assert events[0] == ("sub", inotify.IN_CREATE, True)
        assert ("a.py", inotify.IN_CREATE, False) in events
        assert ("a.py", inotify.IN_CLOSE_WRITE, False) in events
        assert events[-3:] == [
            ("a.py", inotify.IN_MOVED_FROM, False),
            ("b.py", inotify.IN_MOVED_TO, False),
            ("b.py", inotify.IN_DELETE, False),
        ]
        watch.forget(str(tmp_path))
        assert not watch.watches(str(tmp_path))
        (tmp_path / "c.py").write_text("x")
        assert [e for e in watch.read() if e.path.endswith("c.py")] == []
    finally:
        watch.close()
    assert watch.fd == -1


def test_a_directory_that_cannot_be_watched_is_refused(tmp_path: Path) -> None:
    watch = DirWatch.open()
    assert watch is not None
    try:
        assert not watch.add(str(tmp_path / "missing"))
        (tmp_path / "file").write_text("x")
        assert not watch.add(str(tmp_path / "file"))  # not a directory
        assert watch.directories == frozenset()
    finally:
        watch.close()
