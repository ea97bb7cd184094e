"""A listening socket closes without resetting a connection its client believes open
(service/hosting/listener_close): queued connections are accepted, and once handshakes are refused no new
connection can join the queue between the last accept and the close."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from service.hosting.listener_close import accept_waiting, close_listeners, refuse_handshakes


def test_every_queued_connection_is_accepted_and_a_closed_listener_yields_none() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
    for client in clients:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    accepted = accept_waiting((listener,))
    assert len(accepted) == 5 and all(not c.getblocking() for c in accepted)
    assert accept_waiting((listener,)) == []  # nothing more queued: returns at once
    listener.close()
    assert accept_waiting((listener,)) == []
    for connection in accepted:
        assert connection.recv(64).startswith(b"GET / ")  # the request is there to be answered
        connection.close()
    for client in clients:
        client.close()


@pytest.mark.skipif(sys.platform != "linux", reason="SO_ATTACH_FILTER is Linux's")
def test_refused_handshakes_never_reach_the_queue_while_connections_made_before_still_talk() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    before = socket.create_connection(listener.getsockname())
    assert refuse_handshakes(listener)
    with pytest.raises(TimeoutError):  # the SYN is dropped: neither connected nor refused, it would retry
        socket.create_connection(listener.getsockname(), timeout=0.3)
    accepted = accept_waiting((listener,))
    assert len(accepted) == 1  # only the connection made before: the refused one never joined the queue
    before.sendall(b"request")
    accepted[0].setblocking(True)
    assert accepted[0].recv(16) == b"request"
    accepted[0].sendall(b"answer")  # segments with ACK set pass the filter both ways
    assert before.recv(16) == b"answer"
    for s in (before, accepted[0], listener):
        s.close()


def test_close_listeners_hands_over_the_queue_then_connections_are_refused() -> None:
    listeners = tuple(socket.create_server(("127.0.0.1", 0)) for _ in range(2))
    for listener in listeners:
        listener.setblocking(False)
    addresses = [listener.getsockname() for listener in listeners]
    clients = [socket.create_connection(address) for address in addresses for _ in range(3)]
    waiting = asyncio.run(close_listeners(listeners))
    assert len(waiting) == 6
    for address in addresses:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)
    for s in (*clients, *waiting):
        s.close()
