"""The real Engine under the app: lines the engine's ring drops are counted on the log pane."""

from __future__ import annotations

from cockpit.core.config import parse_config
from cockpit.core.events import LogLine, SourceKind
from cockpit.core.logring import LogRing
from cockpit.engine.session import Engine
from cockpit.ui.app import CockpitApp
from tests.engine.fake_process import FakeFactory

from .fakes import until


async def test_the_log_pane_counts_what_the_engine_ring_dropped() -> None:
    config = parse_config(
        "namespace: shop\nservices:\n  api:\n    command: run api\n", "/app/cockpit.yaml"
    )
    engine = Engine(
        config,
        "api",
        process_factory=FakeFactory(),
        base_env={},
        ring=LogRing(max_lines=1_000),
        flush_interval=0.01,
    )
    app = CockpitApp(engine, title_info={"context": "kind-dev", "namespace": "shop"})
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app._engine_started)
        for chunk in range(5):
            engine.ingest(
                [
                    LogLine("store-1/app", "store", SourceKind.POD, f"line {chunk}-{n}", 0.0)
                    for n in range(1_000)
                ]
            )
            await pilot.pause()
        await until(pilot, lambda: engine.ring.dropped >= 4_000)
        logs = app.main.logs

        def shows_dropped() -> bool:
            return f"· {engine.ring.dropped:,} dropped" in str(logs.border_title)

        await until(pilot, shows_dropped)
        assert app._ui_dropped == 0  # every dropped line here is the ring's
        await app.stop_engine()
