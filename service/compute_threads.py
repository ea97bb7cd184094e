"""``--compute-niceness``: the threads computing batches off the event loop run at a lower priority than the loop
(Linux's nice, per thread), for models whose compute shares a core with the loop (``service.loading``: the CPU
default, one onnxruntime thread per call, a process per core).

There the scheduler shares each core between the loop and a batch computing off it in slices of milliseconds: a
request for another model waited to be read, its own quick batch computed (in the loop: ``service.traffic``) and
its answer sent while the batch held the core. With the computing threads niced, the loop takes the core as soon
as it has work and the batch resumes right after: the same work in another order. Measured with
``nnserve bench --models resnet --concurrency 16 --beside mlp:200``, the MLP's p99 beside the ResNet's load went
from 6.94 to 4.13 ms at 19 against 0 (5 and 10 gained less), the ResNet's throughput unchanged within the noise
(docs/benchmarks.md).

Off by default: nice is relative to every thread of the same scheduling group (a container's, or a terminal
session's), so a busy program at normal priority there would take the cores from those batches. Threads of
onnxruntime sessions are made in another executor (models load there) and keep the normal priority: a request
computed on a model's lone session (``service.activity``) off the loop has only its calling thread niced.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("nnserve")


def lower_priority(niceness: int) -> None:
    """Called in each new computing thread: its nice value raised by ``niceness`` (a thread may always lower its
    own priority; it cannot raise it back). Where threads have no priority of their own, nothing changes."""
    if not niceness or not hasattr(os, "setpriority"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
    except OSError as error:  # not permitted here (a seccomp profile): the thread keeps the loop's priority
        log.warning("computing threads keep the event loop's priority: %s", error)
