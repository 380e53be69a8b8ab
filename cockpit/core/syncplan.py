"""Remote sync planning: which local changes become which tar members and remote deletions,
with every remote path kept inside the rule's remote directory.

Pure: the engine stats the local files (through the adapter) and hands the result here; the
adapter turns a ``SyncPlan`` into one ``sh -c 'rm ...; tar -x ...'`` per pod.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cockpit.errors import SyncError

EntryKind = Literal["file", "dir"]


def check_relative(rel: str) -> str:
    """``rel`` if it is a safe path below a sync root: relative, normalised, no ``..``."""
    if not rel or rel == ".":
        raise SyncError("refusing to sync an empty path (the sync root itself)")
    if "\x00" in rel:
        raise SyncError(f"refusing to sync {rel!r}: a path may not contain a NUL byte")
    if rel.startswith("/"):
        raise SyncError(f"refusing to sync {rel!r}: an absolute path would leave the remote path")
    parts = rel.split("/")
    if ".." in parts:
        raise SyncError(f"refusing to sync {rel!r}: '..' would leave the remote path")
    if "" in parts or "." in parts:
        raise SyncError(f"refusing to sync {rel!r}: not a normalised path")
    return rel


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), None when it is outside."""
    if path == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    if path.startswith(prefix):
        return path[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class SyncRoots:
    """A rule's two ends as directories. A rule for one file keeps its directories and maps
    the one local name (``file_name``) to its remote name (``remote_name``)."""

    local_dir: str  # absolute, normalised local directory
    remote_dir: str  # absolute, normalised directory in the container
    file_name: str | None = None
    remote_name: str | None = None

    @classmethod
    def of(cls, local: str, remote: str, *, local_is_file: bool) -> SyncRoots:
        """``local`` absolute (resolved by the caller), ``remote`` absolute in the container."""
        if not local.startswith("/") or not remote.startswith("/"):
            raise SyncError(f"sync paths must be absolute: {local!r} -> {remote!r}")
        local = posixpath.normpath(local)
        remote = posixpath.normpath(remote)
        if remote.startswith("//"):  # normpath keeps a leading '//' (POSIX leaves it open)
            remote = "/" + remote.lstrip("/")
        if not local_is_file:
            return cls(local, remote)
        if remote == "/":
            raise SyncError(f"cannot sync the file {local} onto '/': name the remote file")
        return cls(
            posixpath.dirname(local),
            posixpath.dirname(remote),
            posixpath.basename(local),
            posixpath.basename(remote),
        )

    @property
    def is_file(self) -> bool:
        return self.file_name is not None

    @property
    def local(self) -> str:
        """The rule's local path (the file, or the directory)."""
        if self.file_name is None:
            return self.local_dir
        return posixpath.join(self.local_dir, self.file_name)

    @property
    def remote(self) -> str:
        """The rule's remote path (the file, or the directory)."""
        if self.remote_name is None:
            return self.remote_dir
        return posixpath.join(self.remote_dir, self.remote_name)

    def relative(self, local_path: str) -> str | None:
        """A changed local path as a path below ``local_dir``; None when the rule does not
        cover it (outside the directory, or another file next to a file rule's file)."""
        rel = _under(posixpath.normpath(local_path), self.local_dir)
        if rel is None or rel == "":
            return None
        if self.file_name is not None and rel != self.file_name:
            return None
        return rel

    def arcname(self, rel: str) -> str:
        """Where ``rel`` lands, relative to ``remote_dir`` (a file rule renames its file)."""
        check_relative(rel)
        if self.file_name is not None:
            if rel != self.file_name:
                raise SyncError(f"refusing to sync {rel!r}: the rule covers {self.file_name} only")
            assert self.remote_name is not None
            return self.remote_name
        return rel

    def remote_path(self, rel: str) -> str:
        return posixpath.join(self.remote_dir, self.arcname(rel))


@dataclass(frozen=True, slots=True)
class LocalEntry:
    """A local file or directory as it is now (the adapter stats it)."""

    rel: str  # below SyncRoots.local_dir
    kind: EntryKind
    size: int = 0
    mode: int = 0o644  # permission bits only
    mtime: float = 0.0


@dataclass(frozen=True, slots=True)
class TarMember:
    """One member of the tar stream: read ``source`` (a file) or make a directory."""

    arcname: str  # relative to the remote directory tar extracts in
    source: str  # the absolute local path
    kind: EntryKind
    size: int
    mode: int
    mtime: float


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What one push does in a pod: delete ``deletes``, then extract ``members``."""

    members: tuple[TarMember, ...] = ()
    deletes: tuple[str, ...] = ()  # relative to the remote directory, already safe

    @property
    def empty(self) -> bool:
        return not self.members and not self.deletes

    @property
    def files(self) -> int:
        """Files written plus paths deleted: what the sync pane counts."""
        return sum(1 for m in self.members if m.kind == "file") + len(self.deletes)

    @property
    def bytes(self) -> int:
        return sum(m.size for m in self.members)

    def sample(self, limit: int = 5) -> tuple[str, ...]:
        """A few of the paths this plan touches, for the sync pane's detail."""
        names = [m.arcname for m in self.members if m.kind == "file"]
        names += [f"{d} (deleted)" for d in self.deletes]
        return tuple(names[:limit])


def plan_sync(roots: SyncRoots, present: Iterable[LocalEntry], gone: Iterable[str]) -> SyncPlan:
    """The push for ``present`` entries (uploaded) and ``gone`` paths (deleted remotely).

    A path both present and gone is uploaded (the local state now wins: an editor's atomic
    save reports a deletion and a creation). A deletion under another deletion is dropped
    (``rm -rf`` of the parent covers it). Every path is checked: nothing maps outside the
    remote directory. Directories come before their contents.
    """
    members: dict[str, TarMember] = {}
    for entry in present:
        arcname = roots.arcname(entry.rel)
        members[arcname] = TarMember(
            arcname=arcname,
            source=posixpath.join(roots.local_dir, entry.rel),
            kind=entry.kind,
            size=entry.size if entry.kind == "file" else 0,
            mode=entry.mode & 0o7777,
            mtime=entry.mtime,
        )
    deleted = sorted({roots.arcname(rel) for rel in gone} - members.keys())
    deletes: list[str] = []
    for path in deleted:  # sorted: a parent comes before what is under it
        if not any(_under(path, parent) for parent in deletes):
            deletes.append(path)
    ordered = tuple(members[name] for name in sorted(members, key=lambda n: n.split("/")))
    return SyncPlan(ordered, tuple(deletes))


def split_deletes(deletes: Sequence[str], max_bytes: int) -> list[tuple[str, ...]]:
    """``deletes`` in chunks whose arguments take at most ``max_bytes`` (the exec command
    travels in the request URL); a single longer path gets a chunk of its own."""
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    used = 0
    for path in deletes:
        size = len(path.encode()) + 1
        if current and used + size > max_bytes:
            chunks.append(tuple(current))
            current, used = [], 0
        current.append(path)
        used += size
    if current:
        chunks.append(tuple(current))
    return chunks
