"""The data plane: what happens to an inference once a protocol has decoded it, the same for every protocol.

``/predict``, the Open Inference Protocol over HTTP (and over gRPC) only decode and encode; here, once, a request
is looked up, checked against the model's config (``service.input_check``), bounded (rows per request, the
model's queue), given its deadline, split into batches of at most ``max_batch_size`` rows, queued, computed and
answered, and counted (``Call``: the metrics and the access log's fields). Errors are ``service.errors`` types
with a stable ``code``; each protocol maps codes to its own status.

A request that looked its model up before a swap (a reload, a new version) and then awaited something (pictures
are decoded off the event loop) looks again before it queues: an accepted request is answered by whichever
version is serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from service.backends import Tensors
from service.drain import draining
from service.errors import (
    ClientGone,
    InvalidValue,
    MalformedRequest,
    NNServeError,
    NotReady,
    PayloadTooLarge,
    rejection_reason,
)
from service.metrics import RequestMetrics, ServiceMetrics
from service.model_stats import ModelStats
from service.processors import from_files
from service.processors.values import top_k_count
from service.registry import ModelRegistry, ServedModel
from service.repository_sync import RepositorySync
from service.settings import Settings
from service.shared_memory import SharedMemoryRegions

if TYPE_CHECKING:
    from service.hosting.body_budget import BodyBudget

UNKNOWN = "_unknown"  # the model label of requests for models that are not served (bounded cardinality)


@dataclass
class InferRequest:
    model: str
    version: int | None
    inputs: Tensors
    outputs: list[str] | None = None  # None: every output, in the config's order
    id: str | None = None
    timeout_s: float | None = None  # the client's own deadline (gRPC), if shorter than the model's
    company: int = 0  # requests of other clients the protocol expects shortly: a batch this one starts waits for
    # them (service.batcher.COMPANY_WAIT_S at most); gRPC sets it (service.protocols.oip_grpc.ActivePeers)


@dataclass
class InferResponse:
    model: str
    version: int
    outputs: Tensors
    id: str | None = None


@dataclass
class PredictRequest:
    """``/predict``: raw inputs for the model's processor, as JSON (``inputs``) or uploaded files."""

    model: str
    version: int | None
    inputs: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    top_k: Any = None


def parse_version(value: Any) -> int | None:
    """A requested model version (path segment, JSON or form field): absent, or a non-negative integer."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedRequest(f"model version must be a non-negative integer, received {value!r}")


class Call:
    """One request's accounting: outcome and latency metrics, the in-flight gauge, and what its access-log line
    says (model, version, batch size: written into ``record``)."""

    def __init__(self, metrics: ServiceMetrics, protocol: str, record: dict[str, Any],
                 on_end: Callable[[], None] | None = None) -> None:
        self.metrics = metrics
        self.protocol = protocol
        self.on_end = on_end
        self.record = record
        self.bound: RequestMetrics | None = None  # until bind(): a request for no served model
        self.stats: ModelStats | None = None
        self.rows = 0
        self.start = self.decoding = time.perf_counter()

    def bind(self, served: ServedModel) -> None:
        self.bound = self.metrics.for_request(served.name, str(served.version), self.protocol)
        self.stats = served.stats
        self.record["model"], self.record["version"] = served.name, served.version
        self.bound.in_flight.inc()

    def decode_started(self) -> None:
        self.decoding = time.perf_counter()

    def decoded(self, rows: int) -> None:
        self.record["batch_size"] = self.rows = rows
        if self.bound is not None:
            self.bound.preprocess.observe(time.perf_counter() - self.decoding)

    def __enter__(self) -> Call:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None,
                 ) -> None:
        bound = self.bound
        elapsed = time.perf_counter() - self.start
        if self.on_end is not None:
            self.on_end()
        if bound is not None:
            bound.in_flight.dec()
        else:
            bound = self.metrics.for_request(UNKNOWN, "", self.protocol)
        if self.stats is not None:
            if error is None:
                self.stats.answered(self.rows, elapsed)
            else:
                self.stats.failed(elapsed)
        if error is None:
            bound.count("success", "200")
        elif isinstance(error, NNServeError):
            reason = rejection_reason(error)
            if reason:
                bound.reject(reason)
            bound.count(reason or ("error" if error.status >= 500 else "invalid"), str(error.status))
        elif isinstance(error, Exception) and not isinstance(error, ClientGone):
            bound.count("error", "500")
        else:  # cancelled or disconnected: the client went away
            bound.count("cancelled", "499")
        bound.latency.observe(elapsed)


def _refuse_nan(outputs: Tensors, inputs: Tensors) -> None:
    """A NaN output is the model's answer to inputs outside what it can take (finite, but 3e38, say): an error
    naming it, never ``null`` in a 200."""
    for name, array in outputs.items():
        if array.dtype.kind == "f" and array.size and np.isnan(array).any():
            largest = max((float(np.abs(a).max()) for a in inputs.values() if a.dtype.kind == "f" and a.size),
                          default=0.0)
            raise InvalidValue(f"output '{name}' holds {int(np.isnan(array).sum())} NaN value(s): the inputs are "
                               f"outside what the model can take (largest magnitude {largest:.3g})")


class DataPlane:
    def __init__(self, settings: Settings, metrics: ServiceMetrics, registry: ModelRegistry) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.repository = RepositorySync(registry, settings)  # the repository on disk and the API's orders
        self.shared_memory = SharedMemoryRegions(self.repository.control.folder) if settings.shared_memory else None
        self.body_budget: BodyBudget | None = None  # the process's bytes in flight (service.app sets it)
        self.started = False
        self.accepting = False
        self.calls = 0  # begun, every protocol
        self.ended = 0  # (service.hosting.memory collects and trims when both stand still)

    @property
    def ready(self) -> bool:
        """Loaded and warmed, accepting, and not draining (a stop signal turns readiness off at once)."""
        return self.started and self.accepting and not draining() and bool(self.registry.models)

    def require_accepting(self) -> None:
        if not self.accepting:
            raise NotReady("server is starting up or shutting down; not accepting requests")

    def call(self, protocol: str, record: dict[str, Any]) -> Call:
        self.calls += 1
        return Call(self.metrics, protocol, record, self._ended)

    def _ended(self) -> None:
        self.ended += 1

    def refused_unread(self, protocol: str) -> None:
        """A request refused before its body was read (it would pass the byte budget; its model unknown yet):
        counted as an overload, every protocol alike."""
        bound = self.metrics.for_request(UNKNOWN, "", protocol)
        bound.reject("overload")
        bound.count("overload", "429")

    def model(self, name: str, version: int | None = None) -> ServedModel:
        return self.registry.get(name, version)

    # -- inference ----------------------------------------------------------------------------------------
    async def infer(self, call: Call, request: InferRequest) -> InferResponse:
        self.require_accepting()
        served = self.registry.get(request.model, request.version)
        call.bind(served)
        wanted = self._outputs(served, request.outputs)
        rows, key = self._check(served, request.inputs, call)
        outputs = await self._run(served, request.inputs, rows, key, request.timeout_s, request.company)
        _refuse_nan(outputs, request.inputs)
        return InferResponse(served.name, served.version, {name: outputs[name] for name in wanted}, request.id)

    async def predict(self, call: Call, request: PredictRequest) -> dict[str, Any]:
        self.require_accepting()
        served = self.registry.get(request.model, request.version)
        call.bind(served)
        classes = served.config.classification
        top_k = top_k_count(request.top_k, len(classes.labels)) if classes else 0
        if request.files:
            if len(request.files) > self.settings.max_items_per_request:
                raise PayloadTooLarge(f"{len(request.files)} files in one request; the limit is "
                                      f"{self.settings.max_items_per_request}")
            tensors = await asyncio.to_thread(from_files, served.inputs, served.name, request.files)
            served = self._still_serving(served, request.version)
        else:
            tensors = served.inputs.from_json(request.inputs)
        rows, key = self._check(served, tensors, call, trusted=served.config.processor is not None)
        outputs = await self._run(served, tensors, rows, key, None)
        _refuse_nan(outputs, tensors)
        return {"model": served.name, "version": served.version, **served.outputs.respond(outputs, top_k)}

    def _still_serving(self, served: ServedModel, version: int | None) -> ServedModel:
        """After an await: the version to queue on (the newest, if ``served`` was swapped out meanwhile)."""
        if not served.retired:
            return served
        self.require_accepting()
        return self.registry.get(served.name, version)

    def _outputs(self, served: ServedModel, requested: list[str] | None) -> list[str]:
        names = served.output_names
        if requested is None:
            return names
        for name in requested:
            if name not in names:
                raise MalformedRequest(f"unknown output {name!r}; model '{served.name}' has {names}")
        return requested

    def _check(self, served: ServedModel, inputs: Tensors, call: Call, trusted: bool = False
               ) -> tuple[int, Hashable]:
        rows, key = served.check.check(inputs, trusted)
        if rows > self.settings.max_items_per_request:
            raise PayloadTooLarge(f"{rows} inputs in one request; the limit is {self.settings.max_items_per_request}")
        policy = served.policy
        if rows > policy.max_queue_size:
            raise PayloadTooLarge(f"{rows} rows in one request can never fit model '{served.name}''s queue of "
                                  f"{policy.max_queue_size} samples")
        call.decoded(rows)
        return rows, key

    async def _run(self, served: ServedModel, inputs: Tensors, rows: int, key: Hashable,
                   client_timeout_s: float | None, company: int = 0) -> Tensors:
        policy = served.policy
        timeout = policy.timeout_s if client_timeout_s is None else min(policy.timeout_s, client_timeout_s)
        if not policy.batching or rows <= policy.max_batch_size:
            return await served.batcher.submit(inputs, rows, timeout, key, company)
        step = policy.max_batch_size  # larger than one batch: queued as several, answered as one
        parts = [asyncio.ensure_future(served.batcher.submit({n: a[i:i + step] for n, a in inputs.items()},
                                                             min(step, rows - i), timeout, key))
                 for i in range(0, rows, step)]
        try:
            await asyncio.wait(parts, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in parts:
                task.cancel()  # a failed part fails the request: the others leave their queue
        failed = next((t for t in parts if t.done() and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
        results = [t.result() for t in parts]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}
