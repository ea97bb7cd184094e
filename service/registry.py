"""Served models: name/version -> a loaded version with its input check, processors and batcher. Load, swap,
unload.

Loading a version builds and warms everything (``service.loading``) before it is swapped in, so a broken model
never replaces the serving one. Requests ask for a name and optionally a version; without one they get the newest
loaded. A retired version (swapped out or unloaded) finishes what it queued and is marked ``retired``, so a
request that looked it up before the swap can look again (``service.dataplane``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.backends import Backend
from service.batcher import Batcher
from service.config import ModelConfig
from service.errors import ModelLoadFailed, ModelNotFound, VersionNotFound
from service.hosting.memory import release_free_memory
from service.input_check import InputCheck
from service.loading import BatchPolicy, LoadedVersion, load_version
from service.metrics import ServiceMetrics
from service.model_stats import ModelStats
from service.processors import InputProcessor, OutputProcessor, input_processor, output_processor
from service.report import TrainingReport
from service.repository import list_models, list_versions, version_dir
from service.samples import SampleIndex
from service.settings import Settings

log = logging.getLogger("nnserve")


class _Observer:
    """What a version's batcher reports: to its Prometheus series and to its statistics."""

    def __init__(self, metrics: ServiceMetrics, name: str, version: str, stats: ModelStats) -> None:
        self._depth = metrics.queue_depth.labels(name, version)
        self._wait = metrics.queue_wait.labels(name, version)
        self._compute = metrics.compute.labels(name, version)
        self._size = metrics.batch_size.labels(name, version)
        self._stats = stats

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)
        self._stats.queue.add(seconds)

    def computed(self, batch_size: int, seconds: float) -> None:
        self._size.observe(batch_size)
        self._compute.observe(seconds)
        self._stats.computed(batch_size, seconds)


@dataclass(eq=False)
class ServedModel:
    config: ModelConfig
    report: TrainingReport | None
    backend: Backend
    policy: BatchPolicy
    check: InputCheck
    inputs: InputProcessor
    outputs: OutputProcessor
    batcher: Batcher
    path: Path
    stats: ModelStats
    load_seconds: float = 0.0
    samples: SampleIndex | None = None  # published test-set samples (service.samples)
    retired: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> int:
        return self.config.version

    @functools.cached_property
    def output_names(self) -> list[str]:
        return [t.name for t in self.config.outputs]

    def runtime(self) -> dict[str, Any]:
        """How it runs: the backend's own description (providers, threads...)."""
        return self.backend.describe()


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.root = settings.repository
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.failures: dict[str, str] = {}
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="backend")
        self._lock = asyncio.Lock()

    # -- lookup -------------------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> ServedModel:
        versions = self.models.get(name)
        if not versions:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model '{name}' is not served (served: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise VersionNotFound(
                f"model '{name}' has no served version {version} (served: {sorted(versions)})"
            )
        return versions[version]

    def served(self) -> list[ServedModel]:
        return [m for name in sorted(self.models) for _, m in sorted(self.models[name].items())]

    # -- loading ------------------------------------------------------------------------------------------
    def versions_to_serve(self, name: str) -> list[int]:
        available = list_versions(self.root / name)
        pinned = self.settings.model_versions.get(name)
        if pinned:
            missing = sorted(set(pinned) - set(available))
            if missing:
                raise ModelLoadFailed(f"model '{name}': pinned version(s) {missing} not in {self.root / name} "
                                      f"(available: {available})")
            return sorted(pinned)
        return available[-1:]

    def _build(self, name: str, version: int) -> ServedModel:
        loaded = load_version(version_dir(self.root, name, version), name, version, self.settings)
        return self.serve(loaded)

    def serve(self, loaded: LoadedVersion) -> ServedModel:
        config, policy = loaded.config, loaded.policy
        stats = ModelStats()
        batcher = Batcher(
            loaded.backend.run, self.executor, _Observer(self.metrics, config.name, str(config.version), stats),
            max_batch_size=policy.max_batch_size, max_queue_delay_s=policy.max_queue_delay_s,
            max_queue_size=policy.max_queue_size, concurrency=policy.concurrency,
            pad_values={a.input: a.pad_value for a in config.ragged}, name=f"{config.name}:{config.version}",
        )
        return ServedModel(config, loaded.report, loaded.backend, policy, InputCheck(config, policy.batching),
                           input_processor(config, self.settings.max_image_pixels), output_processor(config),
                           batcher, loaded.folder, stats, loaded.load_seconds, loaded.samples)

    async def load(self, name: str, versions: list[int] | None = None) -> list[ServedModel]:
        """Build, warm and start the versions of ``name``, then swap them in; the old ones are drained."""
        async with self._lock:
            try:
                wanted = versions or self.versions_to_serve(name)
                if not wanted:
                    raise ModelLoadFailed(f"model '{name}': no complete version under {self.root / name}")
                loop = asyncio.get_running_loop()
                built = [await loop.run_in_executor(self.executor, self._build, name, v) for v in wanted]
            except ModelLoadFailed as error:
                self.metrics.load_failures.labels(name).inc()
                self.failures[name] = error.message
                log.error("load failed: %s", error.message)
                raise
            old = self.models.get(name, {})
            for model in built:
                model.batcher.start()
            self.models[name] = {m.version: m for m in built}
            self.failures.pop(name, None)
            for model in built:
                self._mark(model, ready=True)
            for version, model in old.items():
                if version not in self.models[name] or self.models[name][version] is not model:
                    await self._retire(model)
            release_free_memory()
            return built

    async def load_repository(self) -> None:
        names = self.settings.models or list_models(self.root)
        if not names:
            raise ModelLoadFailed(f"no models found under {self.root.resolve()}")
        for name in names:
            await self.load(name)

    async def unload(self, name: str) -> None:
        async with self._lock:
            versions = self.models.pop(name, None)
            if versions is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
            for model in versions.values():
                await self._retire(model)
            release_free_memory()

    async def _retire(self, model: ServedModel) -> None:
        model.retired = True
        await model.batcher.stop(self.settings.drain_timeout_s)
        self._mark(model, ready=False)
        model.backend.close()

    def _mark(self, model: ServedModel, ready: bool) -> None:
        version = str(model.version)
        self.metrics.model_ready.labels(model.name, version).set(1 if ready else 0)
        providers = ",".join(model.runtime().get("providers", []))
        info = self.metrics.model_info.labels(model.name, version, providers, model.config.sha256 or "")
        info.set(1 if ready else 0)
        self.metrics.queue_capacity.labels(model.name, version).set(model.policy.max_queue_size)

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        self.executor.shutdown(wait=True)
