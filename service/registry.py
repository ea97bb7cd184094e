"""Served models: name/version -> a loaded version with its input check, processors and batcher; kept in step
with the repository on disk.

``sync(name)`` makes what is served match the repository: the versions the model's policy selects
(``service.version_policy``) out of those complete on disk, each new or changed one (its files' fingerprint) built
and warmed (``service.loading``) before it is swapped in, removed ones retired. A version that cannot load never
replaces a serving one: it is reported (log, ``nnserve_model_load_failures_total``, the repository index) and
left alone until its files change, and under a ``latest``/``all`` policy the newest older version that loads
stands in for it (the one already serving, if any). Requests ask for a name and optionally a version; without one
they get the newest served. A retired version finishes what it queued and is marked ``retired``, so a request that
looked it up before the swap can look again (``service.dataplane``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.activity import ActivityBoard
from service.backends import Backend
from service.batcher import Batcher
from service.compute_threads import lower_priority
from service.config import ModelConfig, read_config_file
from service.errors import ModelLoadFailed, ModelNotFound, VersionNotFound
from service.hosting.memory import release_free_memory
from service.input_check import InputCheck
from service.loading import BatchPolicy, LoadedVersion, load_version
from service.metrics import ServiceMetrics
from service.model_stats import ModelStats
from service.processors import InputProcessor, OutputProcessor, input_processor, output_processor
from service.report import TrainingReport
from service.repository import Fingerprint, list_models, scan_versions, version_dir
from service.samples import SampleIndex
from service.settings import Settings
from service.traffic import ModelTraffic
from service.version_policy import VersionPolicy

log = logging.getLogger("nnserve")


class _Observer:
    """What a version's batcher reports: to its Prometheus series and to its statistics."""

    def __init__(self, metrics: ServiceMetrics, name: str, version: str, stats: ModelStats) -> None:
        self._depth = metrics.queue_depth.labels(name, version)
        self._wait = metrics.queue_wait.labels(name, version)
        self._compute = metrics.compute.labels(name, version)
        self._size = metrics.batch_size.labels(name, version)
        self._lone = metrics.lone_runs.labels(name, version)
        self._padding = metrics.padding_rows.labels(name, version)
        self._stats = stats

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)
        self._stats.queue.add(seconds)

    def computed(self, batch_size: int, seconds: float, alone: bool, padding: int) -> None:
        if alone:
            self._lone.inc()
        if padding:
            self._padding.inc(padding)
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
    fingerprint: Fingerprint = ()
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


@dataclass(frozen=True)
class VersionFailure:
    message: str
    fingerprint: Fingerprint  # the files that failed: tried again only once they change


@dataclass
class SyncResult:
    served: list[int]
    failures: dict[int, str]  # version -> why it could not load (this sync's attempts)
    problem: str | None = None  # why nothing or not all of what was asked is served, beyond those failures

    @property
    def errors(self) -> list[str]:
        return [*self.failures.values(), *([self.problem] if self.problem else [])]


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.root = settings.repository
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.failed: dict[str, dict[int, VersionFailure]] = {}
        self.problems: dict[str, str] = {}  # model-level: no complete version, a pinned one missing, a bad policy
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="backend")  # loads too
        self.niced_executor = ThreadPoolExecutor(  # batches of models sharing a core with the loop
            max_workers=8, thread_name_prefix="backend-niced", initializer=lower_priority,
            initargs=(settings.compute_niceness,)) if settings.compute_niceness else self.executor
        self.board = ActivityBoard(settings.control_dir)  # who computes: whether a lone request takes every core
        self.traffic = ModelTraffic()  # which models were asked for lately: whether long batches run in the loop
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

    def names_to_serve(self) -> list[str]:
        """The models this server serves when nobody said otherwise: ``--model`` ones, else every one on disk."""
        return sorted(self.settings.models) if self.settings.models else list_models(self.root)

    # -- which versions -----------------------------------------------------------------------------------
    def policy(self, name: str, available: list[int], pinned: list[int] | None) -> VersionPolicy:
        """``pinned`` (the API's) > ``--model NAME:V`` > the newest version's config > ``--version-policy``."""
        pinned = pinned or self.settings.model_versions.get(name)
        if pinned:
            return VersionPolicy.model_validate({"specific": {"versions": pinned}})
        if available:
            try:
                raw = read_config_file(version_dir(self.root, name, available[-1])).get("version_policy")
            except (OSError, ValueError):
                raw = None  # the version's own load reports a bad config.json
            if raw is not None:
                try:
                    return VersionPolicy.model_validate(raw)
                except ValueError as error:
                    self.problems[name] = (f"model '{name}' version {available[-1]}: bad version_policy in "
                                           f"config.json ({error}); using --version-policy")
        return VersionPolicy.parse(self.settings.version_policy)

    # -- loading ------------------------------------------------------------------------------------------
    def _build(self, name: str, version: int, fingerprint: Fingerprint) -> ServedModel:
        loaded = load_version(version_dir(self.root, name, version), name, version, self.settings)
        served = self.serve(loaded)
        served.fingerprint = fingerprint
        return served

    def serve(self, loaded: LoadedVersion) -> ServedModel:
        config, policy = loaded.config, loaded.policy
        stats = ModelStats()
        executor = self.niced_executor if policy.compute_niceness else self.executor
        batcher = Batcher(
            loaded.backend.run, executor, _Observer(self.metrics, config.name, str(config.version), stats),
            max_batch_size=policy.max_batch_size, max_queue_delay_s=policy.max_queue_delay_s,
            max_queue_size=policy.max_queue_size, concurrency=policy.concurrency,
            pad_values={a.input: a.pad_value for a in config.ragged}, name=f"{config.name}:{config.version}",
            run_alone=loaded.backend.run_alone if loaded.backend.runs_alone else None, board=self.board,
            inline_s=policy.inline_s, batch_sizes=policy.batch_sizes, traffic=self.traffic,
            inline_mixed_s=policy.inline_mixed_s,
        )
        return ServedModel(config, loaded.report, loaded.backend, policy, InputCheck(config, policy.batching),
                           input_processor(config, self.settings.max_image_pixels), output_processor(config),
                           batcher, loaded.folder, stats, loaded.load_seconds, samples=loaded.samples)

    async def sync(self, name: str, pinned: list[int] | None = None, force: bool = False) -> SyncResult:
        """Serve what the repository and the policy say for ``name``; ``force`` rebuilds even unchanged versions
        (the repository API's load)."""
        async with self._lock:
            previous = self.problems.pop(name, None)
            on_disk = await asyncio.to_thread(scan_versions, self.root / name)
            policy = self.policy(name, sorted(on_disk), pinned)
            wanted = policy.select(sorted(on_disk))
            missing = [v for v in wanted if v not in on_disk]
            wanted = [v for v in wanted if v in on_disk]
            old = self.models.get(name, {})
            failures: dict[int, str] = {}
            new: dict[int, ServedModel] = {}
            for version in wanted:
                model = await self._current_or_built(name, version, on_disk[version], old, force, failures)
                if model is not None:
                    new[version] = model
            broken = [v for v in wanted if v not in new]
            if broken and policy.falls_back:  # older versions stand in, newest first
                for version in sorted((v for v in on_disk if v not in wanted), reverse=True):
                    if len(new) == len(wanted):
                        break
                    model = await self._current_or_built(name, version, on_disk[version], old, False, failures)
                    if model is not None:
                        new[version] = model
            problem = None
            if missing:
                problem = (f"model '{name}': version(s) {missing} not in {self.root / name} "
                           f"(complete versions: {sorted(on_disk)})")
            elif not on_disk:
                problem = f"model '{name}': no complete version under {self.root / name}"
            if problem:
                self.problems[name] = problem
                if problem != previous:
                    log.error("%s", problem)
            await self._swap(name, old, new)
            self._forget_failures(name, keep=lambda v: v in on_disk and v not in new)
            if old.keys() != new.keys() or any(old.get(v) is not m for v, m in new.items()):
                release_free_memory()
            return SyncResult(sorted(new), failures, problem or self._stand_in(name, broken, new))

    @staticmethod
    def _stand_in(name: str, broken: list[int], new: dict[int, ServedModel]) -> str | None:
        if not broken:
            return None
        standing = sorted(set(new) - set(broken))
        return (f"model '{name}': version(s) {broken} cannot load; serving "
                + (f"{standing} instead" if standing else "no version"))

    async def _current_or_built(self, name: str, version: int, fingerprint: Fingerprint,
                                old: dict[int, ServedModel], force: bool,
                                failures: dict[int, str]) -> ServedModel | None:
        """The serving model of ``version`` if its files are unchanged, else a new build (None if it fails, or
        if these very files failed before)."""
        current = old.get(version)
        if current is not None and current.fingerprint == fingerprint and not force:
            return current
        known = self.failed.get(name, {}).get(version)
        if known is not None and known.fingerprint == fingerprint and not force:
            return None
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._build, name, version, fingerprint)
        except ModelLoadFailed as error:
            self.metrics.load_failures.labels(name, str(version)).inc()
            self.metrics.load_failed.labels(name, str(version)).set(1)
            self.failed.setdefault(name, {})[version] = VersionFailure(error.message, fingerprint)
            failures[version] = error.message
            log.error("load failed: %s%s", error.message,
                      f" (version {version} keeps serving the files it loaded)" if current is not None else "")
            return current  # a changed version that cannot load: the one in memory serves on
        self._forget_failures(name, keep=lambda v: v != version)
        return model

    def _forget_failures(self, name: str, keep: Callable[[int], bool]) -> None:
        failed = self.failed.pop(name, {})
        for version in [v for v in failed if not keep(v)]:
            del failed[version]
            self.metrics.load_failed.labels(name, str(version)).set(0)
        if failed:
            self.failed[name] = failed

    async def _swap(self, name: str, old: dict[int, ServedModel], new: dict[int, ServedModel]) -> None:
        for version, model in new.items():
            if old.get(version) is not model:
                model.batcher.start()
        if new:
            self.models[name] = new
        else:
            self.models.pop(name, None)
        for version, model in new.items():
            if old.get(version) is not model:
                self._mark(model, ready=True)
                runtime = model.runtime()
                log.info("serving %s v%d on %s (%s onnxruntime threads, %s for a lone request, graph optimisation "
                         "%s, %s, loaded in %.2f s)", name, version, runtime.get("providers"),
                         runtime.get("intra_op_threads"), runtime.get("lone_request_threads") or "the same",
                         runtime.get("graph_optimization"), f"batches up to {model.policy.max_batch_size}"
                         if model.policy.batching else f"unbatched: {model.policy.reason}", model.load_seconds)
        retiring = [model for version, model in old.items() if new.get(version) is not model]
        for model in retiring:
            log.info("retiring %s v%d", name, model.version)
        await asyncio.gather(*(self._retire(model) for model in retiring))  # the new ones serve meanwhile

    async def unload(self, name: str) -> bool:
        """Stop serving ``name`` (its queue drains first); False if it was not served."""
        async with self._lock:
            versions = self.models.pop(name, None)
            if versions is None:
                return False
            await asyncio.gather(*(self._retire(model) for model in versions.values()))
            release_free_memory()
            return True

    async def _retire(self, model: ServedModel) -> None:
        model.retired = True
        await model.batcher.stop(self.settings.drain_timeout_s)
        self._mark(model, ready=False)  # its series leave /metrics (ServiceMetrics.exposition)
        model.backend.close()

    def _mark(self, model: ServedModel, ready: bool) -> None:
        version = str(model.version)
        self.metrics.model_ready.labels(model.name, version).set(1 if ready else 0)
        providers = ",".join(model.runtime().get("providers", []))
        info = self.metrics.model_info.labels(model.name, version, providers, model.config.sha256 or "")
        info.set(1 if ready else 0)
        self.metrics.queue_capacity.labels(model.name, version).set(model.policy.max_queue_size if ready else 0)

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        self.executor.shutdown(wait=True)
        if self.niced_executor is not self.executor:
            self.niced_executor.shutdown(wait=True)
        self.board.close()
