"""Publishing into the model repository: ``<root>/<name>/<version>/{model.onnx, manifest.json}``.

A version is written whole into a hidden temporary folder beside its siblings, then renamed into place: a reader
never sees half a version, and an existing version is never overwritten (the rename fails and the next free
number is taken).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from service.manifest import MODEL_FILE, Manifest
from service.model_repository import list_versions


class VersionExists(RuntimeError):
    pass


def publish(root: Path, name: str, onnx_file: Path, make_manifest: Callable[[int], Manifest],
            version: int | None = None) -> int:
    """Publish ``onnx_file`` as a new version of ``name``; return its number."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publishing-", dir=model_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; a published version is readable by the serving user
    try:
        shutil.copyfile(onnx_file, tmp / MODEL_FILE)
        for _ in range(100):
            number = version if version is not None else (max(list_versions(model_dir), default=0) + 1)
            make_manifest(number).dump(tmp)
            target = model_dir / str(number)
            if target.exists():
                if version is not None:
                    raise VersionExists(f"{target} exists; published versions are never overwritten")
                continue
            try:
                os.rename(tmp, target)
            except OSError as error:  # a concurrent publisher took this number first
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY) and version is None:
                    continue
                raise
            return number
        raise VersionExists(f"could not find a free version number under {model_dir}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
