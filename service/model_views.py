"""What the server shows of itself and of a served model, from its config, its optional training report and its
backend: the OIP server and model metadata, Triton's model configuration view, and the model card of
``GET /models``. Every protocol shows the same facts.

A variant (an INT8 model made by ``nnserve quantize``; its report names its source) and its source show each
other: the variant's card says what it was made from and what its gates and speed measured, the source's card
lists its served variants, and whether each was made from the version now served (``current``)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from service.backends import PLATFORMS
from service.config import TensorConfig
from service.datatypes import DTYPES
from service.registry import ServedModel
from service.samples import SAMPLES_DIR, read_frames
from service.warmup import example_feeds

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_repository(unload_dependents)"]
TRITON_TYPES = {name: f"TYPE_{'STRING' if name == 'BYTES' else name}" for name in DTYPES}


def server_version() -> str:
    try:
        return version("nnserve")
    except PackageNotFoundError:
        return "0+unknown"


def server_metadata(shared_memory: bool = True) -> dict[str, Any]:
    extensions = [*EXTENSIONS, "system_shared_memory"] if shared_memory else EXTENSIONS
    return {"name": "nnserve", "version": server_version(), "extensions": extensions}


def _oip_tensor(t: TensorConfig) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": t.shape}


def variant_of(served: ServedModel) -> dict[str, Any] | None:
    """What a variant was made from, and what its gates and speed measurement found."""
    q = served.report.quantization if served.report else None
    if q is None:
        return None
    return {"name": q.source.name, "version": q.source.version, "sha256": q.source.sha256, "precision": "INT8",
            "top1_agreement": q.top1_agreement,
            "accuracy": {"source": q.source_accuracy, "variant": q.variant_accuracy},
            "speedup": {key: speed.speedup for key, speed in q.speed.items()}}


def variants(served: ServedModel, others: Sequence[ServedModel]) -> list[dict[str, Any]]:
    """The served models made from this one; ``current``: from this very version and file."""
    out = []
    for other in others:
        q = other.report.quantization if other.report else None
        if q is None or q.source.name != served.name or other is served:
            continue
        out.append({"name": other.name, "version": other.version, "precision": "INT8",
                    "from_version": q.source.version,
                    "current": q.source.version == served.version and q.source.sha256 == served.config.sha256,
                    "top1_agreement": q.top1_agreement, "accuracy": q.variant_accuracy,
                    "speedup": {key: speed.speedup for key, speed in q.speed.items()}})
    return out


def model_metadata(served: ServedModel, versions: list[int], others: Sequence[ServedModel] = ()) -> dict[str, Any]:
    config, report, runtime = served.config, served.report, served.runtime()
    source = variant_of(served)
    return {
        "name": config.name,
        "versions": [str(v) for v in versions],
        "platform": config.platform,
        "inputs": [_oip_tensor(t) for t in config.inputs],
        "outputs": [_oip_tensor(t) for t in config.outputs],
        "parameters": {
            "version": config.version, "family": report.family if report else None, "task": config.task,
            "labels": config.classification.labels if config.classification else None,
            **runtime,
            "sha256": config.sha256,
            "onnx_test_accuracy": report.metrics.onnx_test_accuracy if report and report.metrics else None,
            "max_batch_size": served.policy.max_batch_size, "batching": served.policy.reason,
            "processor": config.processor.kind if config.processor else None,
            "variant_of": f"{source['name']}:{source['version']}" if source else None,
            "variants": [v["name"] for v in variants(served, others)],
        },
    }


def triton_config(served: ServedModel, versions: list[int]) -> dict[str, Any]:
    """Triton's model configuration view (what ``get_model_config`` shows), plus nnserve's own config."""
    config, policy = served.config, served.policy
    ragged = {a.input for a in config.ragged}

    def tensor(t: TensorConfig) -> dict[str, Any]:
        out: dict[str, Any] = {"name": t.name, "data_type": TRITON_TYPES[t.datatype],
                               "dims": t.shape[1:] if policy.batching else t.shape}
        if t.name in ragged:
            out["allow_ragged_batch"] = True
        return out

    view: dict[str, Any] = {
        "name": config.name, "platform": config.platform, "backend": PLATFORMS[config.platform].backend,
        "max_batch_size": policy.max_batch_size,
        "input": [tensor(t) for t in config.inputs],
        "output": [{**tensor(t), "label_filename": ""} for t in config.outputs],
        "instance_group": [{"count": policy.concurrency,
                            "kind": "KIND_GPU" if "CUDA" in str(served.runtime().get("providers")) else "KIND_CPU"}],
        "version_policy": {"specific": {"versions": versions}},
        "nnserve": config.model_dump(mode="json", exclude_none=True),
    }
    if policy.batching:
        view["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(policy.max_queue_delay_s * 1e6),
            "default_queue_policy": {"max_queue_size": policy.max_queue_size, "timeout_action": "REJECT",
                                     "default_timeout_microseconds": int(policy.timeout_s * 1e6)},
        }
    return view


def model_card(served: ServedModel, versions: list[int], others: Sequence[ServedModel] = ()) -> dict[str, Any]:
    """``GET /models``: one served model, what it takes and gives, how it runs, and what was measured of it."""
    config, report = served.config, served.report
    metrics = report.metrics if report else None
    lacks = []
    if report is None:
        lacks.append("training report (no dataset, training or accuracy figures: an imported model)")
    if config.classification is None:
        lacks.append("labels (/predict answers with the output tensors)")
    if served.samples is None:
        lacks.append("published samples (no test-set items to try it on; GET /models/{name}/samples gives "
                     + ("an example built from its signature)" if config.processor is None else "none)"))
    return {
        "name": config.name, "version": config.version, "versions": versions,
        "family": report.family if report else None, "task": config.task, "description": config.description,
        "inputs": [{**_oip_tensor(t), "dtype": _numpy_name(t.datatype)} for t in config.inputs],
        "outputs": [{**_oip_tensor(t), "dtype": _numpy_name(t.datatype)} for t in config.outputs],
        "labels": config.classification.labels if config.classification else None,
        "preprocessing": config.processor.model_dump(mode="json") if config.processor else None,
        "accuracy": {"onnx_test": metrics.onnx_test_accuracy, "torch_test": metrics.torch_test_accuracy,
                     "per_class": metrics.per_class_accuracy} if metrics else None,
        "variant_of": variant_of(served), "variants": variants(served, others),
        **served.runtime(),
        "sha256": config.sha256, "load_seconds": round(served.load_seconds, 3),
        "batching": {"max_batch_size": served.policy.max_batch_size, "reason": served.policy.reason,
                     "max_queue_size": served.policy.max_queue_size,
                     "max_queue_delay_ms": served.policy.max_queue_delay_s * 1000,
                     "request_timeout_ms": served.policy.timeout_s * 1000,
                     "in_event_loop_up_to_ms": served.policy.inline_s * 1000,
                     "in_event_loop_beside_other_models_up_to_ms": served.policy.inline_mixed_s * 1000,
                     "allowed_batch_sizes": list(served.policy.batch_sizes),  # []: any size
                     "off_loop_compute_niceness": served.policy.compute_niceness},
        "config": config.model_dump(mode="json", exclude_none=True),
        "report": report.model_dump(mode="json", by_alias=True, exclude_none=True) if report else None,
        "lacks": lacks,
    }


def model_samples(served: ServedModel) -> dict[str, Any]:
    """``GET /models/{name}/samples``: what a person can try a model on. Published test-set items with their true
    labels (``service.samples``), each with its file's path (relative to the server's base URL) and, for a
    sequence, the frames ``/predict`` takes; a model with no processor and no samples gets one example of every
    input built from its signature (the warm-up feed: the right shape and datatype, zeros or the config's value)."""
    config, index = served.config, served.samples
    kind = config.processor.kind if config.processor else "tensors"
    body: dict[str, Any] = {"model": served.name, "version": served.version, "kind": kind, "source": "none",
                            "samples": []}
    if index is not None:
        base = f"models/{served.name}/versions/{served.version}/samples/"
        body.update(source="repository", dataset=index.dataset, split=index.split)
        for item in index.items:
            entry = {**item.model_dump(exclude_none=True), "url": base + item.file}
            if kind == "sequence":
                entry["inputs"] = read_frames(served.path / SAMPLES_DIR / item.file)
            body["samples"].append(entry)
    elif kind == "tensors":
        feeds = example_feeds(config, served.backend.signature, 1)
        body.update(source="signature", samples=[{"label": None, "inputs": {
            t.name: {"datatype": t.datatype, "shape": list(feeds[t.name].shape), "value": _nested(feeds[t.name])}
            for t in config.inputs}}])
    return body


def _nested(value: Any) -> Any:
    """An array as nested JSON lists (what ``/predict`` takes), BYTES elements as text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [_nested(v) for v in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _numpy_name(datatype: str) -> str:
    return "bytes" if datatype == "BYTES" else str(DTYPES[datatype])
