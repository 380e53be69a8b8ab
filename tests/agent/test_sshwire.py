"""The tunnel's one change to asyncssh's wire: no empty IGNORE packet before each AEAD packet."""

from __future__ import annotations

from typing import Any

import asyncssh
import asyncssh.connection
import pytest
from asyncssh.constants import MSG_IGNORE

from cockpit.agent import sshwire


def test_the_saving_is_installed_once_on_the_known_send_packet() -> None:
    sshwire.skip_cbc_countermeasure()
    installed = asyncssh.connection.SSHConnection.send_packet
    assert getattr(installed, "skips_cbc_countermeasure", False)
    sshwire.skip_cbc_countermeasure()
    assert asyncssh.connection.SSHConnection.send_packet is installed


def test_another_send_packet_shape_is_left_alone() -> None:
    def send_packet(self: Any, pkttype: int, payload: bytes) -> None: ...

    assert not sshwire._known_shape(send_packet)
    assert not sshwire._known_shape(len)


@pytest.mark.parametrize("cipher", sshwire.CIPHERS)
async def test_an_aead_connection_sends_no_empty_ignore(
    cipher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, tuple[bytes, ...]]] = []
    stock = asyncssh.connection.SSHConnection.send_packet
    stock = getattr(stock, "__wrapped__", stock)  # asyncssh's own, under the saving

    def recording(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        sent.append((pkttype, args))
        stock(self, pkttype, *args, handler=handler)

    monkeypatch.setattr(asyncssh.connection.SSHConnection, "send_packet", recording)
    sshwire.skip_cbc_countermeasure()  # wraps the recording one: what it passes on is recorded
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        encryption_algs=[cipher],
        process_factory=lambda proc: proc.exit(0),
        allow_scp=False,
        server_factory=_NoAuth,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", encryption_algs=[cipher]
        ) as conn:
            result = await conn.run("x")
            assert result.exit_status == 0
    finally:
        server.close()
    assert sent, "nothing went through send_packet"
    assert (MSG_IGNORE, (b"\0\0\0\0",)) not in sent


class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False
