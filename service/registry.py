"""Served models: name/version -> (manifest, onnxruntime session, batcher). Load, swap, unload.

Loading a version builds and warms everything before it is swapped in, so a broken model never replaces the
serving one. Requests ask for a name and optionally a version; without one they get the newest loaded.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.batcher import Batcher, Tensors
from service.errors import ModelLoadFailed, ModelNotFound, VersionNotFound
from service.hosting.memory import release_free_memory
from service.manifest import MODEL_FILE, Manifest, sha256_of
from service.metrics import ServiceMetrics
from service.model_repository import list_models, list_versions, version_dir
from service.runtime import ProviderUnavailable, Runtime, RuntimeOptions
from service.settings import Settings

log = logging.getLogger("nnserve")


class _Observer:
    def __init__(self, metrics: ServiceMetrics, name: str, version: str) -> None:
        self._depth = metrics.queue_depth.labels(name, version)
        self._wait = metrics.queue_wait.labels(name, version)
        self._compute = metrics.compute.labels(name, version)
        self._size = metrics.batch_size.labels(name, version)

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def computed(self, batch_size: int, seconds: float) -> None:
        self._size.observe(batch_size)
        self._compute.observe(seconds)


@dataclass(eq=False)
class ServedModel:
    manifest: Manifest
    runtime: Runtime
    batcher: Batcher
    path: Path
    load_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    async def infer(self, inputs: Tensors, size: int, timeout_s: float) -> Tensors:
        return await self.batcher.submit(inputs, size, timeout_s)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.root = settings.repository
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.failures: dict[str, str] = {}
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="onnxruntime")
        self._lock = asyncio.Lock()
        self.options = RuntimeOptions(settings.providers, settings.onnxruntime_threads(),
                                      settings.graph_optimization, settings.spin_wait, settings.memory_arena)

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
        folder = version_dir(self.root, name, version)
        try:
            manifest = Manifest.load(folder)
        except (OSError, ValidationError, ValueError) as error:
            raise ModelLoadFailed(f"model '{name}' version {version}: bad manifest.json: {error}") from error
        if manifest.name != name or manifest.version != version:
            raise ModelLoadFailed(f"{folder}: manifest says {manifest.name} v{manifest.version}")
        digest = sha256_of(folder / MODEL_FILE)
        if digest != manifest.sha256:
            raise ModelLoadFailed(f"model '{name}' version {version}: model.onnx sha256 {digest} does not match "
                                  f"the manifest's {manifest.sha256}")
        try:
            runtime = Runtime(folder / MODEL_FILE, manifest.inputs, self.options)
            runtime.warmup(self.settings.warmup_batch_sizes)
        except ProviderUnavailable:
            raise
        except Exception as error:  # onnxruntime raises its own types for a broken graph
            raise ModelLoadFailed(f"model '{name}' version {version}: onnxruntime cannot load or run "
                                  f"model.onnx: {error}") from error
        s = self.settings
        batcher = Batcher(
            runtime.run, runtime.output_names, self.executor, _Observer(self.metrics, name, str(version)),
            max_batch_size=s.max_batch_size, max_queue_delay_s=s.max_queue_delay_ms / 1000,
            max_queue_size=s.max_queue_size, concurrency=s.batch_concurrency, name=f"{name}:{version}",
        )
        return ServedModel(manifest, runtime, batcher, folder)

    async def load(self, name: str, versions: list[int] | None = None) -> list[ServedModel]:
        """Build, warm and start the versions of ``name``, then swap them in; the old ones are drained."""
        async with self._lock:
            try:
                wanted = versions or self.versions_to_serve(name)
                if not wanted:
                    raise ModelLoadFailed(f"model '{name}': no complete version under {self.root / name}")
                loop = asyncio.get_running_loop()
                built = []
                for version in wanted:
                    start = loop.time()
                    model = await loop.run_in_executor(self.executor, self._build, name, version)
                    model.load_seconds = loop.time() - start
                    built.append(model)
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
        await model.batcher.stop(self.settings.drain_timeout_s)
        self._mark(model, ready=False)

    def _mark(self, model: ServedModel, ready: bool) -> None:
        version = str(model.version)
        self.metrics.model_ready.labels(model.name, version).set(1 if ready else 0)
        info = self.metrics.model_info.labels(model.name, version, ",".join(model.runtime.providers),
                                              model.manifest.sha256)
        info.set(1 if ready else 0)
        self.metrics.queue_capacity.labels(model.name, version).set(self.settings.max_queue_size)

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        self.executor.shutdown(wait=True)
