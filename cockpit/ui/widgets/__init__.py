"""The cockpit's panes: services, logs, alerts, forwards, sync, status bar and filter bar."""
