"""The Engine's teardown progress and port-forward toggle, with fakes for the process, the
cluster link and the intercept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cockpit.core.commands import ToggleForward
from cockpit.core.events import CommandResult, Event, Notice
from cockpit.engine.session import CLEANUP_NOTICE, Engine
from cockpit.errors import NotFoundError
from tests.engine.fake_process import FakeFactory
from tests.engine.test_session import Recorder, make_config


class FakeLink:
    """A cluster link that records what the engine asks of it."""

    def __init__(self, order: list[str]) -> None:
        self.env: dict[str, str] = {}
        self.order = order
        self.toggled: list[str] = []
        self.tunnels: list[Any] = []  # what use_tunnel was given, in order

    async def stop(self) -> None:
        self.order.append("cluster stopped")

    async def toggle_forward(self, service: str) -> str:
        if service != "web":
            raise NotFoundError(f"no port-forward for {service!r} (forwarded: web)")
        self.toggled.append(service)
        return f"{service}: port-forward stopped"

    def use_tunnel(self, tunnel: Any) -> None:
        self.tunnels.append(tunnel)


class FakeIntercept:
    mode = "global"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def start(self, mode: str) -> None:
        self.order.append(f"intercept {mode}")

    async def stop(self) -> None:
        self.order.append("intercept stopped")


@pytest.fixture
async def engine_with_link() -> AsyncIterator[Callable[..., Any]]:
    engines: list[Engine] = []

    def build(**kwargs: Any) -> tuple[Engine, Recorder, list[str], FakeLink]:
        order: list[str] = []
        link = FakeLink(order)

        async def connect(engine: Engine) -> FakeLink:
            return link

        engine = Engine(
            make_config(),
            "api",
            process_factory=FakeFactory(),
            base_env={"PATH": "/usr/bin"},
            session_id="s1",
            flush_interval=0.01,
            cluster=connect,
            **kwargs,
        )
        engines.append(engine)
        return engine, Recorder(engine), order, link

    yield build
    for engine in engines:
        await engine.stop()


def cleanup_texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Notice) and e.key == CLEANUP_NOTICE]


async def test_teardown_reports_each_step_in_order(engine_with_link: Any) -> None:
    order: list[str] = []
    engine, rec, link_order, _ = engine_with_link(
        intercept=lambda session, publish: FakeIntercept(order), intercept_mode="global"
    )
    await engine.start()
    assert order == ["intercept global"]
    await engine.stop()
    await rec.finished()
    assert cleanup_texts(rec.events) == [
        "removing the intercept of api, giving the Service back",
        "stopping the local process api",
        "closing port-forwards and watches",
        "done: session s1 stopped",
    ]
    assert order == ["intercept global", "intercept stopped"]
    assert link_order == ["cluster stopped"]


async def test_teardown_without_intercept_or_cluster_skips_those_steps() -> None:
    engine = Engine(
        make_config(), "api", process_factory=FakeFactory(), base_env={}, session_id="s2"
    )
    rec = Recorder(engine)
    await engine.start()
    await engine.stop()
    await rec.finished()
    assert cleanup_texts(rec.events) == [
        "stopping the local process api",
        "done: session s2 stopped",
    ]


async def test_toggle_forward_goes_to_the_cluster_link(engine_with_link: Any) -> None:
    engine, rec, _, link = engine_with_link()
    await engine.start()
    ok = await engine.submit(ToggleForward(service="web", request_id="3"))
    assert ok == CommandResult("forward", True, "web: port-forward stopped", "3")
    assert link.toggled == ["web"]
    await rec.until(lambda: "web: port-forward stopped" in rec.texts("cockpit"))
    unknown = await engine.submit(ToggleForward(service="nope"))
    assert unknown.message == "no port-forward for 'nope' (forwarded: web)" and not unknown.ok
    for local in ("", "api"):  # the service running here has no forward
        refused = await engine.submit(ToggleForward(service=local))
        assert not refused.ok
        assert refused.message == "api runs here: select a cluster service to toggle its forward"
    assert link.toggled == ["web"]


async def test_toggle_forward_without_a_cluster_says_so() -> None:
    engine = Engine(make_config(), "api", process_factory=FakeFactory(), base_env={})
    await engine.start()
    try:
        result = await engine.submit(ToggleForward(service="web"))
    finally:
        await engine.stop()
    assert not result.ok
    assert result.message == (
        "port-forwards are not available: this session has no cluster connection"
    )
