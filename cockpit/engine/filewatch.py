"""The one file watcher of hot reload and file sync: watchfiles under a root, filtered by
``cockpit.core.watchrules``, handing out debounced batches of relative-path changes.

Use::

    watcher = FileWatcher(root, ["."], rules=WatchRules.of(user_ignores), quiet=0.05)
    await watcher.start()          # watching from here on; SyncError if a path is missing
    try:
        while (batch := await watcher.next_batch()) is not None:
            ...                    # batch.changes: FileChange(kind, 'src/app.py'), path order
    finally:
        await watcher.stop()

Changes that arrive while the consumer is busy are merged into the next batch (one entry
per path, net effect only), so a slow consumer sees one batch, never a backlog.

A ``leading`` watcher (hot reload) also reads inotify on the event loop (Linux), for the
directories there at start: a save is seen the moment the file is closed, where watchfiles'
thread hands a change over only after two of its 10 ms steps; watchfiles' reports from those
directories are then the same changes again and are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import watchfiles

from cockpit.adapters import inotify
from cockpit.adapters.inotify import DirEvent, DirWatch
from cockpit.adapters.process import own_output_files
from cockpit.core.watchrules import (
    ChangeKind,
    FileChange,
    WatchRules,
    as_changes,
    collapse,
    merge_changes,
)
from cockpit.errors import SyncError

DEFAULT_QUIET = 0.05
"""Seconds without a new change that end a batch (a save of several files is one batch)."""
DEFAULT_MAX_WAIT = 5.0
"""A batch is handed out after this many seconds even if changes keep coming."""
BURST_SIZE = 20
"""From this many pending paths on, a batch is a tool's burst (a checkout, a formatter)..."""
BURST_QUIET = 0.25
"""...and waits this long without a new change, so that one burst is one batch even when the
tool pauses (a busy machine); a single save keeps the short ``quiet``."""
# watchfiles' thread hands changes over after _STEP without a new one, and at least every
# _SURFACE while they keep coming, so that the arrival times the quiet time is counted from
# (here, not in watchfiles) trail the files' changes by a few milliseconds at most.
_STEP = 0.01
_SURFACE = 0.02
# Behind inotify, watchfiles only reports what inotify does not watch (directories made after
# start): a longer step wakes its thread a fifth as often while idle.
_STEP_BEHIND_INOTIFY = 0.05
# Directories watched through inotify at most (beyond them, watchfiles alone), and how long
# watchfiles' dropped reports are kept to be taken back if inotify overflows.
MAX_INOTIFY_DIRECTORIES = 5_000
_ECHO_SECONDS = 5.0
# ``on_change`` at once for the first change, then at most this often: inotify hands over a
# burst a few events at a time, and every call may be an event for the UI.
_ON_CHANGE_EVERY = _SURFACE

_KINDS = {
    watchfiles.Change.added: ChangeKind.ADDED,
    watchfiles.Change.modified: ChangeKind.MODIFIED,
    watchfiles.Change.deleted: ChangeKind.DELETED,
}


def _without_own_output(rules: WatchRules, root: str | os.PathLike[str]) -> WatchRules:
    """``rules`` plus the files cockpit's own output goes to under ``root``: a headless run
    redirected into the watched directory would otherwise reload (or sync) on every line."""
    top = os.path.realpath(root)
    own = [
        os.path.relpath(path, top)
        for path in own_output_files()
        if os.path.commonpath([path, top]) == top and path != top
    ]
    if not own:
        return rules
    anchored = ("/" + "/".join(glob.escape(part) for part in rel.split(os.sep)) for rel in own)
    return WatchRules((*rules.patterns, *anchored))


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes under ``root`` (absolute), one per path, in path order."""

    root: str
    changes: tuple[FileChange, ...]
    seen_at: float  # time.time() when the batch was complete

    def paths(self, *kinds: ChangeKind) -> list[str]:
        """Relative paths of the changes of ``kinds`` (all kinds if none given)."""
        return [c.path for c in self.changes if not kinds or c.kind in kinds]

    def absolute(self, change: FileChange) -> str:
        return os.path.join(self.root, change.path)


class FileWatcher:
    """Watches ``paths`` (relative to ``root`` or absolute): directories recursively, files
    through their directory (so a save by rename is seen every time).

    Paths in batches are relative to ``root`` ('/'-separated); ``rules`` decide which count
    (default: the built-in ignores). ``quiet`` seconds without a new change end a batch;
    ``max_wait`` caps how long a steady stream of changes is held back; from ``BURST_SIZE``
    pending paths on, the quiet time is at least ``BURST_QUIET``. With ``leading``, the first
    changes after ``quiet`` seconds without any are handed out at once when they are few (a
    save: no debounce to sit through), and what follows them within ``quiet`` is gathered as
    usual. ``on_change`` is called with the number of pending paths whenever new changes have
    been merged in.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        paths: Sequence[str] = (".",),
        *,
        rules: WatchRules | None = None,
        quiet: float = DEFAULT_QUIET,
        max_wait: float = DEFAULT_MAX_WAIT,
        on_change: Callable[[int], None] | None = None,
        leading: bool = False,
    ) -> None:
        self.root = os.path.abspath(root)
        self.paths = tuple(os.path.normpath(os.path.join(self.root, path)) for path in paths)
        self.rules = _without_own_output(rules if rules is not None else WatchRules.of(), root)
        self.quiet = quiet
        self.max_wait = max(max_wait, quiet)
        self._pending: dict[str, ChangeKind] = {}
        self._first_arrival = 0.0  # loop time of the oldest pending change's arrival
        self._last_arrival = -math.inf
        self.leading = leading
        self._leading_now = False  # the pending changes came after a quiet spell
        self._arrived = asyncio.Event()
        self._stop = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self._files: frozenset[str] = frozenset()  # paths given as files, watched via their dir
        self._error: BaseException | None = None
        self._on_change = on_change
        self._inotify: DirWatch | None = None
        self._file_parents: frozenset[str] = frozenset()  # inotify dirs watched for _files only
        self._writing: set[str] = set()  # pending paths written to and not yet closed
        self._echoes: deque[tuple[float, list[FileChange]]] = deque()  # dropped reports
        self._told_at = -math.inf  # loop time of the last on_change call
        self._telling: asyncio.TimerHandle | None = None  # a deferred on_change call

    @property
    def pending(self) -> int:
        """Changed paths seen but not yet handed out by ``next_batch``."""
        return len(self._pending)

    @property
    def pending_changes(self) -> tuple[FileChange, ...]:
        """The changes ``next_batch`` would hand out now, in path order."""
        return as_changes(self._pending)

    async def start(self) -> None:
        """Watch from now on: a change made after this returns is in a batch. Raises
        SyncError (one line) when a path does not exist or cannot be watched."""
        if self._pumps:
            return
        missing = [path for path in self.paths if not os.path.exists(path)]  # noqa: ASYNC240
        if missing:
            raise SyncError(f"cannot watch {missing[0]}: no such file or directory")
        files = [path for path in self.paths if os.path.isfile(path)]  # noqa: ASYNC240
        directories = [path for path in self.paths if path not in files]
        self._files = frozenset(files)
        parents = sorted({os.path.dirname(path) for path in files})
        if self.leading:
            # Before watchfiles starts: a change it reports from these directories from then on
            # has been seen by inotify already.
            self._inotify = await asyncio.to_thread(self._open_inotify, directories, parents)
        watches = []
        if directories:
            watches.append(self._awatch(directories, self._counts, recursive=True))
        if files:
            # An editor that saves by renaming a new file over the old one leaves a watch on
            # the file itself following the old inode: watch its directory (not recursively)
            # and count the file's own changes only.
            watches.append(self._awatch(parents, self._counts_file, recursive=False))
        self._pumps = [
            asyncio.create_task(self._run(changes), name=f"watch {self.root}")
            for changes in watches
        ]
        if self._inotify is not None:
            asyncio.get_running_loop().add_reader(self._inotify.fd, self._read_inotify)
        # awatch sets up its watches synchronously in its first step, before the first await:
        # once the pump tasks have taken that step, every later change is caught.
        await asyncio.sleep(0)
        for pump in self._pumps:
            if pump.done():
                await pump  # it failed at once: raise that here
        self._raise_if_failed()

    def _awatch(
        self,
        paths: Sequence[str],
        counts: Callable[[watchfiles.Change, str], bool],
        *,
        recursive: bool,
    ) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]:
        step = _STEP if self._inotify is None else _STEP_BEHIND_INOTIFY
        return watchfiles.awatch(
            *paths,
            watch_filter=counts,
            step=max(1, round(min(step, self.quiet) * 1000)),
            debounce=max(1, round(min(_SURFACE, self.quiet) * 1000)),
            stop_event=self._stop,
            recursive=recursive,
            ignore_permission_denied=True,
        )

    async def next_batch(self) -> ChangeBatch | None:
        """The next batch of changes; None once stopped. Raises SyncError if watching failed."""
        loop = asyncio.get_running_loop()
        while True:
            self._raise_if_failed()
            if self._stop.is_set() or not self._pumps:
                return None
            if self._pending:
                now = loop.time()
                few = len(self._pending) < BURST_SIZE
                # (not while a file is half written: its close completes the save)
                if self.leading and self._leading_now and few and not self._writing:
                    break
                quiet = self.quiet if few else BURST_QUIET
                due = min(
                    self._last_arrival + max(quiet, self.quiet),
                    self._first_arrival + self.max_wait,
                )
                if now >= due:
                    break
                timeout: float | None = due - now
            elif all(pump.done() for pump in self._pumps):
                return None
            else:
                timeout = None
            self._arrived.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes as
            # the event is set, and under a steady stream of changes the reloader's stop waited
            # for ever (a headless run ignored quit and SIGTERM).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
        pending, self._pending = self._pending, {}
        self._writing.clear()
        self._cancel_telling()  # the count it would report is gone with the batch
        return ChangeBatch(self.root, as_changes(pending), time.time())

    async def stop(self) -> None:
        """Stop watching (within ``quiet`` seconds); a waiting ``next_batch`` returns None."""
        self._stop.set()
        self._arrived.set()
        self._close_inotify()
        self._cancel_telling()
        pumps, self._pumps = self._pumps, []
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError, SyncError):
                await pump

    async def __aenter__(self) -> FileWatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def relative(self, path: str) -> str:
        """``path`` relative to the root, '/'-separated (absolute if outside the root)."""
        rel = os.path.relpath(path, self.root)
        if rel == ".." or rel.startswith(".." + os.sep):
            return Path(path).as_posix()
        return Path(rel).as_posix()

    def _counts(self, change: watchfiles.Change, path: str) -> bool:
        return self.rules.matches(self.relative(path))

    def _counts_file(self, change: watchfiles.Change, path: str) -> bool:
        return path in self._files and self._counts(change, path)

    async def _run(self, changes: AsyncIterator[set[tuple[watchfiles.Change, str]]]) -> None:
        try:
            async for raw in changes:
                if self._inotify is not None:
                    raw = self._unseen(raw)
                    if not raw:
                        continue
                self._arrive(self._net(raw))
        except OSError as exc:
            # e.g. the inotify watch limit: say what to do about it.
            self._error = SyncError(
                f"watching {self.root} failed: {exc}",
                hint="watch fewer paths, or raise fs.inotify.max_user_watches",
            )
        except Exception as exc:
            self._error = SyncError(f"watching {self.root} failed: {exc}")
        finally:
            self._arrived.set()

    def _arrive(self, changes: Iterable[FileChange]) -> None:
        now = asyncio.get_running_loop().time()
        if not self._pending:
            self._first_arrival = now
            self._leading_now = now - self._last_arrival >= self.quiet
        self._last_arrival = now
        self._pending = merge_changes(self._pending, changes)
        self._arrived.set()
        if self._on_change is None or self._telling is not None:
            return  # a call is due soon and reads the count then
        wait = self._told_at + _ON_CHANGE_EVERY - now
        if wait <= 0:
            self._tell()
        else:
            self._telling = asyncio.get_running_loop().call_later(wait, self._tell)

    def _tell(self) -> None:
        self._telling = None
        self._told_at = asyncio.get_running_loop().time()
        if self._on_change is not None:
            self._on_change(len(self._pending))

    def _cancel_telling(self) -> None:
        telling, self._telling = self._telling, None
        if telling is not None:
            telling.cancel()

    def _open_inotify(self, directories: Sequence[str], parents: Sequence[str]) -> DirWatch | None:
        """inotify on ``directories`` and the subdirectories that count, and on ``parents``
        (for the files in them); None where it is not available. Best effort: what it cannot
        watch (the limit, a permission) is left to watchfiles."""
        watch = DirWatch.open()
        if watch is None:
            return None
        room = MAX_INOTIFY_DIRECTORIES
        for top in directories:
            for current, subdirs, _ in os.walk(top):
                if room <= 0 or not watch.add(current):
                    subdirs.clear()
                    continue
                room -= 1
                subdirs[:] = [
                    d
                    for d in subdirs
                    if self.rules.matches(self.relative(os.path.join(current, d)))
                ]
        recursive = watch.directories
        for parent in parents:
            if room > 0 and watch.add(parent):
                room -= 1
        self._file_parents = frozenset(parents) - recursive
        return watch

    def _close_inotify(self) -> None:
        watch, self._inotify = self._inotify, None
        if watch is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # the loop is closing
                asyncio.get_running_loop().remove_reader(watch.fd)
            watch.close()

    def _unseen(
        self, raw: set[tuple[watchfiles.Change, str]]
    ) -> set[tuple[watchfiles.Change, str]]:
        """watchfiles' report without what inotify saw already (its directory is watched)."""
        assert self._inotify is not None
        watches = self._inotify.watches
        seen = {(change, path) for change, path in raw if watches(os.path.dirname(path))}
        if seen:
            now = asyncio.get_running_loop().time()
            self._echoes.append((now, self._net(seen)))
            while self._echoes and self._echoes[0][0] < now - _ECHO_SECONDS:
                self._echoes.popleft()
        return raw - seen

    def _read_inotify(self) -> None:
        watch = self._inotify
        if watch is None:
            return
        try:
            events = watch.read()
        except (inotify.Overflow, OSError):
            # Events were lost: watchfiles alone from now on, and what it reported lately
            # from inotify's directories counts again.
            self._close_inotify()
            echoes = [change for _, changes in self._echoes for change in changes]
            self._echoes.clear()
            if echoes:
                self._arrive(echoes)
            return
        closed = False
        changes = []
        for event in events:
            if event.mask & inotify.IN_CLOSE_WRITE:
                rel = self.relative(event.path)
                closed = closed or rel in self._writing
                self._writing.discard(rel)
            elif change := self._change(watch, event):
                changes.append(change)
        if changes:
            self._arrive(changes)
        elif closed:
            self._arrived.set()  # a half-written save is complete: it may go out now

    def _change(self, watch: DirWatch, event: DirEvent) -> FileChange | None:
        mask, path = event.mask, event.path
        if mask & (inotify.IN_MOVE_SELF | inotify.IN_DELETE_SELF):
            watch.forget(path)  # its parent's watch reports the move or deletion
            return None
        if mask & inotify.IN_MOVED_FROM and event.is_dir:
            watch.forget(path)  # its watches would report under the old path
        if os.path.dirname(path) in self._file_parents:
            counts = path in self._files and self.rules.matches(self.relative(path))
        else:
            counts = self.rules.matches(self.relative(path))
        if not counts:
            return None
        rel = self.relative(path)
        if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
            if mask & inotify.IN_CREATE and not event.is_dir:
                self._writing.add(rel)
            return FileChange(ChangeKind.ADDED, rel)
        if mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM):
            self._writing.discard(rel)
            return FileChange(ChangeKind.DELETED, rel)
        if mask & inotify.IN_MODIFY:
            self._writing.add(rel)
            return FileChange(ChangeKind.MODIFIED, rel)
        if mask & inotify.IN_ATTRIB:
            return FileChange(ChangeKind.MODIFIED, rel)
        return None

    def _net(self, raw: set[tuple[watchfiles.Change, str]]) -> list[FileChange]:
        """One change per path of an (unordered) watchfiles batch, in path order."""
        kinds: dict[str, set[ChangeKind]] = {}
        for change, path in raw:
            kinds.setdefault(path, set()).add(_KINDS[change])
        return [
            FileChange(collapse(seen, os.path.lexists(path)), self.relative(path))
            for path, seen in sorted(kinds.items())
        ]

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
