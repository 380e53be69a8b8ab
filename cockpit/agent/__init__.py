"""The in-cluster agent (runs in the agent image as python -m cockpit.agent)."""
