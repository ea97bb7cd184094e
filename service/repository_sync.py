"""Keeps one process's served models in step with the repository on disk and with the repository API's orders.

At start it loads every model to serve (``--model`` ones, else every one on disk), as the orders in the control
folder (``service.model_control``) amend: unloaded ones stay unloaded, loaded ones with pinned versions keep them.
Then, ten times a second, it applies new orders; and every ``--repository-poll-s`` it scans the repository
(a stat per file) and syncs each model whose files changed, appeared or went away (``ModelRegistry.sync``: a new
version is loaded and warmed before it takes traffic; the old one drains, then is released; a version that
cannot load is reported and never replaces a serving one). A version appears by the rename of a complete folder
(``service.repository.publish``), so a poll never meets half a version written that way; one copied in file by
file may be tried half-written, fails, and is tried again once its files stop changing.

Polling is on by default, every 5 s: the scan costs well under a millisecond for a hundred versions, and a
published version then serves within about 5 s plus its warm-up. ``--repository-poll-s 0`` turns it off (then
only a restart or the repository API changes what is served).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from service.errors import ModelLoadFailed
from service.model_control import ControlFolder, Order
from service.registry import ModelRegistry, SyncResult
from service.repository import Fingerprint, list_models, scan_versions
from service.settings import Settings

log = logging.getLogger("nnserve")
FOLLOW_INTERVAL_S = 0.1


class RepositorySync:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._own_folder = settings.control_dir is None  # one process alone: a private folder, removed at stop
        folder = settings.control_dir or Path(tempfile.mkdtemp(prefix="nnserve-control-"))
        self.control = ControlFolder(folder)
        self._lock = asyncio.Lock()
        self._seen: dict[str, dict[int, Fingerprint]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- what to serve ----------------------------------------------------------------------------------------
    def wanted(self, orders: dict[str, Order]) -> list[str]:
        """The models this process should serve: the usual ones, plus those the API loaded, minus those it
        unloaded."""
        names = set(self.registry.names_to_serve())
        names |= {name for name, order in orders.items() if order.state == "loaded"}
        names -= {name for name, order in orders.items() if order.state == "unloaded"}
        return sorted(names)

    async def start(self) -> None:
        """Load every model to serve (a model with no version that loads fails the start), then follow."""
        self.control.changed()
        orders = self.control.orders()
        names = self.wanted(orders)
        if not names:
            raise ModelLoadFailed(f"no models found under {self.settings.repository.resolve()}")
        for name in names:
            order = orders.get(name)
            result = await self.registry.sync(name, order.versions if order else None)
            if not result.served:
                raise ModelLoadFailed("; ".join(result.errors) or f"model '{name}': nothing to serve")
            self._seen[name] = scan_versions(self.settings.repository / name)
        for name, order in orders.items():
            self.control.report(name, order.generation, None)
        self.control.announce()
        self._task = asyncio.create_task(self._run(), name="nnserve-repository-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.control.forget(os.getpid())
        if self._own_folder:
            shutil.rmtree(self.control.folder, ignore_errors=True)

    async def _run(self) -> None:
        next_poll = time.monotonic() + self.settings.repository_poll_s
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            try:
                if self.control.changed():
                    await self.follow()
                if self.settings.repository_poll_s and time.monotonic() >= next_poll:
                    await self.poll()
                    next_poll = time.monotonic() + self.settings.repository_poll_s
            except Exception:  # a bug here must not stop the following: say it, go on
                log.exception("repository sync failed; trying again")

    # -- the API's orders -------------------------------------------------------------------------------------
    async def follow(self) -> None:
        """Apply every order this process has not applied yet."""
        async with self._lock:
            for name, order in sorted(self.control.orders().items(), key=lambda item: item[1].generation):
                if order.generation > self.control.applied(name):
                    await self._apply(name, order)

    async def _apply(self, name: str, order: Order) -> None:
        error = None
        if order.state == "unloaded":
            await self.registry.unload(name)
        else:
            result: SyncResult = await self.registry.sync(name, order.versions, force=True)
            error = "; ".join(result.errors) or None
            self._seen[name] = scan_versions(self.settings.repository / name)
        self.control.report(name, order.generation, error)

    # -- the repository on disk -------------------------------------------------------------------------------
    async def poll(self) -> None:
        """Sync every model whose files changed since the last look (new ones too; gone ones are unloaded)."""
        async with self._lock:
            orders = self.control.orders()
            names = set(self.wanted(orders))
            if not self.settings.models:
                on_disk = set(await asyncio.to_thread(list_models, self.settings.repository))
                names = (names & on_disk) | {n for n, o in orders.items() if o.state == "loaded"}
            for name in sorted(names | set(self.registry.models)):
                scan = await asyncio.to_thread(scan_versions, self.settings.repository / name)
                if name not in names:
                    if await self.registry.unload(name):
                        log.info("model %s left the repository: unloaded", name)
                    self._seen.pop(name, None)
                    continue
                if scan == self._seen.get(name) and name in self.registry.models:
                    continue
                self._seen[name] = scan
                order = orders.get(name)
                await self.registry.sync(name, order.versions if order else None)
