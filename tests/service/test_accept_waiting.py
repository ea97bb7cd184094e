"""The connections queued on a listening socket when a server stops are accepted, not reset
(service/hosting/uvicorn_server.accept_waiting)."""

from __future__ import annotations

import socket

from service.hosting.uvicorn_server import accept_waiting


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
