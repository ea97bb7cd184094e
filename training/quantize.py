"""``nnserve quantize NAME``: an INT8 variant of a published FP32 model, published as a model of its own
(``NAME-int8``) only if it passes the gates of ``training.quantize_gates``.

Static quantisation by ``onnxruntime.quantization.quantize_static`` in the QDQ format (QuantizeLinear /
DequantizeLinear pairs around each operator, which onnxruntime fuses into int8 kernels at load): int8 weights,
symmetric, one scale per output channel; uint8 activations, asymmetric, their ranges calibrated (MinMax unless
asked otherwise) on inputs made by the service's own processors (``training.calibration``): for a built-in model
1,024 training images drawn with a seed, for an imported one the inputs its user gives. On this machine's AVX-512
VNNI cores that ran the committed ResNet 1.9x and the CNN 2.0x faster at batch 64 with the same test accuracy to
within 0.06 points (docs/benchmarks.md); the source file is quantized as it is (onnxruntime's optional
pre-processing changed neither the graph's int8 operators nor the accuracy of the ResNet).

The variant's config is its source's completed config (labels, processor, batching, ragged axes, runtime and
warm-up settings) under its own name and sha256, checked by ``service.loading.load_version`` exactly as a server
loads it before its folder is renamed into place (``service.repository.publish``): whatever fails, nothing is
published. Its report names the source (name, version, sha256), the calibration and evaluation sets (source,
count, seed), both accuracies, the agreement, the operators that run in int8 and the measured raw speed-up at
batch 1 and 64.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from service.backends import Tensors
from service.config import ModelConfig
from service.errors import ModelLoadFailed
from service.loading import LoadedVersion, load_version
from service.report import Metrics, Quantization, SourceModel, TrainingReport
from service.repository import MODEL_FILE, list_versions, publish
from service.settings import Settings
from training.calibration import DATASETS, InputSet, dataset_set, user_set
from training.provenance import provenance
from training.quantize_gates import (
    AGREEMENT_MIN,
    MAX_ACCURACY_DROP,
    MIN_SPEEDUP,
    SPEED_BATCHES,
    check_agreement,
    check_speed,
    compare,
    measure_speed,
)
from training.samples import samples_for_version

CALIBRATION_COUNT = 1024
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM"})
TOOL = "onnxruntime.quantization.quantize_static"


class QuantizeFailed(RuntimeError):
    """The source or the options cannot be quantized (no such model, already quantized, onnxruntime refused)."""


@dataclass
class QuantizeOptions:
    model: str  # the published FP32 source
    version: int | None = None  # default: its newest
    repository: Path = Path("models")
    name: str | None = None  # the variant's model name; default "<model>-int8"
    data_dir: Path | None = None
    calibration: Path | None = None  # a user's .npz or folder of pictures; default: the data set the report names
    evaluation: Path | None = None  # default: the data set's test split, else the calibration inputs
    count: int = CALIBRATION_COUNT
    evaluation_count: int | None = None  # default: every evaluation input
    seed: int = 0
    method: str = "minmax"
    min_agreement: float = AGREEMENT_MIN
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_speedup: float = MIN_SPEEDUP  # 0: no speed gate
    speed_batches: tuple[int, ...] = SPEED_BATCHES
    speed_rounds: int = 5
    speed_seconds: float = 0.5

    @property
    def target(self) -> str:
        return self.name or f"{self.model}-int8"


@dataclass
class QuantizeResult:
    name: str
    version: int
    path: Path
    config: ModelConfig
    report: TrainingReport

    @property
    def quantization(self) -> Quantization:
        assert self.report.quantization is not None
        return self.report.quantization


class _Feeds(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, batches: list[Tensors]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> Tensors | None:
        return next(self._batches, None)


def check_settings(repository: Path) -> Settings:
    """Loading to check, as a server loads (batching probed, one warm-up), without timing graph optimisation
    levels (1.6 s per level at 224x224): the server that serves the model chooses its own."""
    return Settings(providers="cpu", warmup_batch_sizes=[1], graph_optimization="all", repository=repository)


def load_source(options: QuantizeOptions) -> LoadedVersion:
    """The FP32 source as a server loads it (config completed, batching decided)."""
    folder = options.repository / options.model
    versions = list_versions(folder)
    if not versions:
        raise QuantizeFailed(f"model '{options.model}' has no versions under {options.repository}")
    version = options.version if options.version is not None else versions[-1]
    if version not in versions:
        raise QuantizeFailed(f"model '{options.model}' has no version {version} (versions: {versions})")
    try:
        loaded = load_version(folder / str(version), options.model, version, check_settings(options.repository))
    except ModelLoadFailed as error:
        raise QuantizeFailed(error.message) from error
    already = sorted({n.op_type for n in onnx.load(str(folder / str(version) / MODEL_FILE)).graph.node} &
                     QUANTIZED_OPS)
    if already:
        raise QuantizeFailed(f"model '{options.model}' version {version} is already quantized (it has {already})")
    return loaded


def input_sets(source: LoadedVersion, options: QuantizeOptions) -> tuple[InputSet, InputSet]:
    """(calibration, evaluation): see ``training.calibration``. Evaluation is the data set's labelled test split
    whenever the source's report names one nnserve has, whatever the calibration inputs were."""
    report = source.report
    known = report is not None and report.dataset is not None and report.dataset.name in DATASETS
    if options.calibration is not None:
        calibration = user_set(options.calibration, source, options.count, options.seed)
    else:
        calibration = dataset_set(source, "train", options.count, options.seed, options.data_dir)
    if options.evaluation is not None:
        evaluation = user_set(options.evaluation, source, options.evaluation_count, options.seed)
    elif known:
        evaluation = dataset_set(source, "test", options.evaluation_count, options.seed, options.data_dir)
    else:
        evaluation = calibration
    return calibration, evaluation


def preprocess(source: Path, workdir: Path) -> tuple[Path, str]:
    """onnxruntime's own pre-processing: symbolic shape inference and its graph optimisations (BatchNormalization
    folded into the Conv before it, for one), so that quantisation wraps the operators that will really run: a
    pretrained document classifier exported with separate BatchNormalization nodes ran 0.10x its source's speed
    quantized as it was, 0.25x pre-processed. A graph it cannot handle is quantized as it is, and the report says
    why."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = workdir / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(target))
    except Exception as error:  # symbolic shape inference gives up on some graphs, with assorted exception types
        return source, f"none: onnxruntime's quant_pre_process failed ({str(error).strip()[:200]})"
    return target, "onnxruntime.quantization.quant_pre_process (shape inference, graph optimisation)"


def output_nodes(source: Path, workdir: Path) -> tuple[Path, list[str]]:
    """The file to quantize and the names of the nodes that produce its outputs, which stay in float: the
    scores a client reads keep their FP32 resolution (quantized, the committed CNN's probabilities came back in
    steps of 1/255). Unnamed nodes, which onnxruntime cannot be told to leave alone, are named in a copy."""
    model = onnx.load(str(source))
    if any(not n.name for n in model.graph.node):
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"nnserve_node_{i}"
        source = workdir / "named.onnx"
        onnx.save(model, str(source))
    outputs = {o.name for o in model.graph.output}
    return source, [n.name for n in model.graph.node if outputs & set(n.output)]


def quantize_file(source: Path, target: Path, calibration: InputSet, method: str) -> str:
    """Quantize ``source`` into ``target``; returns how it was pre-processed."""
    if method not in METHODS:
        raise QuantizeFailed(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    # Its advice goes to the root logger, its calibrators print their progress, and onnxruntime's optimiser warns
    # about every initializer it drops: the command prints what it measured, and any error, nothing else.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            preprocessed, preprocessing = preprocess(source, target.parent)
            named, keep_float = output_nodes(preprocessed, target.parent)
            quantize_static(str(named), str(target), _Feeds(calibration.batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=METHODS[method], nodes_to_exclude=keep_float)
    except Exception as error:  # onnxruntime raises its own types and plain ones for graphs it cannot handle
        raise QuantizeFailed(f"{TOOL} could not quantize {source}: {str(error).strip()[:600]}") from error
    return preprocessing


def int8_operators(model: onnx.ModelProto) -> dict[str, int]:
    """Operators wrapped in QDQ (inputs from DequantizeLinear, outputs into QuantizeLinear): what onnxruntime
    fuses into int8 kernels. An operator left out (the LSTM under static QDQ) runs in float."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantizing = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    return dict(sorted(Counter(n.op_type for n in model.graph.node if n.op_type not in QUANTIZED_OPS
                               and dequantized & set(n.input) and set(n.output) <= quantizing).items()))


def _opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def quantize(options: QuantizeOptions) -> QuantizeResult:
    """Quantize, gate, measure, publish; ``GateFailed`` (nothing published) when a gate refuses."""
    source = load_source(options)
    source.backend.close()
    source_file = source.folder / MODEL_FILE
    calibration, evaluation = input_sets(source, options)
    config = source.config
    with tempfile.TemporaryDirectory(prefix="nnserve-quantize-") as tmp:
        variant_file = Path(tmp) / MODEL_FILE
        preprocessing = quantize_file(source_file, variant_file, calibration, options.method)
        from service.bench.inprocess import cpu_session

        comparison = compare(cpu_session(source_file), cpu_session(variant_file), evaluation, config)
        check_agreement(comparison, options.min_agreement, options.max_accuracy_drop)
        batches = options.speed_batches if source.policy.batching else (1,)
        speed = measure_speed(source_file, variant_file, evaluation.first_sample, batches, options.speed_rounds,
                              options.speed_seconds)
        check_speed(speed, options.min_speedup)
        graph = onnx.load(str(variant_file))
        quantization = Quantization(
            source=SourceModel(name=config.name, version=config.version, sha256=config.sha256 or ""),
            tool=f"{TOOL} {ort.__version__}", format="QDQ", weights="int8, symmetric, per channel",
            activations="uint8, asymmetric, per tensor", calibration=calibration.info,
            calibration_method=options.method, evaluation=evaluation.info, top1_agreement=comparison.agreement,
            top1_agreement_min=options.min_agreement, source_accuracy=comparison.source_accuracy,
            variant_accuracy=comparison.variant_accuracy,
            max_accuracy_drop=options.max_accuracy_drop if comparison.source_accuracy is not None else None,
            speed=speed, min_speedup=options.min_speedup or None, quantized_operators=int8_operators(graph),
            preprocessing=preprocessing)
        report = variant_report(source, quantization, comparison.variant_per_class, _opset(graph))
        served: list[LoadedVersion] = []

        def prepare(folder: Path, version: int) -> None:
            shutil.copyfile(variant_file, folder / MODEL_FILE)
            variant_config(config, options.target).dump(folder)
            report.dump(folder)
            try:
                loaded = load_version(folder, options.target, version, check_settings(options.repository))
            except ModelLoadFailed as error:
                raise QuantizeFailed(f"the INT8 variant does not load as its source does: {error.message}") from error
            loaded.config.dump(folder)
            loaded.backend.close()
            if options.evaluation is None:  # evaluated on its data set's test split: try-it samples as its source's
                samples_for_version(folder, version, options.data_dir)
            served.append(loaded)

        version = publish(options.repository, options.target, prepare)
    path = options.repository / options.target / str(version)
    return QuantizeResult(options.target, version, path, served[0].config.model_copy(update={"version": version}),
                          report)


def variant_config(source: ModelConfig, name: str) -> ModelConfig:
    """The source's serving contract under the variant's name (its sha256 is completed at load)."""
    description = f"INT8 (static QDQ) variant of {source.name} version {source.version}" + \
        (f": {source.description}" if source.description else "")
    return source.model_copy(update={"name": name, "sha256": None, "description": description})


def variant_report(source: LoadedVersion, quantization: Quantization, per_class: dict[str, float] | None,
                   opset: int | None) -> TrainingReport:
    """The quantization section, the variant's test accuracy (where the inputs were labelled) and the source's
    data set (what its accuracy was measured on, and what ``nnserve bench`` feeds it)."""
    report = source.report
    metrics = None
    if quantization.variant_accuracy is not None and per_class is not None:
        metrics = Metrics(onnx_test_accuracy=quantization.variant_accuracy, per_class_accuracy=per_class,
                          test_samples=quantization.evaluation.count)
    q = quantization.source
    return TrainingReport(
        family=report.family if report else None, metrics=metrics,
        dataset=report.dataset if report else None, quantization=quantization,
        provenance=provenance(f"{TOOL} (QDQ)", f"{q.name} version {q.version} sha256 {q.sha256}", opset=opset))


def summary(result: QuantizeResult) -> str:
    """What ``nnserve quantize`` prints: what was made from what, the gates' figures, the speed-up."""
    q = result.quantization
    speed = ", ".join(f"batch {s.batch}: {s.speedup:.2f}x ({s.source_samples_per_s:,.0f} -> "
                      f"{s.variant_samples_per_s:,.0f} samples/s; rounds {', '.join(f'{r:.2f}' for r in s.rounds)})"
                      for s in q.speed.values())
    lines = [
        f"published {result.name} version {result.version} at {result.path}",
        f"  source       {q.source.name} version {q.source.version} (sha256 {q.source.sha256[:16]}...)",
        f"  calibration  {q.calibration.count:,} inputs, {q.calibration.source}"
        f"{f', seed {q.calibration.seed}' if q.calibration.seed is not None else ''}, {q.calibration_method}",
        f"  evaluation   {q.evaluation.count:,} inputs, {q.evaluation.source}"
        f"{', labelled' if q.evaluation.labelled else ', unlabelled'}",
        f"  agreement    {q.top1_agreement:.2%} top-1 with the source (gate >= {q.top1_agreement_min:.2%})",
    ]
    if q.source_accuracy is not None and q.variant_accuracy is not None and q.max_accuracy_drop is not None:
        lines.append(f"  accuracy     {q.variant_accuracy:.2%} INT8, {q.source_accuracy:.2%} FP32 "
                     f"({(q.variant_accuracy - q.source_accuracy) * 100:+.2f} points; gate >= "
                     f"-{q.max_accuracy_drop * 100:.2f})")
    lines.append(f"  speed-up     {speed}")
    lines.append(f"  int8 ops     {', '.join(f'{op} {n}' for op, n in q.quantized_operators.items()) or 'none'}")
    return "\n".join(lines)
