"""The ``on_intercept_on`` / ``on_intercept_off`` hooks: run after each routing change, one
at a time and in the order of the changes, without holding up the toggle; output in the log
stream as the local service's hook source, a failure as an alert."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

from cockpit.core.config import Hooks
from cockpit.core.events import Level
from cockpit.engine.supervisor import command_text, describe_exit
from cockpit.errors import CockpitError


class CommandRunner(Protocol):
    """Runs a command in the local service's cwd and environment, its output in the log
    stream as ``SERVICE:KIND`` (``LocalSupervisor.run_command``)."""

    async def run_command(
        self,
        kind: str,
        command: str | list[str],
        *,
        what: str,
        within: float,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, list[str]]: ...


class HookBus(Protocol):
    def say(self, text: str, level: Level = Level.INFO) -> int: ...

    def alert(
        self, key: str, service: str, title: str, detail: str, level: Level, log_seq: int
    ) -> None: ...


class InterceptHooks:
    """Runs a service's intercept hooks; ``changed(on)`` after each routing change."""

    def __init__(self, service: str, hooks: Hooks, runner: CommandRunner, bus: HookBus) -> None:
        self.service = service
        self.hooks = hooks
        self.runner = runner
        self.bus = bus
        self._order = asyncio.Lock()  # FIFO: the hooks run in the order of the changes
        self._pending: set[asyncio.Task[None]] = set()

    def changed(self, on: bool) -> None:
        """The intercept just turned on (or off): run the matching hooks in the background."""
        kind = "on_intercept_on" if on else "on_intercept_off"
        commands = self.hooks.on_intercept_on if on else self.hooks.on_intercept_off
        if not commands:
            return
        task = asyncio.create_task(self._run(kind, commands), name=f"{self.service} {kind}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def wait(self) -> None:
        """Until every hook started so far has finished (each has the hooks' timeout)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _run(self, kind: str, commands: Sequence[str | list[str]]) -> None:
        async with self._order:
            for command in commands:
                failure, detail = await self._one(kind, command)
                if failure:
                    seq = self.bus.say(f"{self.service}: {kind} hook {failure}", Level.ERROR)
                    self.bus.alert(
                        f"hook:{self.service}:{kind}",
                        self.service,
                        f"{self.service}: {kind} hook failed",
                        detail or failure,
                        Level.ERROR,
                        seq,
                    )
                    return  # a failure stops the step, as for the start hooks

    async def _one(self, kind: str, command: str | list[str]) -> tuple[str, str]:
        """("", "") when ``command`` exited 0; else what went wrong and its last lines."""
        try:
            code, last = await self.runner.run_command(
                kind, command, what=f"{kind} hook", within=self.hooks.timeout
            )
        except CockpitError as exc:
            return exc.one_line(), ""
        if code == 0:
            return "", ""
        return f"`{command_text(command)}` {describe_exit(code)}", "\n".join(last)
