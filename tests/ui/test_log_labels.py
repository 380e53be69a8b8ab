"""The log pane's short source labels."""

from __future__ import annotations

import pytest

from cockpit.core.events import LogLine, SourceKind
from cockpit.engine.supervisor import OLD_SUFFIX
from cockpit.ui.widgets.logs import source_label


@pytest.mark.parametrize(
    ("source", "service", "kind", "label"),
    [
        ("api", "api", SourceKind.LOCAL, "api"),
        ("api" + OLD_SUFFIX, "api", SourceKind.LOCAL, "api·old"),  # the old process after a restart
        ("api:before_start", "api", SourceKind.LOCAL, "api"),  # a hook's output
        ("store-7d9f-x2k4p/store", "store", SourceKind.POD, "store·x2k4p"),
        ("store-7d9f-x2k4p/sidecar", "store", SourceKind.POD, "store·x2k4p/sidecar"),
        ("events", "store", SourceKind.EVENT, "store·event"),
        ("cockpit", "", SourceKind.COCKPIT, "cockpit"),
    ],
)
def test_source_label(source: str, service: str, kind: SourceKind, label: str) -> None:
    assert source_label(LogLine(source, service, kind, "text", 0.0)) == label
