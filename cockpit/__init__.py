"""cockpit: a terminal cockpit for hybrid Kubernetes development."""

__version__ = "0.1.0"
