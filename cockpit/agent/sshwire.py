"""How both ends of the session tunnel speak SSH (the agent's server and the session's client):
channel sizes, ciphers, and one per-packet saving asyncssh does not make by itself."""

from __future__ import annotations

import inspect
from typing import Any

import asyncssh.connection
from asyncssh.constants import MSG_IGNORE
from asyncssh.encryption import ChachaEncryption, GCMEncryption

# Larger channels than asyncssh's defaults (2 MiB, 32 KiB): fewer packets, each of which costs
# Python work, and a window that covers a port-forward's round trip at a few hundred MB/s.
WINDOW = 8 * 1024 * 1024
MAX_PACKET = 256 * 1024
# AEAD only: AES-GCM runs on AES-NI through cryptography; chacha20-poly1305 takes more steps.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")

_EMPTY_STRING = b"\0\0\0\0"
_AEAD = (GCMEncryption, ChachaEncryption)


def _known_shape(send_packet: Any) -> bool:
    """Whether asyncssh's send_packet is the one this saving was written against; any other
    shape (a future asyncssh) keeps the stock behaviour rather than risk a broken wire."""
    try:
        params = inspect.signature(send_packet).parameters
    except (TypeError, ValueError):
        return False
    kinds = [(name, p.kind) for name, p in params.items()]
    return kinds == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("pkttype", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("args", inspect.Parameter.VAR_POSITIONAL),
        ("handler", inspect.Parameter.KEYWORD_ONLY),
    ]


def skip_cbc_countermeasure() -> None:
    """Stop asyncssh from sending an empty SSH_MSG_IGNORE before every packet.

    That packet is RFC 4251 section 9.3.1's countermeasure for CBC modes, whose next IV an
    attacker can predict. The tunnel negotiates AEAD ciphers only (a fresh nonce per packet),
    where it protects nothing, yet it doubles the packets per message: each one a send, a
    port-forward frame through the API server and kubelet, and a wake-up at the far end.
    IGNORE packets with content, and connections with any other cipher, are left as they are.
    Idempotent."""
    cls: Any = asyncssh.connection.SSHConnection
    original = cls.send_packet
    if getattr(original, "skips_cbc_countermeasure", False) or not _known_shape(original):
        return

    def send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_STRING,)
            and isinstance(getattr(self, "_send_encryption", None), _AEAD)
        ):
            return
        original(self, pkttype, *args, handler=handler)

    send_packet.skips_cbc_countermeasure = True  # type: ignore[attr-defined]
    send_packet.__wrapped__ = original  # type: ignore[attr-defined]
    cls.send_packet = send_packet
