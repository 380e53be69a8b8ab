"""The engine facade: the only surface the UI and headless mode use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cockpit.core.commands import Command
from cockpit.core.events import CommandResult, Event


class EngineFacade(Protocol):
    """A running hybrid session.

    ``events()`` yields every event published after the call (log lines arrive as
    ``LogBatch`` flushed every ~50 ms or N lines, never one by one). ``state`` is the
    reduced view for a consumer that starts late.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Tear down everything the session started; safe to call twice, shielded from cancel."""
        ...

    async def submit(self, command: Command) -> CommandResult: ...

    def events(self) -> AsyncIterator[Event]: ...
