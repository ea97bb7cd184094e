"""The activity board the processes of one server share: a lone request may take every core only while no process
is crowded and no other lone session spins; a dead process's slot is taken over. Two boards on one folder stand
for two processes (the real multi-process server: tests/e2e/test_serve_process.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from service.activity import CROWDED_HOLD_S, PID, SLOTS, SPIN_HOLD_S, ActivityBoard


def test_a_crowded_process_keeps_every_other_from_going_lone_until_its_hold_passes(tmp_path: Path) -> None:
    one, other = ActivityBoard(tmp_path), ActivityBoard(tmp_path)
    assert one.slot != other.slot and one.calm(1) and other.calm(2)
    other.crowded(running=True)
    assert not one.calm(1) and not other.calm(2)  # crowded: not even itself
    other.crowded(running=False)
    assert not one.calm(1)
    time.sleep(CROWDED_HOLD_S + 0.02)
    assert one.calm(1) and other.calm(2)
    one.close()
    other.close()


def test_a_spinning_lone_session_keeps_only_the_others_waiting(tmp_path: Path) -> None:
    one, other = ActivityBoard(tmp_path), ActivityBoard(tmp_path)
    one.spinning(owner=1, running=True)
    assert one.calm(1)  # its own next lone request: the same threads
    assert not one.calm(2)  # another model of the same process
    assert not other.calm(1)  # another process
    one.spinning(owner=1, running=False)
    assert not other.calm(1)  # its threads still spin a while
    time.sleep(SPIN_HOLD_S + 0.02)
    assert other.calm(1)
    one.close()
    other.close()


def test_a_dead_process_slot_is_taken_over_and_a_closed_one_is_free(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    first = ActivityBoard(tmp_path)
    first._slots[first.slot, PID] = int(dead.stdout)  # as if the process that held it had died mid-run
    first.crowded(running=True)
    spare = ActivityBoard(tmp_path)
    assert spare.slot == first.slot and spare.calm(1)  # cleared: the dead one's run no longer crowds anyone
    boards = [ActivityBoard(tmp_path) for _ in range(SLOTS - 1)]  # the others, alive: never taken over
    assert len({b.slot for b in boards}) == SLOTS - 1
    boards[0].close()
    assert ActivityBoard(tmp_path).slot == boards[0].slot


def test_one_process_alone_keeps_its_board_in_memory() -> None:
    board = ActivityBoard(None)
    assert board.calm(1)
    board.crowded(running=True)
    assert not board.calm(1)
    board.close()
