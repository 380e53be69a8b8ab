"""Remote sync: each ``sync:`` rule of a service left in the cluster pushes local changes into
every running pod of that service (tar over exec), with a full sync for each new pod.

Wiring (the CLI's cluster starter)::

    sync = RemoteSync(config, local_service, namespace, KubePodFiles(kube), engine)
    await sync.start()                 # initial state published; never raises for a bad rule
    watcher.on_pods(sync.update_pods)  # pods of every service, now and after each change
    ...
    await sync.stop()

Per rule: one FileWatcher (changes that arrive during a push merge into the next one), one
task that pushes each batch to every running pod in parallel, a full sync to a pod whose
container is new (a new pod, a replaced one, a restarted container), retries with backoff
after a failure, and ``SyncChanged`` events: watching / pending / syncing / in-sync / failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cockpit.adapters.podsync import (
    PodContainer,
    PodFiles,
    TarPayload,
    build_tar,
    scan_all,
    scan_changes,
)
from cockpit.core.backoff import Backoff
from cockpit.core.config import CockpitConfig, SyncRule
from cockpit.core.events import Level, SyncChanged
from cockpit.core.kubemodel import PodView
from cockpit.core.syncplan import SyncPlan, SyncRoots, plan_sync
from cockpit.core.watchrules import WatchRules
from cockpit.engine.filewatch import ChangeBatch, FileWatcher
from cockpit.engine.supervisor import SessionBus
from cockpit.errors import CockpitError, SyncError

QUIET = 0.05
"""Seconds without a new change that end a batch: short, a save should land at once."""


def rule_name(service: str, rule: SyncRule) -> str:
    """'web: ./static -> /app/static' (the sync pane's row)."""
    return f"{service}: {rule.local} -> {rule.remote}"


@dataclass(slots=True)
class _Target:
    """A pod's container the rule syncs into, and where it stands."""

    target: PodContainer
    identity: tuple[str, str]  # (pod uid, container id): a new one needs a full sync
    synced: bool = False
    failure: str = ""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One plan and the targets it goes to (changes to synced pods, everything to new ones)."""

    plan: SyncPlan
    targets: list[_Target]


class RuleSync:
    """One sync rule of one remote service."""

    def __init__(
        self,
        service: str,
        rule: SyncRule,
        local: str,
        namespace: str,
        files: PodFiles,
        bus: SessionBus,
        *,
        quiet: float = QUIET,
        retry: Backoff | None = None,
    ) -> None:
        self.service = service
        self.rule = rule
        self.name = rule_name(service, rule)
        self.local = local  # absolute
        self.namespace = namespace
        self.syncs = 0  # pushes done (each to every target), for tests and the bench
        self._files = files
        self._bus = bus
        self._quiet = quiet
        self._retry = retry or Backoff(initial=2.0, maximum=60.0)
        self._rules = WatchRules.of(rule.ignore)
        self._post = (
            rule.post_sync
            if rule.post_sync is None or isinstance(rule.post_sync, str)
            else shlex.join(rule.post_sync)
        )
        self._roots: SyncRoots | None = None
        self._watcher: FileWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pods: list[PodView] = []
        self._service_exists = True
        self._targets: dict[tuple[str, str], _Target] = {}
        # Problems of the rule rather than of one pod: the watch failed (for good), the local
        # path is unreadable (until a sync works again), the container is not in the pods.
        self._watch_problem = ""
        self._local_problem = ""
        self._pod_problem = ""
        self._retry_handle: asyncio.TimerHandle | None = None
        self._syncing = False
        self._pending = 0
        self._last: SyncChanged | None = None
        self._alerted: dict[str, str] = {}

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the local path and start pushing; a problem (the local path missing) is
        published as the rule's failed state, not raised: the rest of the session goes on."""
        try:
            self._roots = await asyncio.to_thread(self._resolve)
            root = self._roots.local_dir
            watched = [self._roots.file_name or "."]
            self._watcher = FileWatcher(
                root, watched, rules=self._rules, quiet=self._quiet, on_change=self._on_change
            )
            await self._watcher.start()
        except CockpitError as exc:
            self._watch_problem = exc.one_line()
            self._alert(self._watch_problem)
            self._publish()
            return
        self._publish()
        self._task = asyncio.create_task(self._run(), name=f"sync {self.name}")

    def _resolve(self) -> SyncRoots:
        try:
            is_dir = os.path.isdir(self.local)
            exists = is_dir or os.path.isfile(self.local)
        except OSError as exc:  # pragma: no cover - isdir does not raise on Linux
            raise SyncError(f"cannot read {self.local}: {exc}") from exc
        if not exists:
            raise SyncError(
                f"sync {self.name}: {self.local} does not exist",
                hint=f"create it, or fix services.{self.service}.sync in cockpit.yaml",
            )
        return SyncRoots.of(self.local, self.rule.remote, local_is_file=not is_dir)

    async def stop(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watcher is not None:
            await self._watcher.stop()

    def update_pods(self, pods: Sequence[PodView] | None) -> None:
        """The service's pods now (from the cluster watch; None: no such Service); new
        containers get a full sync."""
        self._service_exists = pods is not None
        self._pods = list(pods or ())
        self._wake.set()

    @property
    def state(self) -> SyncChanged | None:
        """The last state published."""
        return self._last

    # -- the loop ------------------------------------------------------------------------------

    def _on_change(self, pending: int) -> None:
        # Once per settled batch of saves (not per file): "pending N", or "syncing, N more".
        self._pending = pending
        self._publish()

    async def _run(self) -> None:
        assert self._watcher is not None and self._roots is not None
        batch_task: asyncio.Task[ChangeBatch | None] | None = None
        try:
            while True:
                if batch_task is None:
                    batch_task = asyncio.ensure_future(self._watcher.next_batch())
                woken = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {batch_task, woken}, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                self._wake.clear()
                changed: set[str] = set()
                if batch_task in done:
                    task, batch_task = batch_task, None
                    try:
                        batch = task.result()
                    except SyncError as exc:
                        self._watch_problem = exc.one_line()
                        self._alert(self._watch_problem)
                        self._publish()
                        return
                    if batch is None:
                        return  # the watcher stopped
                    changed = self._relative(batch)
                self._pending = self._watcher.pending
                await self._sync(changed)
        finally:
            if batch_task is not None:
                batch_task.cancel()

    def _relative(self, batch: ChangeBatch) -> set[str]:
        assert self._roots is not None
        out = set()
        for change in batch.changes:
            rel = self._roots.relative(batch.absolute(change))
            if rel is not None:
                out.add(rel)
        return out

    def _reconcile(self) -> None:
        """Targets from the pods: running containers of live pods; gone ones are dropped."""
        wanted: dict[tuple[str, str], _Target] = {}
        problem = ""
        if not self._service_exists:
            problem = f"service '{self.service}' not found in namespace '{self.namespace}'"
        for pod in self._pods:
            if pod.deleting or pod.finished:
                continue
            container = self.rule.container or (pod.spec_containers or ("",))[0]
            if pod.spec_containers and container not in pod.spec_containers:
                problem = (
                    f"container {container} not found in pod {pod.name} "
                    f"(containers: {', '.join(pod.spec_containers)})"
                )
                continue
            view = pod.container(container)
            if view is None or view.state != "running" or not container:
                continue
            key = (pod.name, container)
            identity = (pod.uid, view.container_id)
            known = self._targets.get(key)
            if known is not None and known.identity == identity:
                wanted[key] = known
            else:
                target = PodContainer(self.namespace, pod.name, container)
                wanted[key] = _Target(target, identity)
        self._targets = wanted
        if problem and problem != self._pod_problem:
            self._alert(problem)
        self._pod_problem = problem

    async def _sync(self, changed: set[str]) -> None:
        assert self._roots is not None
        self._reconcile()
        delta = [t for t in self._targets.values() if t.synced]
        full = [t for t in self._targets.values() if not t.synced]
        if not (changed and delta) and not full:
            self._publish()
            return
        started = time.monotonic()
        self._syncing = True
        self._publish()
        roots, ignores = self._roots, self._rules.ignores
        outcomes: list[_Outcome] = []
        try:
            present, gone = await asyncio.to_thread(scan_changes, roots, changed, ignores)
            if changed and delta:
                outcomes.append(_Outcome(plan_sync(roots, present, gone), delta))
            if full:
                everything = await asyncio.to_thread(scan_all, roots, ignores)
                outcomes.append(_Outcome(plan_sync(roots, everything, gone), full))
            await self._push_all(outcomes)
        except SyncError as exc:
            # The local side failed (the local path went away): every target waits for a
            # full sync once it is back.
            for target in self._targets.values():
                target.synced = False
            self._syncing = False
            if exc.one_line() != self._local_problem:
                self._alert(exc.one_line())
            self._local_problem = exc.one_line()
            self._publish()
            self._schedule_retry()
            return
        self._syncing = False
        self._local_problem = ""
        self.syncs += 1
        duration = time.monotonic() - started
        shown = outcomes[0].plan
        self._report(outcomes, duration)
        failed = any(t.failure for t in self._targets.values())
        if failed:
            self._schedule_retry()
        else:
            self._retry.reset()
        self._publish(
            last_sync=self._bus.now(),
            duration=duration,
            files=shown.files,
            size=shown.bytes,
        )

    async def _push_all(self, outcomes: Sequence[_Outcome]) -> None:
        payloads: list[TarPayload | None] = []
        try:
            for outcome in outcomes:
                payloads.append(await asyncio.to_thread(build_tar, outcome.plan.members))
            jobs = [
                self._push(target, outcome.plan, payload)
                for outcome, payload in zip(outcomes, payloads, strict=True)
                for target in outcome.targets
            ]
            await asyncio.gather(*jobs)
        finally:
            for payload in payloads:
                if payload is not None:
                    payload.discard()

    async def _push(self, target: _Target, plan: SyncPlan, payload: TarPayload | None) -> None:
        assert self._roots is not None
        if plan.empty and self._post is None and target.synced:
            return
        try:
            await self._files.push(target.target, self._roots.remote_dir, plan, payload, self._post)
        except CockpitError as exc:
            # A pod that went away under us (NotFoundError) is dropped by the next pod update.
            target.synced, target.failure = False, exc.one_line()
            return
        target.synced, target.failure = True, ""

    def _schedule_retry(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        delay = self._retry.next_delay(time.monotonic())
        self._retry_handle = asyncio.get_running_loop().call_later(delay, self._wake.set)

    # -- reporting -----------------------------------------------------------------------------

    def _report(self, outcomes: Sequence[_Outcome], duration: float) -> None:
        """One log line per push, and an alert the first time a pod fails for a reason."""
        for outcome in outcomes:
            ok = [t for t in outcome.targets if t.synced]
            if ok and not outcome.plan.empty:
                what = ", ".join(outcome.plan.sample(3))
                more = outcome.plan.files - len(outcome.plan.sample(3))
                if more > 0:
                    what += f" and {more} more"
                self._bus.say(
                    f"sync {self.name}: {what} ({outcome.plan.bytes:,} bytes) into "
                    f"{len(ok)} pod{'s' if len(ok) != 1 else ''} in {duration:.2f} s"
                )
        for target in self._targets.values():
            pod = target.target.pod
            if not target.failure:
                self._alerted.pop(pod, None)
                continue
            if self._alerted.get(pod) == target.failure:
                continue
            self._alerted[pod] = target.failure
            self._alert(target.failure)

    def _alert(self, reason: str) -> None:
        seq = self._bus.say(f"sync {self.name} failed: {reason}", Level.ERROR)
        self._bus.alert(
            f"sync:{self.name}", self.service, f"sync failed: {reason}", reason, Level.ERROR, seq
        )

    def _publish(
        self,
        *,
        last_sync: float | None = None,
        duration: float | None = None,
        files: int | None = None,
        size: int | None = None,
    ) -> None:
        last = self._last
        failures = [t.failure for t in self._targets.values() if t.failure]
        problem = self._watch_problem or self._local_problem or self._pod_problem
        reason = problem or (failures[0] if failures else "")
        if not problem and len(failures) > 1:
            reason += f" (and {len(failures) - 1} more pod{'s' if len(failures) > 2 else ''})"
        if self._syncing:
            state = "syncing"
        elif reason:
            state = "failed"
        elif self._pending:
            state = "pending"
        elif self._targets and all(t.synced for t in self._targets.values()):
            state = "in-sync"
        else:
            state = "watching"  # no running pod to sync into (yet)
        event = SyncChanged(
            name=self.name,
            state=state,
            pending=self._pending,
            last_sync=last_sync if last_sync is not None else (last.last_sync if last else None),
            duration=duration if duration is not None else (last.duration if last else None),
            files=files if files is not None else (last.files if last else 0),
            bytes=size if size is not None else (last.bytes if last else 0),
            reason=reason,
            paths=(self.rule.local,),
        )
        if event != last:
            self._last = event
            self._bus.publish(event)


class RemoteSync:
    """Every sync rule of the session's remote services (not the one running locally)."""

    def __init__(
        self,
        config: CockpitConfig,
        local_service: str,
        namespace: str,
        files: PodFiles,
        bus: SessionBus,
        *,
        quiet: float = QUIET,
    ) -> None:
        base = os.path.abspath(config.base_dir)
        self.rules = [
            RuleSync(
                name,
                rule,
                os.path.normpath(os.path.join(base, rule.local)),
                namespace,
                files,
                bus,
                quiet=quiet,
            )
            for name, service in config.services.items()
            if name != local_service
            for rule in service.sync
        ]

    async def start(self) -> None:
        for rule in self.rules:
            await rule.start()

    def update_pods(self, pods: Mapping[str, Sequence[PodView]]) -> None:
        """Pods of every Service in the namespace (ClusterWatcher.on_pods)."""
        for rule in self.rules:
            rule.update_pods(pods.get(rule.service))

    async def stop(self) -> None:
        await asyncio.gather(*(rule.stop() for rule in self.rules))
