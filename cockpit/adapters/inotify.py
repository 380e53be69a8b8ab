"""Linux inotify read on the event loop: a file's change the moment it happens, with no thread
and no wakeups while nothing changes (hot reload notices a save through it at once)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from dataclasses import dataclass

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
_HEADER = struct.Struct("=iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


@dataclass(frozen=True, slots=True)
class DirEvent:
    """Something happened to ``path`` (absolute) in a watched directory; ``mask`` says what."""

    path: str
    mask: int

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


class Overflow(Exception):
    """The kernel dropped events (its queue was full): what happened meanwhile is unknown."""


class DirWatch:
    """One inotify instance watching single directories (not their subdirectories).

    ``open`` returns None where inotify is not available; ``add`` returns False when a
    directory cannot be watched (gone, no permission, the watch limit reached), so a caller
    can treat it as best effort.
    """

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._wds: dict[str, int] = {}

    @classmethod
    def open(cls) -> DirWatch | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(fd, libc) if fd >= 0 else None

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(self._wds)

    def watches(self, directory: str) -> bool:
        return directory in self._wds

    def add(self, directory: str) -> bool:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK)
        if wd < 0:
            return False
        self._dirs[wd] = directory
        self._wds[directory] = wd
        return True

    def forget(self, directory: str) -> None:
        """Stop watching ``directory`` and everything watched under it (after a rename their
        watches would report under the old paths)."""
        prefix = directory.rstrip(os.sep) + os.sep
        for path in [p for p in self._wds if p == directory or p.startswith(prefix)]:
            wd = self._wds.pop(path)
            self._dirs.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[DirEvent]:
        """The events queued now (none if nothing is queued). Raises Overflow when the kernel
        dropped some."""
        events: list[DirEvent] = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                offset += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    raise Overflow
                directory = self._dirs.get(wd)
                if directory is None:
                    continue
                if mask & IN_IGNORED:  # the directory is gone, or its watch was removed
                    self._dirs.pop(wd, None)
                    self._wds.pop(directory, None)
                    continue
                name = os.fsdecode(raw.rstrip(b"\0"))
                events.append(DirEvent(os.path.join(directory, name) if name else directory, mask))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._dirs.clear()
        self._wds.clear()
