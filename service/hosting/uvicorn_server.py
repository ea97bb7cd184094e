"""uvicorn's server, as every nnserve process runs it: a stop signal begins the drain (readiness turns 503 and gRPC
health NOT_SERVING at once, while requests already on their way are still answered) and the process then exits 0,
instead of uvicorn's re-raising the signal after its shutdown (which made the exit status -15).

The drain of each HTTP connection is ``http_protocol.CoalescingHttpToolsProtocol.shutdown``. Before the listening
socket closes, it stops taking handshakes and the connections waiting in its accept queue are accepted and drained
like the others (``listener_close``): closing a listening socket resets every connection still queued on it, and a
drain fills that queue (the clients told ``Connection: close`` by one process reconnect, and with several processes
the kernel hands those connections to another one's socket, which closes a moment later: 3 of 32 clients met a
reset in one of ten SIGTERM drills under load before the queue was accepted, and 1 of 32 in about 1 in 150 drills
before handshakes were refused first). Relies on ``Server.handle_exit``, ``should_exit``, ``force_exit``, ``servers``,
``server_state`` and ``lifespan.state``: pinned and canary-tested with the rest of hosting/.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import uvicorn

from service import drain
from service.hosting.listener_close import close_listeners, own_handles


class NNServeServer(uvicorn.Server):
    interrupted = False  # a SIGINT came already
    listeners: tuple[socket.socket, ...] = ()  # our own handles on the listening sockets

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain.begin()
        if sig == signal.SIGINT and self.interrupted:
            self.force_exit = True  # a second Ctrl+C: stop waiting (uvicorn forces on any SIGINT after a first
            # signal; a worker given SIGTERM by the started process and Ctrl+C by the terminal would skip its drain)
        self.interrupted = self.interrupted or sig == signal.SIGINT
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listeners = own_handles(s for server in self.servers for s in server.sockets or ())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # uvicorn's shutdown closes them too: closing twice is harmless
        waiting = await close_listeners(self.listeners)
        loop = asyncio.get_running_loop()
        for connection in waiting:
            await loop.connect_accepted_socket(self._protocol, connection)
        await super().shutdown(sockets)

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's startup makes it."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

