"""``nnserve import FILE --name NAME``: any ONNX file into the model repository, checked by the server's own
loading code before it is published.

The file is copied into a hidden version folder with a config made of what the user gave (``--config``,
``--labels``, ``--image-preprocessing``, ``--max-batch-size``); ``service.loading.load_version`` then does there
exactly what a server does at start-up (onnxruntime loads it, the signature is read and the config completed and
checked against it, batching decided and probed, one warm-up inference run); only if all of that succeeds is the
completed config written and the folder renamed into place as the next version. Whatever fails, nothing is
published and the message names the file and the reason. A model that keeps tensors in files beside it (ONNX
external data, ``service.onnx_external_data``) has them copied into the version folder with it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from service.config import CONFIG_FILE, ModelConfig
from service.errors import ModelLoadFailed
from service.loading import LoadedVersion, load_version
from service.onnx_external_data import MalformedModel, external_data_locations, unsafe_location
from service.report import TrainingReport
from service.repository import MODEL_FILE, OWN_FILES, check_model_name, data_files, publish
from service.settings import Settings

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's ImageNet classifiers: RGB, shorter side to 256 (for 224), centre crop, per-channel mean/std
    "imagenet": {"kind": "image", "color_mode": "RGB", "resize": "shorter-side-crop", "mean": IMAGENET_MEAN,
                 "std": IMAGENET_STD},
    # the same constants on BGR pictures, as models trained through OpenCV's imread expect (PaddleClas's)
    "imagenet-bgr": {"kind": "image", "color_mode": "BGR", "resize": "shorter-side-crop", "mean": IMAGENET_MEAN,
                     "std": IMAGENET_STD},
    # pixels scaled to [0, 1], resized to fit and padded
    "unit": {"kind": "image", "mean": 0.0, "std": 1.0},
    # greyscale, light on dark, Fashion-MNIST style (as the built-in models)
    "mnist": {"kind": "image", "color_mode": "L", "mean": 0.2860, "std": 0.3530, "auto_invert": True},
}


class ImportFailed(RuntimeError):
    """The file cannot be imported; nothing was written."""


@dataclass
class ImportOptions:
    name: str
    repository: Path = Path("models")
    labels: Path | None = None
    config: Path | None = None
    image_preprocessing: str | None = None
    scores: str | None = None  # "probabilities" | "logits"
    max_batch_size: int | None = None


def read_labels(path: Path) -> list[str]:
    """One label per line (a JSON list also works); blank lines at the end are ignored."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ImportFailed(f"{path}: expected a JSON list of strings")
        return labels
    return text.rstrip("\n").split("\n")


def image_preprocessing(spec: str) -> dict[str, Any]:
    """A preset's name, a JSON object, or a JSON file."""
    if spec in PRESETS:
        return dict(PRESETS[spec])
    text = Path(spec).read_text() if not spec.lstrip().startswith("{") else spec
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ImportFailed(f"--image-preprocessing: expected a preset ({', '.join(PRESETS)}) or a JSON object")
    return {"kind": "image", **value}


def requested_config(options: ImportOptions) -> dict[str, Any]:
    """What the user asked for, before the graph completes it."""
    raw: dict[str, Any] = {}
    if options.config is not None:
        raw = json.loads(options.config.read_text())
        if not isinstance(raw, dict):
            raise ImportFailed(f"{options.config}: expected a JSON object")
    if options.image_preprocessing:
        raw["processor"] = {**image_preprocessing(options.image_preprocessing), **raw.get("processor", {})}
    if options.labels is not None:
        raw["classification"] = {"labels": read_labels(options.labels), **raw.get("classification", {})}
    if options.scores and "classification" in raw:
        raw["classification"]["activation"] = "softmax" if options.scores == "logits" else "none"
    if options.max_batch_size is not None:
        raw["max_batch_size"] = options.max_batch_size
    raw["name"] = options.name
    return raw


def external_data_files(source: Path) -> list[str]:
    """The files, relative to its folder, in which ``source`` keeps tensors: each a regular file inside that
    folder, none named as a version folder's own files."""
    try:
        locations = external_data_locations(source.read_bytes())
    except (OSError, MalformedModel):  # not a model: onnxruntime's refusal names what is wrong with it
        return []
    folder = source.parent.resolve()
    for location in locations:
        why = unsafe_location(location)
        if why is None and PurePosixPath(location).parts[0].lower() in OWN_FILES:
            why = "has the name of a file nnserve writes beside model.onnx"
        path = source.parent / location
        if why is None and not (path.is_file() and path.resolve().is_relative_to(folder)):
            why = f"is not a file in {source.parent}"
        if why is not None:
            raise ImportFailed(f"its external data file {location!r} {why}")
    return locations


def import_model(source: Path, options: ImportOptions, settings: Settings | None = None,
                 report: TrainingReport | None = None) -> LoadedVersion:
    """Publish ``source`` (with ``report`` beside it, if any) as the next version of ``options.name``; return what
    the server would serve."""
    try:
        check_model_name(options.name)
        if not source.is_file():
            raise ImportFailed("no such file")
        raw = requested_config(options)
    except (ValueError, OSError) as error:  # json.JSONDecodeError is a ValueError
        raise ImportFailed(str(error)) from error
    external_files = external_data_files(source)
    settings = settings or Settings(providers="cpu", warmup_batch_sizes=[1], repository=options.repository)
    loaded: list[LoadedVersion] = []

    def prepare(folder: Path, version: int) -> None:
        shutil.copyfile(source, folder / MODEL_FILE)
        for location in external_files:
            (folder / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.parent / location, folder / location)
        (folder / CONFIG_FILE).write_text(json.dumps(raw))
        if report is not None:
            report.dump(folder)
        try:
            result = load_version(folder, options.name, version, settings)
        except ModelLoadFailed as error:
            raise ImportFailed(error.message) from error
        result.config.dump(folder)
        result.backend.close()
        loaded.append(result)

    version = publish(options.repository, options.name, prepare)
    result = loaded[0]
    config = result.config.model_copy(update={"version": version})
    return LoadedVersion(config, result.report, result.backend, result.policy,
                         options.repository / options.name / str(version), result.load_seconds, result.warmup)


def summary(source: Path, loaded: LoadedVersion) -> str:
    config, policy = loaded.config, loaded.policy
    size = (loaded.folder / MODEL_FILE).stat().st_size
    lines = [f"published {config.name} version {config.version} at {loaded.folder}",
             f"  file        {source} ({size / 1e6:.1f} MB, sha256 {config.sha256})"]
    external = data_files(loaded.folder)
    if external:
        megabytes = sum(p.stat().st_size for p in external) / 1e6
        lines.append(f"  data files  {', '.join(str(p.relative_to(loaded.folder)) for p in external)} "
                     f"({megabytes:.1f} MB of external data, copied beside model.onnx)")
    lines += [f"  input       {t.describe()}" for t in config.inputs]
    lines += [f"  output      {t.describe()}" for t in config.outputs]
    open_axes = [f"{t.name}: {[i for i, d in enumerate(t.shape) if d == -1]}" for t in config.inputs + config.outputs
                 if -1 in t.shape]
    lines.append(f"  open axes   {'; '.join(open_axes) or 'none'}")
    if policy.batching:
        lines.append(f"  batching    dynamic, up to the server's --max-batch-size ({policy.max_batch_size} by default)"
                     f" along axis 0: {policy.reason}" if config.max_batch_size is None else
                     f"  batching    dynamic, up to {policy.max_batch_size} along axis 0 ({policy.reason})")
    else:
        lines.append(f"  batching    none, one request at a time: {policy.reason}")
    if policy.batch_sizes:
        lines.append(f"  batch sizes {', '.join(map(str, policy.batch_sizes))}: a batch padded to the next, each size "
                     f"on a session of its own")
    lines.append(f"  /predict    {_describe_processor(config)}")
    if config.classification is not None:
        c = config.classification
        kind = "logits: softmax applied" if c.activation == "softmax" else \
            "taken as probabilities; --scores logits if they are logits"
        lines.append(f"  labels      {len(c.labels)} on output '{c.output}' ({kind})")
    lines.append(f"  warm-up     {loaded.warmup} (loaded and warmed in {loaded.load_seconds:.2f} s)")
    if policy.batching and policy.max_batch_size > 1:
        lines.append(f"  speed       {batching_speed(loaded)}")
    return "\n".join(lines)


BATCHING_PAYS = 1.1  # batch 8 must compute this many times batch 1's samples/s for combining requests to pay


def batching_speed(loaded: LoadedVersion, seconds: float = 0.3) -> str:
    """Batch 1 against batch 8 on one onnxruntime thread, what each process of the default server on the CPU
    runs, and whether combining requests pays there: for some models it does not (docs/benchmarks.md: the
    PP-LCNet orientation model computes 8 pictures slower per picture than one, and serves 1.1x more with
    ``max_batch_size`` 1)."""
    from service.bench.inprocess import cpu_session, samples_per_s
    from service.warmup import example_feeds

    session = cpu_session(loaded.folder / MODEL_FILE, threads=1)
    signature = loaded.backend.signature
    rates = {rows: samples_per_s(session, example_feeds(loaded.config, signature, rows), rows, seconds)
             for rows in (1, 8)}
    gain = rates[8] / rates[1]
    verdict = f"combining requests pays ({gain:.2f}x)" if gain >= BATCHING_PAYS else \
        f"combining requests does not pay ({gain:.2f}x): imported with --max-batch-size 1 it would serve more"
    return (f"one onnxruntime thread (a default server process's): batch 1 {rates[1]:,.0f} samples/s, batch 8 "
            f"{rates[8]:,.0f}; {verdict}")


def _describe_processor(config: ModelConfig) -> str:
    p = config.processor
    if p is None:
        return "named tensors in and out ({\"inputs\": {name: values}})"
    if p.kind == "sequence":
        return f"sequences of {p.features}-value frames"
    resize = "fit and pad" if p.resize == "fit-pad-bilinear" else \
        f"shorter side to {p.resize_shorter_to or round(min(p.height, p.width) / 0.875)}, centre crop"
    return (f"pictures: {p.color_mode} {p.width}x{p.height} ({resize}), {p.layout}, "
            f"(v * {p.scale:.5g} - {p.mean}) / {p.std}")
