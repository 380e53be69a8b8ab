"""What every cluster benchmark needs first: the kubeconfig and the kubectl to compare with."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def kubeconfig(bench: str) -> str:
    """COCKPIT_TEST_KUBECONFIG, KUBECONFIG, else the dev cluster's; exits with one line if none."""
    for candidate in (
        os.environ.get("COCKPIT_TEST_KUBECONFIG"),
        os.environ.get("KUBECONFIG"),
        "/var/lib/cockpit-dev/admin.kubeconfig",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit(f"bench/{bench}: no kubeconfig (set KUBECONFIG)")


def kubectl(bench: str) -> str:
    """$KUBECTL, else the dev cluster's 1.20 kubectl, else the one on PATH."""
    cached = Path("~/.cache/cockpit/k8s/v1.20.2/bin/kubectl").expanduser()
    found = os.environ.get("KUBECTL") or (str(cached) if cached.exists() else None)
    found = found or shutil.which("kubectl")
    if not found:
        sys.exit(f"bench/{bench}: kubectl not found (set KUBECTL)")
    return found
