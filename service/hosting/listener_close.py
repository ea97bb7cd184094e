"""Closing a listening socket without resetting a connection a client believes open.

Closing a listening socket resets every connection queued on it, and a handshake that completes between the last
``accept()`` and the ``close()`` lands in that queue: its client has connected and sent its request, and meets a
reset (1 of 32 clients in about 1 in 150 SIGTERM drills under keep-alive load, where clients told
``Connection: close`` reconnect at once). So the socket first stops taking new handshakes: a classic BPF filter
drops every SYN that is not also an ACK (the client sends it again a second later and is then refused, or lands
on another process's socket), while the ACKs of handshakes already under way still pass and complete them. After
``HANDSHAKE_GRACE_S``, every connection queued is accepted and the socket closed (``tests/service/
test_listener_close.py``; ``tests/e2e/test_drain.py`` under load). What still meets a reset: a handshake whose
last ACK takes longer than that grace (lost once, or a round trip over 200 ms), and the queue left unaccepted when
the process has no file descriptor left (``accept`` fails with EMFILE).

``SO_ATTACH_FILTER`` is Linux's and needs no privilege; elsewhere the filter is skipped and the race stays.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import sys
from collections.abc import Iterable
from typing import Any

SO_ATTACH_FILTER = 26  # Linux; the socket module does not name it
HANDSHAKE_GRACE_S = 0.2  # a round trip, wide: an ACK already on its way completes its handshake meanwhile

# Classic BPF over a TCP socket's packets, which start at the TCP header: byte 13 holds the flags.
_DROP_PURE_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x54, 0, 0, 0x12),  # and #(SYN | ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN: the next instruction, else the one after
    (0x06, 0, 0, 0),  # ret #0: dropped
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: kept whole
)
_PROGRAM = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_PURE_SYN))


def refuse_handshakes(listener: socket.socket) -> bool:
    """New connections' SYNs are dropped from now on; handshakes under way complete. False where it cannot be."""
    if not sys.platform.startswith("linux"):
        return False  # the option's number is Linux's; other systems' filters differ
    program = struct.pack("HP", len(_DROP_PURE_SYN), ctypes.addressof(_PROGRAM))
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
    except OSError:
        return False
    return True


def own_handles(sockets: Iterable[Any]) -> tuple[socket.socket, ...]:
    """Non-blocking handles of our own on an event loop's listening sockets (uvloop's are not socket objects):
    each a dup, which ``close_listeners`` reads and closes."""
    handles = tuple(socket.fromfd(s.fileno(), s.family, s.type) for s in sockets)
    for handle in handles:
        handle.setblocking(False)
    return handles


def accept_waiting(listeners: tuple[socket.socket, ...]) -> list[socket.socket]:
    """Every connection queued on the (non-blocking) listening sockets, accepted."""
    accepted = []
    for listener in listeners:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                break  # nothing more queued (BlockingIOError), or closed
            connection.setblocking(False)
            accepted.append(connection)
    return accepted


async def close_listeners(listeners: tuple[socket.socket, ...]) -> list[socket.socket]:
    """Closes the (non-blocking) listening sockets and returns the connections that were queued on them."""
    if any([refuse_handshakes(listener) for listener in listeners]):
        await asyncio.sleep(HANDSHAKE_GRACE_S)
    waiting = accept_waiting(listeners)
    for listener in listeners:
        listener.close()
    return waiting
