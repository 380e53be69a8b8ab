"""The sync pane shows each remote sync rule's states as the engine publishes them: watching,
syncing with changes pending, in sync (when, how long, files, bytes), failed with the reason."""

from __future__ import annotations

from cockpit.core.events import SyncChanged
from cockpit.ui.screens import DetailScreen

from .fakes import T0, FakeEngine, make_app, settle, until
from .test_app import screen_text

RULE = "web: static -> /app/static"


async def test_sync_rule_states_show_in_the_pane_and_its_detail() -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        engine.emit(SyncChanged(RULE, "watching", paths=("static",)))
        await until(pilot, lambda: RULE in screen_text(app))
        assert "watching" in screen_text(app)

        engine.emit(SyncChanged(RULE, "syncing", pending=3, paths=("static",)))
        await until(pilot, lambda: "syncing" in screen_text(app))

        engine.emit(
            SyncChanged(
                RULE,
                "in-sync",
                last_sync=T0 - 5,
                duration=0.12,
                files=12,
                bytes=3 * 1024,
                paths=("static",),
            )
        )
        await until(pilot, lambda: "in-sync" in screen_text(app))
        app.main.sync.focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        detail = screen_text(app)
        assert "files     12 (3.0K)" in detail and "last sync 5s ago" in detail
        await pilot.press("escape")
        await settle(pilot)

        reason = "container web of pod web-1 has no tar; remote sync needs tar in the image"
        engine.emit(SyncChanged(RULE, "failed", reason=reason, paths=("static",)))
        # The narrow pane cuts a long reason; its detail shows the whole line.
        await until(pilot, lambda: "failed: container web of pod web-" in screen_text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert f"state     failed: {reason}" in screen_text(app)
