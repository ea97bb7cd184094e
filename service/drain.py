"""Whether this process has been told to stop: set by the server on SIGTERM or SIGINT (``service.hosting``), read
by readiness (HTTP ``/v2/health/ready``, gRPC health, ``ServerReady``), which turns off at once while the requests
already on their way are still answered.

A plain flag, not a ``threading.Event``: it is set from a signal handler, which may interrupt the main thread inside
that very call and would then wait forever for the lock it holds (seen: a Ctrl+C and a SIGTERM a moment apart).
"""

from __future__ import annotations

_state = {"draining": False}


def begin() -> None:
    _state["draining"] = True


def draining() -> bool:
    return _state["draining"]
