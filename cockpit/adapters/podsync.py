"""File sync into a pod's container: local files read into one tar stream, piped into
``tar -x`` over exec stdin, deletions done by ``rm -rf`` in the same exec — one round trip
per pod per batch, and nothing needed in the image beyond ``sh`` and ``tar``.

Local side: ``scan_changes``/``scan_all`` stat what changed, ``build_tar`` reads it once into
a ``TarPayload`` that every pod's push streams from. Exec failures become one-line
``SyncError``s (no tar in the image, a read-only path, a failed post_sync command).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from cockpit.adapters.kube import Kube, _take_channel, exit_status, short_reason
from cockpit.core.syncplan import LocalEntry, SyncPlan, SyncRoots, TarMember, split_deletes
from cockpit.errors import AccessDeniedError, CockpitError, NotFoundError, SyncError

Ignored = Callable[[str], bool]
"""True for a path (relative to the sync root) that must not be copied."""

CHUNK = 256 * 1024  # stdin frames: the kubelet reads whole frames into memory
IN_MEMORY_MAX = 64 * 1024 * 1024  # larger payloads are spooled to a temporary file
READ_WHOLE_MAX = 8 * 1024 * 1024  # smaller files are read at once (a consistent copy)
# The command travels in the request URL: keep each exec's deletions well below the limits
# of API servers and proxies.
DELETE_ARGS_MAX = 64 * 1024
BASE_TIMEOUT = 60.0
MIN_RATE = 1024 * 1024  # bytes/s a push may not fall below before it counts as stuck

# $1 remote dir, $2 the size of the tar stream that follows on stdin (0: none), $3 post_sync
# ("" = none), then the paths to delete (relative to $1). Exit codes 90-93 say which step
# failed. BusyBox tar reads to the end of its input, not to the end of the archive as GNU tar
# does, and an exec's stdin cannot be closed over the websocket protocol before Kubernetes
# 1.29: `head -c` hands tar exactly the stream (plain tar where there is no head).
PUSH_SCRIPT = """\
root=$1 size=$2 post=$3
shift 3
if [ "$size" != 0 ] && ! command -v tar >/dev/null 2>&1; then
  echo "cockpit-sync: tar: not found" >&2; exit 127
fi
mkdir -p -- "$root" && cd -- "$root" || exit 90
if [ "$#" -gt 0 ]; then rm -rf -- "$@" || exit 91; fi
if [ "$size" != 0 ]; then
  if command -v head >/dev/null 2>&1; then
    head -c "$size" | tar -x -o -f - || exit 92
  else
    tar -x -o -f - || exit 92
  fi
fi
if [ -n "$post" ]; then
  sh -c "$post" </dev/null 2>&1 || { echo "cockpit-sync: post_sync exited with $?" >&2; exit 93; }
fi
"""
_NO_TAR_MARK = "cockpit-sync: tar: not found"
_POST_MARK = "cockpit-sync: post_sync exited with "


# -- the local side (blocking: run in a thread) --------------------------------------------


def _entry(rel: str, st: os.stat_result) -> LocalEntry | None:
    if stat.S_ISDIR(st.st_mode):
        return LocalEntry(rel, "dir", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        return LocalEntry(rel, "file", st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime)
    return None  # sockets, fifos, devices: nothing to copy


def _walk(roots: SyncRoots, rel: str, ignored: Ignored, out: list[LocalEntry]) -> None:
    """Every entry below the directory ``rel`` ("" = the root), symlinks followed."""
    base = posixpath.join(roots.local_dir, rel) if rel else roots.local_dir
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        here = posixpath.relpath(dirpath, roots.local_dir)
        keep = []
        for name in sorted(dirnames):
            child = name if here == "." else f"{here}/{name}"
            if ignored(child):
                continue
            keep.append(name)
            with contextlib.suppress(OSError):
                entry = _entry(child, os.stat(posixpath.join(dirpath, name)))
                if entry is not None:
                    out.append(entry)
        dirnames[:] = keep  # os.walk descends only into what is kept
        for name in sorted(filenames):
            child = name if here == "." else f"{here}/{name}"
            if ignored(child):
                continue
            try:
                entry = _entry(child, os.stat(posixpath.join(dirpath, name)))
            except OSError:  # gone since listed, or a broken symlink
                continue
            if entry is not None:
                out.append(entry)


def scan_changes(
    roots: SyncRoots, rels: Iterable[str], ignored: Ignored
) -> tuple[list[LocalEntry], list[str]]:
    """What the changed paths are now: (present entries, with whole new directories walked;
    paths that are gone)."""
    present: list[LocalEntry] = []
    gone: list[str] = []
    for rel in sorted(set(rels)):
        if ignored(rel):
            continue
        try:
            st = os.stat(posixpath.join(roots.local_dir, rel))
        except FileNotFoundError:
            gone.append(rel)
            continue
        except OSError:
            continue  # unreadable now; the next change retries it
        entry = _entry(rel, st)
        if entry is None:
            continue
        present.append(entry)
        if entry.kind == "dir" and not roots.is_file:
            _walk(roots, rel, ignored, present)
    return present, gone


def scan_all(roots: SyncRoots, ignored: Ignored) -> list[LocalEntry]:
    """Every file and directory the rule covers (a full sync); SyncError if the local path
    does not exist."""
    try:
        st = os.stat(roots.local)
    except OSError as exc:
        raise SyncError(f"cannot read {roots.local}: {exc.strerror or exc}") from exc
    if roots.is_file:
        assert roots.file_name is not None
        entry = _entry(roots.file_name, st)
        return [entry] if entry is not None else []
    if not stat.S_ISDIR(st.st_mode):
        raise SyncError(f"{roots.local} is not a directory")
    out: list[LocalEntry] = []
    _walk(roots, "", ignored, out)
    return out


@dataclass(frozen=True, slots=True)
class TarPayload:
    """A tar stream built once and sent to every pod: bytes, or a temporary file for a big
    one (each push opens its own handle)."""

    size: int
    members: int  # members actually written (a file gone since the scan is left out)
    data: bytes = b""
    path: str | None = None

    def chunks(self) -> Iterator[bytes]:
        if self.path is None:
            for start in range(0, len(self.data), CHUNK):
                yield self.data[start : start + CHUNK]
            return
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _tarinfo(member: TarMember, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.arcname)
    info.type = tarfile.DIRTYPE if member.kind == "dir" else tarfile.REGTYPE
    info.size = size
    info.mode = member.mode
    info.mtime = int(member.mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(fileobj: IO[bytes], members: Sequence[TarMember]) -> int:
    """Write the tar stream of ``members``; how many were written."""
    written = 0
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if member.kind == "dir":
                tar.addfile(_tarinfo(member, 0))
                written += 1
                continue
            try:
                with open(member.source, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size <= READ_WHOLE_MAX:
                        data = f.read()
                        tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
                    else:
                        tar.addfile(_tarinfo(member, size), f)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SyncError(
                    f"cannot read {member.source}: {exc.strerror or exc} "
                    "(changed while syncing? the next change retries)"
                ) from exc
            written += 1
    return written


def build_tar(members: Sequence[TarMember]) -> TarPayload | None:
    """The tar stream of ``members`` (None when there are none). A file that disappeared
    since the scan is left out (its deletion comes as the next change)."""
    if not members:
        return None
    if sum(m.size for m in members) <= IN_MEMORY_MAX:
        buffer = io.BytesIO()
        written = _write_tar(buffer, members)
        data = buffer.getvalue()
        return TarPayload(len(data), written, data=data)
    fd, path = tempfile.mkstemp(prefix="cockpit-sync-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f:
            written = _write_tar(f, members)
    except BaseException:
        os.unlink(path)
        raise
    return TarPayload(os.path.getsize(path), written, path=path)


# -- the pod side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodContainer:
    """One container of one pod that a rule syncs into."""

    namespace: str
    pod: str
    container: str

    def describe(self) -> str:
        return f"container {self.container} of pod {self.pod}"


@dataclass(frozen=True, slots=True)
class PushResult:
    duration: float
    output: str  # what post_sync printed (stdout and stderr), "" without one


def push_error(
    target: PodContainer, remote: str, code: int, stderr: str, message: str = "", output: str = ""
) -> SyncError:
    """The one line a user reads when a push into ``target`` failed (``output``: what
    post_sync printed)."""
    where = target.describe()
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 127 and (_NO_TAR_MARK in stderr or not message):
        return SyncError(f"{where} has no tar; remote sync needs tar in the image")
    if code == 127:  # the exec itself: no /bin/sh in the image
        return SyncError(f"{where} has no shell (sh); remote sync needs sh and tar in the image")
    if code == 93:
        post = next((ln for ln in reversed(lines) if ln.startswith(_POST_MARK)), "")
        status = post.removeprefix(_POST_MARK) or "?"
        before = [ln for ln in output.splitlines() if ln.strip()]
        last = f": {before[-1].strip()}" if before else ""
        return SyncError(f"post_sync failed in {where} (exit {status}){last}")
    text = " ".join(stderr.split())
    if "Read-only file system" in text:
        return SyncError(f"{remote} is read-only in {where}")
    if "Permission denied" in text:
        return SyncError(
            f"cannot write to {remote} in {where}: permission denied "
            "(the container's user may not write there)"
        )
    if "No space left on device" in text:
        return SyncError(f"no space left under {remote} in {where}")
    step = {90: "creating", 91: "deleting in", 92: "extracting into"}.get(code, "syncing into")
    detail = lines[-1].strip() if lines else message or "no output"
    return SyncError(f"{step} {remote} in {where} failed (exit {code}): {detail}")


def _refusal(exc: BaseException) -> str:
    """The API server's own words when it refused the exec handshake (a Status object
    follows the headers in the error text), else the short reason."""
    text = str(getattr(exc, "reason", None) or exc)
    start = text.find('{"kind":"Status"')
    if start >= 0:
        with contextlib.suppress(ValueError):
            message = json.loads(text[start:]).get("message")
            if message:
                return str(message)
    return short_reason(exc)


class PodFiles(Protocol):
    """Pushes a sync plan into one container (the engine depends on this, not on Kube)."""

    async def push(
        self,
        target: PodContainer,
        remote_dir: str,
        plan: SyncPlan,
        payload: TarPayload | None,
        post_sync: str | None = None,
    ) -> PushResult: ...


class KubePodFiles:
    """Pushes into pods through the API server's exec (``Kube.exec_websocket``)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def push(
        self,
        target: PodContainer,
        remote_dir: str,
        plan: SyncPlan,
        payload: TarPayload | None,
        post_sync: str | None = None,
    ) -> PushResult:
        """Apply ``plan`` in ``target``: deletions, then ``payload`` extracted into
        ``remote_dir``, then ``post_sync``. Raises SyncError (one line), NotFoundError when
        the pod is gone, AccessDeniedError without pods/exec."""
        return await asyncio.to_thread(
            self.push_blocking, target, remote_dir, plan, payload, post_sync
        )

    def push_blocking(
        self,
        target: PodContainer,
        remote_dir: str,
        plan: SyncPlan,
        payload: TarPayload | None,
        post_sync: str | None = None,
    ) -> PushResult:
        started = time.monotonic()
        chunks = split_deletes(plan.deletes, DELETE_ARGS_MAX) or [()]
        output = ""
        for i, deletes in enumerate(chunks):
            last = i == len(chunks) - 1
            output = self._exec(
                target,
                remote_dir,
                deletes,
                payload if last else None,
                post_sync if last else None,
            )
        return PushResult(time.monotonic() - started, output)

    def _exec(
        self,
        target: PodContainer,
        remote_dir: str,
        deletes: Sequence[str],
        payload: TarPayload | None,
        post_sync: str | None,
    ) -> str:
        from kubernetes.stream.ws_client import ERROR_CHANNEL

        argv = [
            "sh",
            "-c",
            PUSH_SCRIPT,
            "cockpit-sync",
            remote_dir,
            str(payload.size if payload is not None else 0),
            post_sync or "",
            *deletes,
        ]
        size = payload.size if payload is not None else 0
        deadline = time.monotonic() + BASE_TIMEOUT + size / MIN_RATE
        try:
            ws = self._kube.exec_websocket(
                target.namespace, target.pod, target.container, argv, tty=False
            )
        except (NotFoundError, AccessDeniedError):
            raise
        except CockpitError as exc:
            reason = _refusal(exc.__cause__) if exc.__cause__ is not None else exc.message
            raise SyncError(f"cannot exec into {target.describe()}: {reason}") from exc
        stdout, stderr = bytearray(), bytearray()

        def collect() -> None:
            ws.update(timeout=0)
            stdout.extend(_take_channel(ws, 1))
            stderr.extend(_take_channel(ws, 2))

        try:
            if payload is not None:
                try:
                    for chunk in payload.chunks():
                        if not ws.is_open():
                            break  # it ended early (an error): its status says why
                        ws.write_channel(0, chunk)
                        collect()
                        if time.monotonic() > deadline:
                            raise TimeoutError
                except TimeoutError:
                    raise
                except Exception:
                    # Closed while we wrote: the command ended early, its status says why.
                    with contextlib.suppress(Exception):
                        collect()
                    if ws.is_open() and ws.sock is not None and ws.sock.connected:
                        raise
            while ws.is_open():
                if time.monotonic() > deadline:
                    raise TimeoutError
                ws.update(timeout=0.5)
                stdout.extend(_take_channel(ws, 1))
                stderr.extend(_take_channel(ws, 2))
            code, message = exit_status(_take_channel(ws, ERROR_CHANNEL))
        except TimeoutError:
            raise SyncError(
                f"sync into {target.describe()} did not finish in "
                f"{BASE_TIMEOUT + size / MIN_RATE:.0f} s"
            ) from None
        except Exception as exc:  # websocket-client errors share no base class
            raise SyncError(f"sync into {target.describe()} broke: {short_reason(exc)}") from exc
        finally:
            with contextlib.suppress(Exception):
                ws.close()
        err = stderr.decode(errors="replace")
        if code != 0 and not err and "command terminated" not in message:
            err = message
        out = stdout.decode(errors="replace")
        if code != 0:
            raise push_error(target, remote_dir, code, err, message, out)
        return out
