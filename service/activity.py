"""Which of a server's processes are computing: what decides whether a lone request may take every core.

A request computed while nothing else is, in this process or in any other of the server, runs on its model's
*lone session*: every usable core, threads that spin while they wait (onnxruntime's own defaults, what the simplest
server gets). Everything else runs on the batch session: this process's share of the cores, threads that sleep.
Spinning threads steal the cores the other processes compute on (../PERF-NOTES: half the throughput at c=64), so
the processes share a small board: one slot per process saying until when it is *crowded* (computing batches:
nobody goes lone) and until when a lone session of it still spins (onnxruntime's threads spin ~20 ms after a
run: meanwhile no other lone session starts, not even another model's in the same process).

The board is a file in the control folder the processes of one server share (``--workers``), mapped into each
one's memory; a process claims a free slot under a file lock (a dead process's slot is free) and writes only its
own. Times are ``time.monotonic()``, one clock for every process of a machine. One process alone keeps its board in
its own memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
from pathlib import Path

import numpy as np

from service.model_control import process_alive

SLOTS = 64  # processes of one server
PID, CROWDED, SPINNING, OWNER = range(4)  # the columns of a slot (float64)
BOARD_FILE = "activity"
CROWDED_HOLD_S = 0.05  # after a batch: lone sessions wait this long for the load to be over
SPIN_HOLD_S = 0.03  # after a lone run: onnxruntime's threads spin ~20 ms (measured: service/backends/onnx.py)
RUNNING_S = 3600.0  # while a run lasts (its end writes the real hold; a process that dies mid-run frees its slot)


class ActivityBoard:
    def __init__(self, folder: Path | None) -> None:
        """``folder``: the server's control folder (every process the same), or None for a process alone."""
        self._file = None if folder is None else (folder / BOARD_FILE).open("a+b")
        if self._file is None:
            self._map = mmap.mmap(-1, SLOTS * 4 * 8)
        else:
            fcntl.flock(self._file, fcntl.LOCK_EX)  # claiming a slot: one process at a time
            if os.fstat(self._file.fileno()).st_size < SLOTS * 4 * 8:
                self._file.truncate(SLOTS * 4 * 8)
            self._map = mmap.mmap(self._file.fileno(), SLOTS * 4 * 8)
        try:
            self._slots = np.frombuffer(self._map, dtype=np.float64).reshape(SLOTS, 4)
            self.slot = self._claim()
        finally:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        self._mine = self._slots[self.slot]

    def _claim(self) -> int:
        """The first free slot; every dead process's slot is cleared on the way (one that died mid-run would keep
        the others crowded)."""
        me = os.getpid()
        free = []
        for slot in range(SLOTS):
            pid = int(self._slots[slot, PID])
            if pid == 0 or not process_alive(pid):
                self._slots[slot] = 0.0
                free.append(slot)
        if not free:
            raise RuntimeError(f"more than {SLOTS} serving processes share one activity board")
        self._slots[free[0]] = (me, 0.0, 0.0, 0.0)
        return free[0]

    def calm(self, owner: int) -> bool:
        """Whether a run of ``owner`` (a model version's batcher) may take every core now: no process is crowded
        and no lone session but ``owner``'s own spins."""
        now = time.monotonic()
        slots = self._slots
        if (slots[:, CROWDED] > now).any():
            return False
        spinning = np.flatnonzero(slots[:, SPINNING] > now)
        return not len(spinning) or (len(spinning) == 1 and spinning[0] == self.slot and
                                     self._mine[OWNER] == owner)

    def crowded(self, running: bool) -> None:
        """A batch session's run starts (``running``) or ends."""
        self._mine[CROWDED] = time.monotonic() + (RUNNING_S if running else CROWDED_HOLD_S)

    def spinning(self, owner: int, running: bool) -> None:
        """``owner``'s lone session's run starts (``running``) or ends."""
        mine = self._mine
        mine[OWNER] = owner
        mine[SPINNING] = time.monotonic() + (RUNNING_S if running else SPIN_HOLD_S)

    def close(self) -> None:
        """Free the slot."""
        with contextlib.suppress(ValueError, BufferError):
            self._mine[:] = 0.0
            del self._mine, self._slots
            self._map.close()
        if self._file is not None:
            self._file.close()
