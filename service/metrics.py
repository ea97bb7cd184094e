"""Every Prometheus object nnserve exports, declared once, on a registry owned by one app.

Names are a public contract: the Grafana dashboard and the alert rules in ``deploy/`` use them, and a test
checks that each name they mention is in a live ``/metrics`` scrape.

With ``--workers N > 1`` every process writes its samples to ``$PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
aggregates them (prometheus-client's multiprocess mode): counters and histograms add up; each gauge says how
(queue depth and in-flight requests add up over live processes, readiness is the minimum).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

_pid = os.getpid()


def _this_process() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _pid_without_a_system_call() -> None:
    """In multiprocess mode prometheus-client asks ``os.getpid()`` at every ``inc``/``observe`` whether the
    process forked: 19 system calls a request here (strace). Its documented hook, a process identifier
    (``values.MultiProcessValue``), gets this process's pid, kept up to date across forks. Done at import,
    before any metric exists: metrics take ``values.ValueClass`` when they are made
    (``tests/service/test_metrics_pid.py`` checks both)."""
    if getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue(_this_process)  # type: ignore[no-untyped-call]


os.register_at_fork(after_in_child=_forked)
_pid_without_a_system_call()

# Latency buckets from 100 µs to 10 s: a lone MLP request is ~0.3 ms, a saturated ResNet queue ~100 ms.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The metrics of one app instance. Labels ``model`` and ``version`` everywhere a model is known."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        mv = ["model", "version"]
        self.requests = Counter(
            "nnserve_requests", "Requests by protocol, outcome and HTTP status code.",
            [*mv, "protocol", "outcome", "code"], registry=r,
        )
        self.request_latency = Histogram(
            "nnserve_request_latency_seconds", "End-to-end latency of a request inside the server.",
            [*mv, "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.preprocess_latency = Histogram(
            "nnserve_preprocess_seconds", "Decoding and validating a request's inputs.",
            [*mv, "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "nnserve_queue_wait_seconds", "Time an item waited in the batcher's queue before its batch ran.",
            mv, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute = Histogram(
            "nnserve_compute_seconds", "onnxruntime time of one batch.",
            mv, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.lone_runs = Counter(
            "nnserve_lone_runs_total", "Batches of one request computed while nothing else computed, on the model's "
            "lone session (every core; service.activity).", mv, registry=r,
        )
        self.padding_rows = Counter(
            "nnserve_batch_padding_rows_total", "Rows added to batches to reach an allowed batch size "
            "(service.batch_sizes): computed, their outputs dropped.", mv, registry=r,
        )
        self.batch_size = Histogram(
            "nnserve_batch_size", "Samples per onnxruntime call.", mv, buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "nnserve_queue_depth", "Items waiting in the batcher's queue.", mv,
            multiprocess_mode="livesum", registry=r,
        )
        self.queue_capacity = Gauge(
            "nnserve_queue_capacity", "Size of the batcher's queue.", mv,
            multiprocess_mode="livesum", registry=r,
        )
        self.in_flight = Gauge(
            "nnserve_in_flight_requests", "Requests being handled for a model.", mv,
            multiprocess_mode="livesum", registry=r,
        )
        self.rejections = Counter(
            "nnserve_rejections", "Requests refused: overload (429), timeout (504), invalid (4xx).",
            [*mv, "reason"], registry=r,
        )
        self.model_info = Gauge(
            "nnserve_model_info", "1 for each served model version, with its providers and sha256.",
            [*mv, "providers", "sha256"], multiprocess_mode="livemax", registry=r,
        )
        self.model_ready = Gauge(
            "nnserve_model_ready", "1 while a model version is loaded and ready.", mv,
            multiprocess_mode="livemin", registry=r,
        )
        self.load_failures = Counter(
            "nnserve_model_load_failures", "Model versions that failed to load.", ["model", "version"], registry=r,
        )
        self.load_failed = Gauge(
            "nnserve_model_load_failed", "1 while a model version on disk cannot load: it is not served (an older "
            "version may stand in) until its files change.", mv, multiprocess_mode="livemax", registry=r,
        )

        self._per_request: dict[tuple[str, str, str], RequestMetrics] = {}

    def for_request(self, model: str, version: str, protocol: str) -> RequestMetrics:
        """The per-request metrics of one model version and protocol, labelled once and kept."""
        key = (model, version, protocol)
        bound = self._per_request.get(key)
        if bound is None:
            bound = self._per_request[key] = RequestMetrics(self, model, version, protocol)
        return bound

    def exposition(self) -> bytes:
        """The text of ``/metrics``: this process's registry, or every worker's in multiprocess mode; without
        the zeros of the series that say a model version exists (a retired version's readiness and queue
        capacity, a failure since resolved), which would otherwise stay forever: prometheus-client cannot remove
        a series in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
        else:
            text = generate_latest(self.registry)
        return b"\n".join(line for line in text.split(b"\n") if not _absent(line))


PRESENCE = (b"nnserve_model_ready{", b"nnserve_model_info{", b"nnserve_model_load_failed{", b"nnserve_queue_capacity{")


def _absent(line: bytes) -> bool:
    return line.startswith(PRESENCE) and line.endswith((b" 0.0", b" 0"))


class RequestMetrics:
    """The children one request touches, bound to (model, version, protocol): ``labels()`` costs several times
    what ``inc()`` or ``observe()`` does, and a busy server would pay it thousands of times a second."""

    def __init__(self, metrics: ServiceMetrics, model: str, version: str, protocol: str) -> None:
        self._metrics = metrics
        self.latency = metrics.request_latency.labels(model, version, protocol)
        self._requests = metrics.requests.labels
        self._rejections = metrics.rejections.labels
        self._labels = (model, version, protocol)
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._reasons: dict[str, Any] = {}

    # Labelled on first use: a request that names no served model never touches these, and must not make
    # them appear (as zero-valued series) in /metrics.
    @functools.cached_property
    def in_flight(self) -> Any:
        return self._metrics.in_flight.labels(*self._labels[:2])

    @functools.cached_property
    def preprocess(self) -> Any:
        return self._metrics.preprocess_latency.labels(*self._labels)

    def count(self, outcome: str, code: str) -> None:
        child = self._outcomes.get((outcome, code))
        if child is None:
            child = self._outcomes[(outcome, code)] = self._requests(*self._labels, outcome, code)
        child.inc()

    def reject(self, reason: str) -> None:
        child = self._reasons.get(reason)
        if child is None:
            child = self._reasons[reason] = self._rejections(*self._labels[:2], reason)
        child.inc()
