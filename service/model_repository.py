"""Reading the model repository's layout: ``<root>/<name>/<version>/{model.onnx, manifest.json}``."""

from __future__ import annotations

from pathlib import Path

from service.manifest import MANIFEST_FILE, MODEL_FILE


def list_versions(model_dir: Path) -> list[int]:
    """Complete versions (integer folder names holding both files), ascending."""
    if not model_dir.is_dir():
        return []
    versions = []
    for child in model_dir.iterdir():
        if child.name.isdigit() and (child / MODEL_FILE).is_file() and (child / MANIFEST_FILE).is_file():
            versions.append(int(child.name))
    return sorted(versions)


def list_models(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(c.name for c in root.iterdir() if c.is_dir() and not c.name.startswith(".") and list_versions(c))


def version_dir(root: Path, name: str, version: int) -> Path:
    return root / name / str(version)
