"""One repository of models nobody here wrote, published as a user would (``nnserve import`` / ``nnserve export
--module``), beside the built-in models; and one real ``nnserve serve`` process over it for the whole session."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.hosting.launcher import serve_subprocess
from service.importer import ImportOptions, import_model
from tests.imported.signatures import Signature, signatures
from tests.zoo import onnx_test_model, with_random_weights, zoo_file

LIGHT_MODELS = ("resnet50", "squeezenet", "densenet121", "shufflenet")
# the two whose answers, with random weights, still differ clearly between pictures (tests.zoo.with_random_weights)
RANDOM_WEIGHT_MODELS = ("squeezenet", "shufflenet")
ORIENTATION_LABELS = ["0", "90", "180", "270"]  # the file's own metadata ("character"), clockwise degrees


@dataclass
class Served:
    url: str
    repository: Path
    signatures: dict[str, Signature]


def publish_signature(signature: Signature, root: Path, work: Path) -> None:
    source = work / f"{signature.name}.onnx"
    signature.build(source)
    config = None
    if signature.config:
        config = work / f"{signature.name}.json"
        config.write_text(json.dumps(signature.config))
    import_model(source, ImportOptions(name=signature.name, repository=root, config=config))


def publish_zoo(root: Path, work: Path) -> None:
    labels = work / "orientation.txt"
    labels.write_text("\n".join(ORIENTATION_LABELS))
    import_model(zoo_file("orientation"), ImportOptions(name="orientation", repository=root, labels=labels,
                                                         image_preprocessing="imagenet-bgr"))
    import_model(zoo_file("text-detector"), ImportOptions(name="text-detector", repository=root))
    vad = work / "vad.json"
    vad.write_text(json.dumps({"warmup": {"input": {"shape": [1, 576]}, "sr": {"value": 16000}}}))
    import_model(zoo_file("silero-vad"), ImportOptions(name="silero-vad", repository=root, config=vad))
    for name in LIGHT_MODELS:
        import_model(onnx_test_model(name)[0], ImportOptions(name=f"onnx-{name}", repository=root))
    for name in RANDOM_WEIGHT_MODELS:
        source = with_random_weights(onnx_test_model(name)[0], work / f"{name}-random.onnx")
        import_model(source, ImportOptions(name=f"onnx-{name}-random", repository=root))


@pytest.fixture(scope="session")
def imported_repository(tmp_path_factory: pytest.TempPathFactory,
                        models_dir: Path) -> tuple[Path, dict[str, Signature]]:
    root = tmp_path_factory.mktemp("imported") / "models"
    work = root.parent / "work"
    work.mkdir()
    for family in ("mlp", "lstm"):
        shutil.copytree(models_dir / family, root / family)
    found = {s.name: s for s in signatures(models_dir)}
    for signature in found.values():
        publish_signature(signature, root, work)
    publish_zoo(root, work)
    return root, found


@pytest.fixture(scope="session")
def served(imported_repository: tuple[Path, dict[str, Signature]]) -> Iterator[Served]:
    root, found = imported_repository
    env = {"NNSERVE_WARMUP_BATCH_SIZES": "[1, 4]"}
    with serve_subprocess(root, ["--no-access-log", "--max-batch-size", "16"], env=env, timeout=120) as (url, _, _):
        yield Served(url, root, found)
