"""The on_intercept_on / on_intercept_off hooks, run by the Engine as real processes after each
routing change (the intercept is a stand-in: its routing is tested on the real cluster)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from cockpit.adapters.process import process_factory
from cockpit.core.commands import ToggleIntercept
from cockpit.core.config import parse_config
from cockpit.core.events import Alert
from cockpit.engine.session import Engine
from tests.engine.test_session import Recorder
from tests.engine.test_session_teardown import engine_with_link  # noqa: F401 (fixture)


class SwitchIntercept:
    """An intercept whose toggles always succeed."""

    link = None

    def __init__(self) -> None:
        self.mode: str | None = None

    async def start(self, mode: str | None) -> None:
        self.mode = mode

    def describe(self) -> str:
        return f"mode {self.mode}"

    async def toggle(self, mode: str, on: bool | None = None) -> Any:
        want = (self.mode != mode) if on is None else on
        self.mode = mode if want else None
        return type("Result", (), {"ok": True, "message": self.describe()})()

    async def stop(self) -> None:
        pass


def engine_with_hooks(tmp_path: Path, on: str, off: str) -> Engine:
    (tmp_path / "src").mkdir()
    config = parse_config(
        "namespace: shop\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable}, -c, 'import time; time.sleep(60)']\n"
        "    cwd: src\n"
        "    hooks:\n"
        f"      on_intercept_on: [{on}]\n"
        f"      on_intercept_off: [{off}]\n"
        "      timeout: 30\n",
        str(tmp_path / "cockpit.yaml"),
    )
    return Engine(
        config,
        "api",
        process_factory=process_factory,
        base_env={"PATH": "/usr/bin:/bin"},
        session_id="s1",
        flush_interval=0.01,
        intercept=lambda session, publish: SwitchIntercept(),  # type: ignore[arg-type,return-value]
    )


async def until(condition: Any, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_toggling_runs_the_hooks_in_order_with_output_in_the_stream(
    tmp_path: Path,
) -> None:
    log = tmp_path / "hooks.log"
    engine = engine_with_hooks(
        tmp_path,
        on=f"\"sh -c 'echo on $COCKPIT_SESSION >> {log}; echo hook says on'\"",
        off=f"\"sh -c 'echo off >> {log}'\"",
    )
    rec = Recorder(engine)
    await engine.start()
    try:
        for mode, on in (("global", True), ("global", False), ("personal", True)):
            result = await engine.submit(ToggleIntercept(mode=mode, on=on))  # type: ignore[arg-type]
            assert result.ok, result.message
        # global -> personal keeps the intercept on: no hook
        assert (await engine.submit(ToggleIntercept(mode="global", on=True))).ok
        await until(lambda: log.exists() and log.read_text().count("\n") == 3)
        assert "hook says on" in rec.texts("api:on_intercept_on")
    finally:
        await engine.stop()
    # stopping the session turned the intercept off: the off hook ran before it ended
    assert log.read_text().splitlines() == ["on s1", "off", "on s1", "off"]
    assert not rec.of(Alert)


async def test_a_failing_hook_raises_an_alert_and_the_session_goes_on(tmp_path: Path) -> None:
    failing = "\"sh -c 'echo cannot notify >&2; exit 3'\""
    engine = engine_with_hooks(tmp_path, on=failing, off='"true"')
    rec = Recorder(engine)
    await engine.start()
    try:
        assert (await engine.submit(ToggleIntercept(mode="global", on=True))).ok
        await until(lambda: bool(rec.of(Alert)))
        [alert] = rec.of(Alert)
        assert alert.title == "api: on_intercept_on hook failed"
        assert "cannot notify" in alert.detail
        assert (await engine.submit(ToggleIntercept(mode="global", on=False))).ok
    finally:
        await engine.stop()


async def test_outbound_takes_the_intercepts_tunnel_until_the_session_ends(
    engine_with_link: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    intercept = SwitchIntercept()
    engine, _, _, link = engine_with_link(
        intercept=lambda session, publish: intercept, intercept_mode="global"
    )
    await engine.start()
    [source] = link.tunnels
    intercept.link = "the SSH connection"  # type: ignore[assignment]
    assert source() == "the SSH connection"
    await engine.stop()
    assert link.tunnels[1:] == [None]  # port-forwards only while the intercept goes away
