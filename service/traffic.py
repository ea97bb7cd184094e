"""Which models of this process were asked for lately: whether a long batch may compute in the event loop.

A batch computed in the event loop (``service.batcher``, ``inline_s``) skips two thread hand-offs where the loop
and the compute share one core anyway, but nothing else of the process moves meanwhile: a request for another
model waited up to ``inline_s`` (50 ms) behind it. Measured on the default server (2 cores), an MLP request beside
ResNet load at c=16 took 5.3-8.4 ms at the median against 0.7 ms alone (docs/benchmarks.md). So while another
model of the process had a request in the last ``MIXED_WINDOW_S``, only batches as quick as a lone request's
(``service.batcher.INLINE_MAX_S``) compute in the loop; a model asked for alone keeps the whole bound. A bound set
explicitly (``--event-loop-compute-ms``, a model's ``batching.event_loop_compute_ms``) holds whatever the traffic.
"""

from __future__ import annotations

MIXED_WINDOW_S = 1.0  # another model's request this recent makes the traffic mixed


class ModelTraffic:
    """The time (the event loop's clock) of each model's latest request in this process."""

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}
        self._live: dict[str, int] = {}  # batchers of each name running (a reloaded version has two a moment)

    def arrived(self, model: str, now: float) -> None:
        self._latest[model] = now

    def started(self, model: str) -> None:
        self._live[model] = self._live.get(model, 0) + 1

    def stopped(self, model: str) -> None:
        """A model no longer served (its last batcher stopped) is no one's other model any more."""
        self._live[model] = self._live.get(model, 1) - 1
        if self._live[model] <= 0:
            del self._live[model]
            self._latest.pop(model, None)

    def mixed(self, model: str, now: float) -> bool:
        """Whether another model had a request within ``MIXED_WINDOW_S`` of ``now``."""
        since = now - MIXED_WINDOW_S
        return any(when >= since for name, when in self._latest.items() if name != model)
