"""A reverse proxy for the tests, as an ingress serving nnserve under a path prefix: requests for
``/<prefix>/...`` are forwarded to the server with the prefix stripped; anything else is a 404 of the proxy's own."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


@contextmanager
def prefix_proxy(target: str, prefix: str) -> Iterator[str]:
    """Yield the proxy's base URL (``http://127.0.0.1:PORT``); it serves ``target`` under ``prefix``."""
    upstream = urlsplit(target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def forward(self) -> None:
            if self.path != prefix and not self.path.startswith(prefix + "/"):
                self.answer(404, {"content-type": "text/plain"}, b"the proxy serves only " + prefix.encode())
                return
            path = self.path[len(prefix):] or "/"
            body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=60)
            try:
                connection.request(self.command, path, body=body or None, headers=headers)
                response = connection.getresponse()
                content = response.read()
                self.answer(response.status, {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP},
                            content)
            finally:
                connection.close()

        def answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_HEAD = forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
