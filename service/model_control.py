"""The desired state every serving process of one server follows, and how far each has got: files in the
server's control folder (``NNSERVE_CONTROL_DIR``, made by the started process; with ``--workers 1`` too, so one
code path serves both).

``orders.json`` holds the repository API's orders, one per model it was used on: load (optionally with pinned
versions) or unload, each with a generation number that grows with every order. Every process checks the file's
stat ten times a second, applies what is new, and writes ``status-<pid>.json``: the generation it has applied for
each model and the error, if any. The process that took the API call waits until every live process has applied
its order, so the answer says what the whole server now does, naming any process that failed. A process starting
later (a replaced worker) applies the orders before it listens. Writes are atomic (a rename); orders are taken
under an ``flock``, so two API calls in two processes cannot lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ORDERS = "orders.json"


@dataclass(frozen=True)
class Order:
    state: Literal["loaded", "unloaded"]
    versions: list[int] | None  # loaded: pinned versions, or None for the model's version policy
    generation: int


@dataclass(frozen=True)
class Applied:
    pid: int
    generation: int
    error: str | None


def _write_atomically(path: Path, data: Any) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(data))
    os.replace(part, path)


@contextlib.contextmanager
def exclusively(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (made if missing): one process at a time, across the server."""
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._seen: tuple[int, int] | None = None
        self._applied: dict[str, int] = {}
        self._errors: dict[str, str] = {}

    # -- orders (the desired state) ----------------------------------------------------------------------
    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusively(self.folder / ".lock")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads((self.folder / ORDERS).read_text())
        except FileNotFoundError:
            return {"generation": 0, "models": {}}
        return data if isinstance(data, dict) else {"generation": 0, "models": {}}

    def order(self, name: str, state: Literal["loaded", "unloaded"], versions: list[int] | None = None) -> int:
        """Record an order for every process; its generation."""
        with self._locked():
            data = self._read()
            generation = int(data.get("generation", 0)) + 1
            data["generation"] = generation
            data.setdefault("models", {})[name] = {"state": state, "versions": versions, "generation": generation}
            _write_atomically(self.folder / ORDERS, data)
        return generation

    def orders(self) -> dict[str, Order]:
        models = self._read().get("models", {})
        return {name: Order(o["state"], o.get("versions"), int(o["generation"])) for name, o in models.items()}

    def changed(self) -> bool:
        """Whether the orders file changed since the last call (a stat: cheap enough ten times a second)."""
        try:
            stat = (self.folder / ORDERS).stat()
        except FileNotFoundError:
            return False
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    # -- how far each process has got ----------------------------------------------------------------------
    def applied(self, name: str) -> int:
        return self._applied.get(name, 0)

    def report(self, name: str, generation: int, error: str | None) -> None:
        """This process has applied ``name``'s order of ``generation`` (with ``error`` if it failed)."""
        self._applied[name] = generation
        if error:
            self._errors[name] = error
        else:
            self._errors.pop(name, None)
        self.announce()

    def announce(self) -> None:
        """This process serves and follows the orders (from now on, the repository API waits for it too)."""
        _write_atomically(self.folder / f"status-{os.getpid()}.json",
                          {"pid": os.getpid(), "applied": self._applied, "errors": self._errors})

    def forget(self, pid: int) -> None:
        """A process that exited: nobody waits for it."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"status-{pid}.json").unlink()

    def progress(self, name: str) -> list[Applied]:
        """Each live process's applied generation for ``name`` and its error."""
        found = []
        for path in self.folder.glob("status-*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now, or gone: read on the next look
            pid = int(data.get("pid", 0))
            if pid and process_alive(pid):
                found.append(Applied(pid, int(data.get("applied", {}).get(name, 0)),
                                     data.get("errors", {}).get(name)))
        return sorted(found, key=lambda a: a.pid)

    async def converged(self, name: str, generation: int, timeout_s: float) -> tuple[list[Applied], list[int]]:
        """Wait until every live process has applied ``generation`` of ``name``: (what each did, the pids
        still behind when ``timeout_s`` ran out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            progress = self.progress(name)
            behind = [a.pid for a in progress if a.generation < generation]
            if not behind or time.monotonic() > deadline:
                return [a for a in progress if a.generation >= generation], behind
            await asyncio.sleep(0.05)
