"""The Engine with a fake process adapter: lifecycle, log batches, alerts, commands, teardown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from cockpit.core.commands import Quit, Restart, SetFilter, ToggleForward, ToggleIntercept
from cockpit.core.config import CockpitConfig, parse_config
from cockpit.core.events import (
    Alert,
    CommandResult,
    ConnectionChanged,
    Event,
    Level,
    LogBatch,
    LogLine,
    Notice,
    ProcessChanged,
    ProcessStatus,
    SessionInfo,
    SourceKind,
)
from cockpit.engine.session import Engine
from cockpit.errors import ConfigError, ProcessError
from tests.engine.fake_process import Behaviour, FakeFactory

E = TypeVar("E", bound=Event)


def make_config(service_yaml: str = "") -> CockpitConfig:
    text = (
        "namespace: shop\n"
        "services:\n"
        "  web:\n"
        "  api:\n"
        "    command: run api\n"
        "    cwd: src\n"
        "    port: 8080\n"
        "    env: {LOG_LEVEL: debug}\n"
        "    stop_timeout: 3\n" + service_yaml
    )
    return parse_config(text, "/app/cockpit.yaml")


class Recorder:
    """Collects everything an engine publishes, as a UI would."""

    def __init__(self, engine: Engine) -> None:
        self.events: list[Event] = []
        self._subscription = engine.events()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self._subscription:
            self.events.append(event)

    async def finished(self) -> None:
        await asyncio.wait_for(self._task, 5)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def lines(self) -> list[LogLine]:
        return [line for batch in self.of(LogBatch) for line in batch.lines]

    def texts(self, source: str | None = None) -> list[str]:
        return [line.text for line in self.lines() if source is None or line.source == source]

    def statuses(self) -> list[ProcessStatus]:
        return [event.status for event in self.of(ProcessChanged)]

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, f"not met in time; events: {self.events[-8:]}"
            await asyncio.sleep(0.005)


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    """Builds engines (with a recorder attached) and stops every one at the end."""
    engines: list[Engine] = []

    async def build(
        config: CockpitConfig | None = None, factory: FakeFactory | None = None, **kwargs: Any
    ) -> tuple[Engine, Recorder, FakeFactory]:
        factory = factory or FakeFactory()
        engine = Engine(
            config or make_config(),
            "api",
            process_factory=factory,
            base_env={"PATH": "/usr/bin", "HOME": "/home/dev"},
            context="kind-dev",
            session_id="s1",
            flush_interval=0.01,
            **kwargs,
        )
        engines.append(engine)
        return engine, Recorder(engine), factory

    yield build
    for engine in engines:
        await engine.stop()


async def test_start_runs_the_local_service_with_the_session_environment(running: Any) -> None:
    engine, rec, factory = await running()
    await engine.start()
    await rec.until(lambda: ProcessStatus.READY in rec.statuses())
    assert rec.events[0] == SessionInfo("s1", "kind-dev", "shop", "api")
    assert rec.events[1:3] == [
        ConnectionChanged("api", "disconnected"),  # no cluster connection in this version
        ConnectionChanged("agent", "disconnected"),
    ]
    (process,) = factory.made
    assert process.spec.command == "run api"
    assert process.spec.cwd == "/app/src"  # relative to cockpit.yaml
    assert process.spec.port == 8080
    env = process.spec.env
    assert env["LOG_LEVEL"] == "debug" and env["PATH"] == "/usr/bin"
    assert env["COCKPIT_SESSION"] == "s1" and env["COCKPIT_SERVICE"] == "api"
    assert env["PYTHONUNBUFFERED"] == "1"
    running_event = rec.of(ProcessChanged)[1]
    assert (running_event.status, running_event.pid) == (ProcessStatus.RUNNING, process.pid)
    assert rec.statuses()[:3] == [
        ProcessStatus.STARTING,
        ProcessStatus.RUNNING,
        ProcessStatus.READY,
    ]
    assert engine.state is not None


async def test_output_arrives_as_batches_of_sequenced_lines(running: Any) -> None:
    engine, rec, factory = await running(batch_lines=2000)
    await engine.start()
    process = factory.made[0]
    process.write("hello", "world")
    process.write("oops", stream="stderr")
    await rec.until(lambda: "oops" in rec.texts("api"))
    lines = [line for line in rec.lines() if line.source == "api"]
    assert [(line.text, line.stream) for line in lines] == [
        ("hello", "stdout"),
        ("world", "stdout"),
        ("oops", "stderr"),
    ]
    assert all(line.service == "api" and line.kind is SourceKind.LOCAL for line in lines)
    seqs = [line.seq for line in rec.lines()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1


async def test_a_flood_is_cut_into_batches_of_at_most_n_lines(running: Any) -> None:
    engine, rec, factory = await running(batch_lines=2000)
    await engine.start()
    await rec.until(lambda: ProcessStatus.READY in rec.statuses())
    before = len(rec.of(LogBatch))
    factory.made[0].write(*(f"line {i}" for i in range(5000)))
    await rec.until(lambda: "line 4999" in rec.texts("api"))
    sizes = [len(batch.lines) for batch in rec.of(LogBatch)[before:]]
    assert max(sizes) <= 2000
    assert sizes[:2] == [2000, 2000]
    assert rec.texts("api") == [f"line {i}" for i in range(5000)]


async def test_an_error_line_raises_an_alert_after_its_line(running: Any) -> None:
    engine, rec, factory = await running()
    await engine.start()
    factory.made[0].write("ERROR cannot reach store: connection refused")
    await rec.until(lambda: bool(rec.of(Alert)))
    alert = rec.of(Alert)[0]
    assert alert.service == "api" and alert.level is Level.ERROR
    line = next(line for line in rec.lines() if line.seq == alert.log_seq)
    assert line.text.startswith("ERROR cannot reach store")
    assert rec.events.index(alert) > next(
        i for i, e in enumerate(rec.events) if isinstance(e, LogBatch) and line in e.lines
    )


async def test_an_exit_raises_an_alert_with_the_code_and_last_lines(running: Any) -> None:
    engine, rec, factory = await running()
    await engine.start()
    process = factory.made[0]
    process.write(*(f"step {i}" for i in range(30)))
    process.exit(3)
    await rec.until(lambda: ProcessStatus.EXITED in rec.statuses())
    await rec.until(lambda: any(a.key == "process-exit:api" for a in rec.of(Alert)))
    exited = next(e for e in rec.of(ProcessChanged) if e.status is ProcessStatus.EXITED)
    assert exited.exit_code == 3
    alert = next(a for a in rec.of(Alert) if a.key == "process-exit:api")
    assert alert.title == "api exited with code 3"
    assert alert.level is Level.ERROR
    assert alert.detail.splitlines() == ["last 20 lines:", *(f"step {i}" for i in range(10, 30))]
    assert process.stop_graces == [3.0]  # what the leader left in its group is stopped too
    pointed = next(line for line in rec.lines() if line.seq == alert.log_seq)
    assert pointed.text == "api exited with code 3" and pointed.kind is SourceKind.COCKPIT
    assert ProcessStatus.BACKOFF not in rec.statuses()  # restart.on_exit is off by default
    assert len(factory.made) == 1


async def test_killed_by_a_signal_is_named(running: Any) -> None:
    engine, rec, factory = await running()
    await engine.start()
    factory.made[0].exit(-9)
    await rec.until(lambda: bool(rec.of(Alert)))
    assert rec.of(Alert)[0].title == "api was killed by SIGKILL"
    assert rec.of(Alert)[0].detail == "it wrote no output"


async def test_restart_on_exit_backs_off_and_counts(running: Any) -> None:
    config = make_config("    restart: {on_exit: true, backoff_initial: 0.01, backoff_max: 0.05}\n")
    engine, rec, factory = await running(config)
    await engine.start()
    factory.made[0].exit(1)
    await rec.until(lambda: len(factory.running()) == 1 and len(factory.made) == 2)
    factory.made[1].exit(1)
    await rec.until(lambda: len(factory.made) == 3 and factory.made[2].running)
    statuses = rec.statuses()
    assert statuses.count(ProcessStatus.BACKOFF) == 2
    backoff = next(e for e in rec.of(ProcessChanged) if e.status is ProcessStatus.BACKOFF)
    assert backoff.exit_code == 1  # the reason stays visible while waiting
    await rec.until(lambda: rec.of(ProcessChanged)[-1].status is ProcessStatus.READY)
    assert rec.of(ProcessChanged)[-1].restarts == 2
    alert = next(a for a in rec.of(Alert) if a.key == "process-exit:api")
    assert engine.state is not None and alert.count >= 1
    assert [a.count for a in rec.of(Alert) if a.key == "process-exit:api"] == [1, 2]


async def test_a_failed_automatic_restart_alerts_and_tries_again(running: Any) -> None:
    config = make_config("    restart: {on_exit: true, backoff_initial: 0.01, backoff_max: 0.02}\n")
    factory = FakeFactory()
    engine, rec, factory = await running(config, factory)
    await engine.start()
    factory.behaviours["run api"] = Behaviour(start_error="api: port 8080 is already in use")
    factory.made[0].exit(1)
    await rec.until(lambda: any(a.key == "process-start:api" for a in rec.of(Alert)))
    alert = next(a for a in rec.of(Alert) if a.key == "process-start:api")
    assert alert.detail == "api: port 8080 is already in use"
    factory.behaviours["run api"] = Behaviour()
    await rec.until(lambda: bool(factory.running()))


async def test_submit_restart_stops_gracefully_and_starts_again(running: Any) -> None:
    engine, rec, factory = await running()
    await engine.start()
    first = factory.made[0]
    result = await engine.submit(Restart(request_id="7"))
    second = factory.made[1]
    assert result == CommandResult("restart", True, f"restarted api (pid {second.pid})", "7")
    assert first.stop_graces == [3.0] and not first.running
    assert second.running
    await rec.until(lambda: result in rec.of(CommandResult))  # also on the event stream
    assert not rec.of(Alert)  # a requested stop is not a crash
    await rec.until(lambda: rec.of(ProcessChanged)[-1].status is ProcessStatus.READY)
    assert rec.of(ProcessChanged)[-1].restarts == 1
    assert ProcessStatus.STOPPING in rec.statuses()


async def test_commands_the_engine_cannot_do_yet_say_so(running: Any) -> None:
    engine, _, _ = await running()
    await engine.start()
    results = [
        await engine.submit(ToggleIntercept()),
        await engine.submit(ToggleIntercept(mode="personal", on=True)),
        await engine.submit(ToggleForward(service="web")),
        await engine.submit(Restart(service="web")),
        await engine.submit(Restart(service="nope")),
    ]
    assert [r.ok for r in results] == [False] * 5
    assert all(r.message and "\n" not in r.message for r in results)
    assert results[0].message.startswith("intercept is not available")
    assert results[2].message.startswith("port-forwards are not available")
    assert results[3].message.startswith("cannot restart web: it runs in the cluster")
    assert results[4].message == "no service 'nope' (known: api, web)"


async def test_set_filter_checks_the_query(running: Any) -> None:
    engine, _, _ = await running()
    await engine.start()
    ok = await engine.submit(SetFilter(query="level:error svc:api"))
    assert ok.ok and ok.message == "filter: level:error svc:api"
    assert engine.filter.text == "level:error svc:api"
    bad = await engine.submit(SetFilter(query="/(/"))
    assert not bad.ok and bad.message.startswith("filter: bad /regex/")
    assert engine.filter.text == "level:error svc:api"  # unchanged
    cleared = await engine.submit(SetFilter(query=""))
    assert cleared.ok and cleared.message == "filter cleared"


async def test_quit_is_acknowledged_and_flagged(running: Any) -> None:
    engine, _, _ = await running()
    await engine.start()
    result = await engine.submit(Quit())
    assert result.ok and engine.quit_requested.is_set()


async def test_before_start_hooks_run_first_and_a_failure_stops_the_start(running: Any) -> None:
    config = make_config("    hooks: {before_start: [make gen, make check]}\n")
    factory = FakeFactory(
        behaviours={
            "make gen": Behaviour(exit_at_once=0, output=["generated"]),
            "make check": Behaviour(exit_at_once=2, output=["check.py:3: nope"]),
        }
    )
    engine, rec, factory = await running(config, factory)
    with pytest.raises(ProcessError) as info:
        await engine.start()
    assert info.value.one_line() == (
        "api: before_start hook `make check` exited with code 2 (check.py:3: nope)"
    )
    assert [p.spec.command for p in factory.made] == ["make gen", "make check"]
    assert factory.made[0].spec.cwd == "/app/src"
    await rec.finished()  # the failed start stopped the engine: the stream ended
    assert "generated" in rec.texts("api:before_start")
    assert rec.statuses()[-1] is ProcessStatus.STOPPED
    assert factory.running() == []


async def test_after_start_hook_failure_is_an_alert_and_the_service_stays_up(
    running: Any,
) -> None:
    config = make_config("    hooks: {after_start: [curl -f localhost:8080]}\n")
    factory = FakeFactory(behaviours={"curl -f localhost:8080": Behaviour(exit_at_once=22)})
    engine, rec, factory = await running(config, factory)
    await engine.start()
    await rec.until(lambda: any(a.key == "hook:api:after_start" for a in rec.of(Alert)))
    alert = next(a for a in rec.of(Alert) if a.key == "hook:api:after_start")
    assert "after_start hook `curl -f localhost:8080` exited with code 22" in alert.detail
    assert factory.of("run api")[0].running


async def test_a_port_that_never_answers_raises_a_warning(running: Any) -> None:
    config = make_config("    ready_timeout: 0.05\n")
    factory = FakeFactory(behaviours={"run api": Behaviour(ready=False)})
    engine, rec, factory = await running(config, factory)
    await engine.start()
    await rec.until(lambda: bool(rec.of(Alert)))
    alert = rec.of(Alert)[0]
    assert alert.title == "api: port 8080 not answering after 0.05 s"
    assert alert.level is Level.WARNING
    assert ProcessStatus.READY not in rec.statuses()


async def test_a_start_error_is_raised_and_nothing_is_left(running: Any) -> None:
    factory = FakeFactory(
        behaviours={"run api": Behaviour(start_error="api: port 8080 is already in use")}
    )
    engine, rec, factory = await running(None, factory)
    with pytest.raises(ProcessError, match="port 8080 is already in use"):
        await engine.start()
    await rec.finished()
    assert rec.statuses()[-1] is ProcessStatus.STOPPED
    result = await engine.submit(Restart())
    assert not result.ok and result.message == "the session is not running"


async def test_a_service_without_a_command_is_a_config_error() -> None:
    config = parse_config("services:\n  api:\n    port: 8080\n", "cockpit.yaml")
    with pytest.raises(ConfigError, match=r"cockpit.yaml:2: services.api.command: missing"):
        Engine(config, "api", process_factory=FakeFactory(), base_env={})


async def test_stop_is_idempotent_and_ends_every_stream(running: Any) -> None:
    engine, rec, factory = await running()
    late = engine.events()
    await engine.start()
    await engine.stop()
    await engine.stop()
    await rec.finished()
    assert factory.running() == []
    assert rec.statuses()[-1] is ProcessStatus.STOPPED
    assert any(isinstance(e, Notice) for e in rec.events)
    remaining = [event async for event in late]
    assert remaining  # a subscriber that did not read still gets what was published


async def test_stop_during_a_restart_cancels_it_and_leaves_nothing_running(running: Any) -> None:
    config = make_config("    hooks: {before_start: [slow hook]}\n")
    factory = FakeFactory(behaviours={"slow hook": Behaviour(exit_at_once=0)})
    engine, rec, factory = await running(config, factory)
    await engine.start()
    factory.behaviours["slow hook"] = Behaviour()  # this time it runs on
    restarting = asyncio.create_task(engine.submit(Restart()))
    await rec.until(
        lambda: len(factory.of("slow hook")) == 2 and factory.of("slow hook")[1].running
    )
    await engine.stop()
    result = await restarting
    assert not result.ok and "cancelled" in result.message
    assert factory.running() == []


async def test_cancelling_the_caller_of_stop_does_not_cancel_the_teardown(running: Any) -> None:
    factory = FakeFactory(behaviours={"run api": Behaviour(ignores_stop=True)})
    engine, rec, factory = await running(None, factory)
    await engine.start()
    stopping = asyncio.create_task(engine.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await rec.finished()  # the teardown went on to the end
    assert factory.running() == []


async def test_a_subscriber_that_never_reads_does_not_hold_the_engine(running: Any) -> None:
    engine, rec, factory = await running(batch_lines=500, subscriber_max_lines=1_000)
    idle = engine.events()
    await engine.start()
    process = factory.made[0]
    for chunk in range(20):
        process.write(*(f"{chunk}-{i}" for i in range(500)))
        await asyncio.sleep(0.001)  # the reading subscriber gets its turn; the idle one not
    await rec.until(lambda: "19-499" in rec.texts("api"))
    assert len(rec.texts("api")) == 10_000  # the one that reads gets everything
    first = await anext(idle)
    skipped = len(rec.lines()) - 1_000  # all but the newest 1,000 (cockpit's own lines too)
    assert first == Notice(
        "events-dropped",
        f"skipped {skipped} log lines: this view fell behind (the log keeps the lines)",
        Level.WARNING,
    )
    rest: list[Event] = []
    while not any(isinstance(e, LogBatch) and e.lines[-1].text == "19-499" for e in rest):
        rest.append(await anext(idle))
    kept = [line.text for e in rest if isinstance(e, LogBatch) for line in e.lines]
    assert kept == [f"{chunk}-{i}" for chunk in (18, 19) for i in range(500)]  # the newest
    assert len(engine.ring) >= 10_000  # the ring still has every line
    await idle.aclose()


class FakeClusterLink:
    def __init__(self, env: dict[str, str], order: list[str]) -> None:
        self.env = env
        self._order = order

    async def stop(self) -> None:
        self._order.append("cluster stopped")


async def test_the_cluster_link_comes_first_and_its_env_reaches_the_process(running: Any) -> None:
    order: list[str] = []

    async def connect(engine: Engine) -> FakeClusterLink:
        order.append("cluster started")
        # the Deployment's env, pointed at forwards; cockpit.yaml's LOG_LEVEL must win over it
        return FakeClusterLink({"STORE_URL": "http://127.0.0.2:8080", "LOG_LEVEL": "info"}, order)

    engine, rec, factory = await running(cluster=connect)
    await engine.start()
    await rec.until(lambda: ProcessStatus.READY in rec.statuses())
    (process,) = factory.made
    assert order == ["cluster started"]
    assert process.spec.env["STORE_URL"] == "http://127.0.0.2:8080"
    assert process.spec.env["LOG_LEVEL"] == "debug"
    assert process.spec.env["COCKPIT_SESSION"] == "s1"
    assert ConnectionChanged("api", "connected") in rec.events
    await engine.stop()
    assert order == ["cluster started", "cluster stopped"]
    assert rec.events.index(ConnectionChanged("api", "connected")) < rec.events.index(
        rec.of(ProcessChanged)[0]
    )


async def test_a_cluster_that_cannot_connect_fails_the_start_and_starts_nothing(
    running: Any,
) -> None:
    from cockpit.errors import NotFoundError

    async def connect(engine: Engine) -> FakeClusterLink:
        raise NotFoundError("namespace 'shpo' not found in context 'kind-dev'")

    engine, rec, factory = await running(cluster=connect)
    with pytest.raises(NotFoundError, match="shpo"):
        await engine.start()
    assert factory.made == []
    assert ConnectionChanged("api", "disconnected") in rec.events


class RestartingClusterLink(FakeClusterLink):
    """A link whose restarts report like ClusterWatcher's: Notices, then a message or an error."""

    def __init__(self, engine: Engine, order: list[str]) -> None:
        super().__init__({}, order)
        self.engine = engine

    async def restart(self, service: str) -> str:
        from cockpit.errors import AccessDeniedError

        if service == "web":
            self.engine.publish(Notice("restart:web", "restarting web: 1 of 2 new pods available"))
            return "restarted web in 1.0 s (2/2 ready)"
        raise AccessDeniedError(f"cannot restart deployment '{service}': forbidden")

    async def delete_pod(self, service: str, pod: str) -> str:
        self._order.append(f"delete {service}/{pod}")
        return f"replaced pod {pod} of {service} in 1.0 s (2/2 ready)"


async def test_restart_of_a_cluster_service_goes_to_the_cluster(running: Any) -> None:
    order: list[str] = []

    async def connect(engine: Engine) -> RestartingClusterLink:
        return RestartingClusterLink(engine, order)

    engine, rec, factory = await running(cluster=connect)
    await engine.start()
    done = await engine.submit(Restart(service="web"))
    assert done.ok and done.message == "restarted web in 1.0 s (2/2 ready)"
    assert Notice("restart:web", "restarting web: 1 of 2 new pods available") in rec.events
    one = await engine.submit(Restart(service="web", pod="web-1"))
    assert one.ok and order == ["delete web/web-1"]
    denied = await engine.submit(Restart(service="store"))
    assert not denied.ok and denied.message == "cannot restart deployment 'store': forbidden"
    local = await engine.submit(Restart(service="api", pod="api-1"))
    assert not local.ok and "runs here" in local.message
    assert len(factory.made) == 1  # the local process was never touched
    await engine.stop()
