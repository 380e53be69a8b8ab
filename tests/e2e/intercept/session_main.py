"""An intercept session as its own process, for the crash tests (kill -9, SIGSTOP):
    session_main.py KUBECONFIG NAMESPACE SESSION LOCAL_PORT MODE
prints {"ready": true} once intercepting, then answers JSON commands on stdin
({"mode": "global", "on": true}) with JSON results; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from cockpit.core.agent_spec import AgentSettings
from cockpit.engine.intercept import kube_intercept


async def main(kubeconfig: str, namespace: str, session_id: str, port: int, mode: str) -> None:
    session = await asyncio.to_thread(
        lambda: kube_intercept(
            kubeconfig=kubeconfig, context=None, namespace=namespace, service="api",
            session_id=session_id, local_port=port, settings=AgentSettings.from_env(os.environ),
        )
    )  # fmt: skip
    await session.start(None if mode == "off" else mode)  # type: ignore[arg-type]
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := await reader.readline():
            cmd = json.loads(line)
            result = await session.toggle(cmd["mode"], cmd.get("on"))
            print(json.dumps({"ok": result.ok, "message": result.message}), flush=True)
        stop.set()

    task = asyncio.create_task(commands())
    await stop.wait()
    task.cancel()
    await session.stop()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), a[4]))
