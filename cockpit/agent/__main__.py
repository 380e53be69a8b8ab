"""``python -m cockpit.agent``: the agent program inside its pod."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from cockpit.agent.cluster import KubeCluster
from cockpit.agent.kubeapi import KubeAPI, KubeError
from cockpit.agent.server import Agent, AgentConfig
from cockpit.core.agent_spec import SSH_PORT, AgentSettings
from cockpit.core.intercept import shadow_name


def origin(service: str, port: int) -> tuple[str, int]:
    """The original pods of ``service``: its shadow Service, by name in the agent's namespace."""
    return shadow_name(service), port


def process_age() -> float:
    """Seconds since this process started (imports included), from /proc."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


async def run(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    logging.getLogger("cockpit.agent").info("started in %.2f s", process_age())
    await stop.wait()
    logging.getLogger("cockpit.agent").info("stopping: draining for %.1f s", agent.settings.drain)
    await agent.stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        settings = AgentSettings.from_env(os.environ)
        config = AgentConfig(
            pod=os.environ["POD_NAME"],
            settings=settings,
            namespace=os.environ["POD_NAMESPACE"],
            bind=os.environ.get("COCKPIT_AGENT_BIND", "0.0.0.0"),
            ssh_port=int(os.environ.get("COCKPIT_AGENT_SSH_PORT", SSH_PORT)),
        )
        cluster = KubeCluster(KubeAPI.in_cluster(), os.environ["POD_NAMESPACE"])
    except (KeyError, ValueError, KubeError) as exc:
        print(f"cockpit agent: cannot start: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(Agent(config, cluster, origin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
