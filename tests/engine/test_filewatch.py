"""The file watcher on real files in tmp_path: batches, ignores, merging, bursts, errors."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from cockpit.core.watchrules import ChangeKind, FileChange, WatchRules
from cockpit.engine.filewatch import ChangeBatch, FileWatcher
from cockpit.errors import SyncError

WITHIN = 20.0  # generous: the machine may be busy


async def next_batch(watcher: FileWatcher) -> ChangeBatch:
    batch = await asyncio.wait_for(watcher.next_batch(), WITHIN)
    assert batch is not None
    return batch


async def test_a_write_after_start_is_one_batch_with_a_relative_path(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("A = 1\n")
    async with FileWatcher(tmp_path, ["."]) as watcher:
        (tmp_path / "src" / "app.py").write_text("A = 2\n")
        batch = await next_batch(watcher)
    assert batch.root == str(tmp_path)
    assert batch.changes == (FileChange(ChangeKind.MODIFIED, "src/app.py"),)
    assert batch.absolute(batch.changes[0]) == str(tmp_path / "src" / "app.py")


@pytest.mark.parametrize("leading", [False, True])  # watchfiles alone; inotify too
async def test_ignored_paths_never_make_a_batch(tmp_path: Path, leading: bool) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "gen").mkdir()
    rules = WatchRules.of(["gen/"])
    async with FileWatcher(tmp_path, ["."], rules=rules, leading=leading) as watcher:
        (tmp_path / ".git" / "index").write_text("x")
        (tmp_path / ".app.py.swp").write_text("x")
        (tmp_path / "gen" / "out.py").write_text("x")
        (tmp_path / "app.py").write_text("x")  # the one that counts, written last
        batch = await next_batch(watcher)
    assert batch.paths() == ["app.py"]
    assert batch.paths(ChangeKind.ADDED) == ["app.py"]


async def test_a_burst_of_many_files_is_one_batch(tmp_path: Path) -> None:
    async with FileWatcher(tmp_path, ["."], quiet=0.3) as watcher:
        for i in range(1_000):
            (tmp_path / f"f{i:04}.py").write_text(str(i))
        batch = await next_batch(watcher)
        assert len(batch.changes) == 1_000
        assert all(change.kind is ChangeKind.ADDED for change in batch.changes)
        assert watcher.pending == 0


async def test_changes_while_the_consumer_is_busy_merge_into_one_batch(tmp_path: Path) -> None:
    keep = tmp_path / "keep.py"
    keep.write_text("1")
    async with FileWatcher(tmp_path, ["."], quiet=0.02) as watcher:
        keep.write_text("2")
        (tmp_path / "temp.py").write_text("x")
        await asyncio.sleep(0.3)  # several watchfiles batches pass; nobody takes them
        (tmp_path / "temp.py").unlink()
        (tmp_path / "new.py").write_text("y")

        deadline = time.monotonic() + WITHIN
        while {c.path for c in watcher.pending_changes} != {"keep.py", "new.py"}:
            assert time.monotonic() < deadline, f"pending: {watcher.pending_changes}"
            await asyncio.sleep(0.02)
        batch = await next_batch(watcher)
    # temp.py came and went between two hand-outs: nothing to do for it
    assert {(c.path, c.kind) for c in batch.changes} == {
        ("keep.py", ChangeKind.MODIFIED),
        ("new.py", ChangeKind.ADDED),
    }


async def test_a_single_file_and_a_deletion(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("a: 1")
    async with FileWatcher(tmp_path, ["config.yaml"]) as watcher:
        target.unlink()
        batch = await next_batch(watcher)
    assert batch.changes == (FileChange(ChangeKind.DELETED, "config.yaml"),)


async def test_an_editor_save_by_rename_is_a_modification(tmp_path: Path) -> None:
    target = tmp_path / "app.py"
    target.write_text("A = 1\n")
    async with FileWatcher(tmp_path, ["."]) as watcher:
        tmp = tmp_path / "app.py.tmp-save"
        tmp.write_text("A = 2\n")
        os.replace(tmp, target)
        batch = await next_batch(watcher)
    # the temporary file came and went; the target exists with new content
    kinds = {c.path: c.kind for c in batch.changes}
    assert kinds.get("app.py") in (ChangeKind.MODIFIED, ChangeKind.ADDED)
    assert "app.py.tmp-save" not in kinds or kinds["app.py.tmp-save"] is ChangeKind.DELETED


@pytest.mark.parametrize("leading", [False, True])
async def test_a_single_file_saved_by_rename_again_and_again(tmp_path: Path, leading: bool) -> None:
    target = tmp_path / "app.py"
    target.write_text("0")
    (tmp_path / "other.py").write_text("x")
    async with FileWatcher(tmp_path, ["app.py"], leading=leading) as watcher:
        for i in range(1, 4):  # a watch on the file itself would lose it after the first
            (tmp_path / "other.py").write_text(str(i))  # not watched: never in a batch
            tmp = tmp_path / f"app.py.save{i}"
            tmp.write_text(str(i))
            os.replace(tmp, target)
            batch = await next_batch(watcher)
            assert batch.paths() == ["app.py"]
            assert batch.changes[0].kind in (ChangeKind.ADDED, ChangeKind.MODIFIED)


async def test_a_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    watcher = FileWatcher(tmp_path, ["src"])
    with pytest.raises(SyncError, match=r"cannot watch .*/src: no such file or directory"):
        await watcher.start()
    await watcher.stop()


async def test_stop_ends_a_waiting_next_batch(tmp_path: Path) -> None:
    watcher = FileWatcher(tmp_path)
    await watcher.start()
    waiting = asyncio.ensure_future(watcher.next_batch())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(watcher.stop(), WITHIN)
    assert await asyncio.wait_for(waiting, WITHIN) is None
    assert await watcher.next_batch() is None


async def test_paths_outside_the_root_stay_absolute(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    async with FileWatcher(root, [str(other)]) as watcher:
        (other / "x.txt").write_text("x")
        batch = await next_batch(watcher)
    assert batch.paths() == [(other / "x.txt").as_posix()]


async def test_leading_hands_out_a_save_at_once_and_gathers_what_follows(tmp_path: Path) -> None:
    """With ``leading``, a save after a quiet spell skips the quiet time; changes right after
    it wait for the quiet time as one more batch."""
    quiet = 3.0
    async with FileWatcher(tmp_path, ["."], quiet=quiet, leading=True) as watcher:
        t0 = time.monotonic()
        (tmp_path / "app.py").write_text("A = 1\n")
        first = await next_batch(watcher)
        took = time.monotonic() - t0
        assert first.paths() == ["app.py"]
        assert took < quiet, took  # it did not wait out the quiet time
        (tmp_path / "b.py").write_text("B = 1\n")
        (tmp_path / "c.py").write_text("C = 1\n")
        t1 = time.monotonic()
        second = await next_batch(watcher)
        assert sorted(second.paths()) == ["b.py", "c.py"]
        assert time.monotonic() - t1 >= quiet * 0.9  # right after the first: debounced


async def test_leading_makes_a_burst_one_batch_or_a_save_and_the_rest(tmp_path: Path) -> None:
    """A burst's first surfaced changes are many (no leading batch) unless its first files
    trickle in on a busy machine: then those go at once and the rest is ONE more batch."""
    async with FileWatcher(tmp_path, ["."], quiet=0.3, leading=True) as watcher:
        for i in range(1_000):
            (tmp_path / f"f{i:04}.py").write_text(str(i))
        batch = await next_batch(watcher)
        seen = len(batch.changes)
        if seen < 1_000:
            assert seen < 20  # only a leading batch is handed out early
            seen += len((await next_batch(watcher)).changes)
        assert seen == 1_000
        assert watcher.pending == 0


async def test_leading_a_save_is_one_batch_and_watchfiles_does_not_repeat_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "pkg").mkdir()
    async with FileWatcher(tmp_path, ["."], quiet=0.05, leading=True) as watcher:
        (tmp_path / "pkg" / "app.py").write_text("A = 1\n")
        first = await next_batch(watcher)
        assert first.paths() == ["pkg/app.py"]
        # watchfiles reports the same save a few steps later: it is not a second batch
        late = asyncio.ensure_future(watcher.next_batch())
        await asyncio.sleep(0.5)
        assert not late.done() and watcher.pending == 0
        late.cancel()


async def test_leading_a_half_written_file_goes_out_when_it_is_closed(tmp_path: Path) -> None:
    quiet = 5.0
    async with FileWatcher(tmp_path, ["."], quiet=quiet, leading=True) as watcher:
        with (tmp_path / "big.py").open("w") as file:
            file.write("A = 1\n")
            file.flush()
            batch = asyncio.ensure_future(watcher.next_batch())
            await asyncio.sleep(0.3)
            assert not batch.done()  # the editor is still writing
            assert watcher.pending == 1
            file.write("B = 2\n")
        t0 = time.monotonic()
        got = await asyncio.wait_for(batch, WITHIN)
        assert got is not None and got.paths() == ["big.py"]
        assert time.monotonic() - t0 < quiet  # the close completed it: no quiet time


async def test_leading_a_directory_made_after_start_is_watched_too(tmp_path: Path) -> None:
    async with FileWatcher(tmp_path, ["."], quiet=0.2, leading=True) as watcher:
        (tmp_path / "new").mkdir()
        assert (await next_batch(watcher)).paths() == ["new"]
        (tmp_path / "new" / "mod.py").write_text("x")  # watchfiles' watch, not inotify's
        assert (await next_batch(watcher)).paths() == ["new/mod.py"]


async def test_leading_a_change_in_a_renamed_directory_is_not_lost(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    async with FileWatcher(tmp_path, ["."], quiet=0.2, leading=True) as watcher:
        (tmp_path / "pkg").rename(tmp_path / "lib")
        paths: set[str] = set()
        while "lib" not in paths:
            paths.update((await next_batch(watcher)).paths())
        assert "pkg" in paths  # gone from there
        (tmp_path / "lib" / "mod.py").write_text("x")
        # inotify's watch of the old path is gone; watchfiles reports it (under the path its
        # own watch knows after the rename)
        paths = set()
        while not any(path.endswith("/mod.py") for path in paths):
            paths.update((await next_batch(watcher)).paths())
