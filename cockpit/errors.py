"""One exception tree for cockpit: every error carries a one-line message a user can act on.

The CLI maps these to exit codes and prints ``message`` only (the traceback with
``--debug``). Library exceptions are mapped to these at each I/O boundary
(``raise ConfigError(...) from exc``).
"""

from __future__ import annotations


class CockpitError(Exception):
    """Base of every error cockpit reports to a user."""

    title = "cockpit error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message (and hint) as the single line the CLI prints."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(CockpitError):
    """cockpit.yaml (or a flag) is missing, malformed or invalid."""

    title = "configuration error"
    exit_code = 2


class UsageError(CockpitError):
    """The command line asks for something that cannot be done as asked."""

    title = "usage error"
    exit_code = 2


class ProcessError(CockpitError):
    """The local service could not be started or supervised."""

    title = "local process error"
    exit_code = 3


class ClusterError(CockpitError):
    """The Kubernetes API is unreachable or answered with an error."""

    title = "cluster error"
    exit_code = 4


class NotFoundError(ClusterError):
    """A context, namespace, service or pod does not exist."""

    title = "not found"


class AccessDeniedError(ClusterError):
    """The user's credentials lack a permission cockpit needs."""

    title = "permission denied"
    exit_code = 5


class InterceptError(CockpitError):
    """An intercept cannot be set up, toggled or removed."""

    title = "intercept error"
    exit_code = 6


class TunnelError(CockpitError):
    """The SSH tunnel to the in-cluster agent failed."""

    title = "tunnel error"
    exit_code = 7


class SyncError(CockpitError):
    """Hot reload or file sync into a pod failed."""

    title = "sync error"
    exit_code = 8
