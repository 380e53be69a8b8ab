"""Which file changes count for hot reload and file sync: ignore globs matched against paths
relative to the watched root (``**`` spans directories), and a pure merge of change batches.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# Never worth a reload or a sync: VCS and tool caches, dependency trees, and the temporary
# files editors write while saving (vim's swap files and its '4913' probe, emacs' '#x#' and
# '.#x' locks, backups ending in '~', JetBrains' safe-write copies).
DEFAULT_IGNORE: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".tox",
    ".venv",
    ".idea",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.py[cod]",
    "*.sw[a-p]",
    "*.sw[x-z]",
    "4913",
    "*~",
    ".#*",
    "#*#",
    "*___jb_tmp___",
    "*___jb_old___",
    ".DS_Store",
    "flycheck_*",
)


class ChangeKind(enum.StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class FileChange:
    """One changed file; ``path`` is relative to the watched root, '/'-separated."""

    kind: ChangeKind
    path: str


def normalize(path: str) -> str:
    """'./a//b/' -> 'a/b': the form patterns are matched against."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts)


def _split(pattern: str) -> tuple[str, ...]:
    """A pattern as components; one without '/' (but for a trailing one) matches at any depth."""
    text = pattern.replace("\\", "/")
    anchored = "/" in text.rstrip("/")
    parts = [part for part in normalize(text).split("/") if part]
    while len(parts) > 1 and parts[-1] == "**":  # 'dir/**' is 'dir' and what is under it
        parts.pop()
    if parts and not anchored:
        parts.insert(0, "**")
    return tuple(parts)


def _covers(pattern: Sequence[str], parts: Sequence[str], i: int = 0, j: int = 0) -> bool:
    """True when ``pattern[i:]`` matches ``parts[j:k]`` for some k > 0: the path itself or a
    directory above it (a match on a directory covers everything beneath it)."""
    if i == len(pattern):
        return j > 0
    if pattern[i] == "**":
        return any(_covers(pattern, parts, i + 1, k) for k in range(j, len(parts) + 1))
    return (
        j < len(parts)
        and fnmatchcase(parts[j], pattern[i])
        and _covers(pattern, parts, i + 1, j + 1)
    )


def glob_matches(pattern: str, path: str) -> bool:
    """Whether ``pattern`` covers ``path`` (relative to the root).

    A pattern without '/' matches a name at any depth (``*.pyc``, ``node_modules``); one with
    '/' is anchored at the root (``build/gen``, ``/dist``, ``**/tmp/*.log``), ``**`` spanning
    any number of directories; ``*``, ``?`` and ``[...]`` match within one name. A match on a
    directory covers everything beneath it.
    """
    return _covers(_split(pattern), normalize(path).split("/"))


@dataclass(frozen=True, slots=True)
class WatchRules:
    """The ignore globs of one watch: the built-in defaults plus the user's own."""

    patterns: tuple[str, ...]
    _split: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Split once: a burst of changes checks every pattern for every path.
        object.__setattr__(self, "_split", tuple(_split(pattern) for pattern in self.patterns))

    @classmethod
    def of(cls, ignore: Iterable[str] = (), *, defaults: bool = True) -> WatchRules:
        return cls((*(DEFAULT_IGNORE if defaults else ()), *ignore))

    def ignores(self, path: str) -> bool:
        """True when a change of ``path`` (relative to the root) does not count."""
        parts = normalize(path).split("/")
        if parts == [""]:
            return False  # the root itself
        return any(_covers(pattern, parts) for pattern in self._split)

    def matches(self, path: str) -> bool:
        """True when a change of ``path`` (relative to the root) counts."""
        return not self.ignores(path)


def merge_changes(
    pending: Mapping[str, ChangeKind], changes: Iterable[FileChange]
) -> dict[str, ChangeKind]:
    """Fold ``changes`` (in the order they happened) into ``pending``, one entry per path.

    Only the net effect survives: a file added then modified is added, added then deleted is
    nothing, deleted then added again is modified.
    """
    merged = dict(pending)
    for change in changes:
        before = merged.get(change.path)
        kind = change.kind
        if before is ChangeKind.ADDED and kind is ChangeKind.DELETED:
            del merged[change.path]
            continue
        if before is ChangeKind.ADDED:
            kind = ChangeKind.ADDED
        elif before is ChangeKind.DELETED and kind is ChangeKind.ADDED:
            kind = ChangeKind.MODIFIED
        merged[change.path] = kind
    return merged


def collapse(kinds: Iterable[ChangeKind], exists: bool) -> ChangeKind:
    """The net change of a path reported several times in one unordered batch.

    The order is lost (an editor's delete-and-recreate save and a create-then-delete look the
    same), so whether the file ``exists`` now decides: a sync copies it or deletes it.
    """
    seen = set(kinds)
    if len(seen) == 1:
        return next(iter(seen))
    if not exists:
        return ChangeKind.DELETED
    if ChangeKind.ADDED in seen and ChangeKind.DELETED not in seen:
        return ChangeKind.ADDED
    return ChangeKind.MODIFIED


def as_changes(pending: Mapping[str, ChangeKind]) -> tuple[FileChange, ...]:
    """``pending`` as changes in path order."""
    return tuple(FileChange(kind, path) for path, kind in sorted(pending.items()))


def summarize(changes: Sequence[FileChange], limit: int = 3) -> str:
    """'app.py, lib/db.py and 12 more' for a log line."""
    names = [change.path for change in changes[:limit]]
    rest = len(changes) - len(names)
    if rest > 0:
        return f"{', '.join(names)} and {rest} more"
    return ", ".join(names)
