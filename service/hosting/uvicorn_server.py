"""uvicorn's server, as every nnserve process runs it: a stop signal begins the drain (readiness turns 503 and gRPC
health NOT_SERVING at once, while requests already on their way are still answered) and the process then exits 0,
instead of uvicorn's re-raising the signal after its shutdown (which made the exit status -15).

The drain of each HTTP connection is ``http_protocol.CoalescingHttpToolsProtocol.shutdown``. Relies on
``Server.handle_exit``, ``should_exit`` and ``force_exit``: pinned and canary-tested with the rest of hosting/.
"""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from service import drain


class NNServeServer(uvicorn.Server):
    interrupted = False  # a SIGINT came already

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain.begin()
        if sig == signal.SIGINT and self.interrupted:
            self.force_exit = True  # a second Ctrl+C: stop waiting (uvicorn forces on any SIGINT after a first
            # signal; a worker given SIGTERM by the started process and Ctrl+C by the terminal would skip its drain)
        self.interrupted = self.interrupted or sig == signal.SIGINT
        self.should_exit = True
