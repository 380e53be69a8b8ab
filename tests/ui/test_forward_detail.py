"""The forward detail screen's text: both routes' counters and the route of new connections."""

from __future__ import annotations

from cockpit.core.events import ForwardChanged
from cockpit.ui.widgets.tables import forward_detail


def test_forward_detail_splits_the_counters_by_route() -> None:
    event = ForwardChanged(
        "store:8080", "127.0.0.3:8080", "store.shop.svc:8080", "listening",
        connections=3, bytes_in=12_000, bytes_out=800,
        route="tunnel", tunnel_connections=2, tunnel_bytes_in=10_000, tunnel_bytes_out=500,
    )  # fmt: skip
    lines = forward_detail(event).splitlines()
    assert "route       tunnel (new connections)" in lines
    rows = {line.split()[0]: line.split()[1:] for line in lines[-3:]}
    assert rows == {
        "tunnel": ["2", "10,000", "500"],
        "port-fwd": ["1", "2,000", "300"],
        "total": ["3", "12,000", "800"],
    }
