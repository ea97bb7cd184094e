"""The model repository on disk: ``<root>/<name>/<version>/model.onnx``, beside it an optional ``config.json``
(``service.config``) and ``report.json`` (``service.report``).

A version is an integer folder holding ``model.onnx``; folders whose names start with a dot are someone's work in
progress and never read. Publishing (the pipeline, ``nnserve import``, ``nnserve export``) writes a version whole
into a hidden folder beside its siblings, then renames it into place: a reader never sees half a version, and an
existing version is never overwritten (the rename fails and the next free number is taken).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from service.config import CONFIG_FILE
from service.report import REPORT_FILE
from service.samples import SAMPLES_DIR

MODEL_FILE = "model.onnx"
OWN_FILES = frozenset({MODEL_FILE, CONFIG_FILE, REPORT_FILE, SAMPLES_DIR})  # what nnserve writes in a version folder
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class VersionExists(RuntimeError):
    pass


def check_model_name(name: str) -> None:
    """A model name is one safe folder name (it is also a URL path segment)."""
    if not SAFE_NAME.fullmatch(name) or name.endswith("."):
        raise ValueError(f"model name {name!r} is not a safe folder name: use letters, digits, '_', '-' and '.', "
                         f"starting with a letter or digit, at most 128 characters")


def list_versions(model_dir: Path) -> list[int]:
    """Complete versions (integer folder names holding model.onnx), ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(c.name) for c in model_dir.iterdir() if c.name.isdigit() and (c / MODEL_FILE).is_file())


def list_models(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(c.name for c in root.iterdir() if c.is_dir() and not c.name.startswith(".") and list_versions(c))


def newest_model_bytes(root: Path, names: list[str] | None = None) -> int:
    """The size of each model's newest version (of ``names``, or every model), added up."""
    total = 0
    for name in names or list_models(root):
        versions = list_versions(root / name)
        if versions:
            total += model_bytes(version_dir(root, name, versions[-1]))
    return total


def model_bytes(folder: Path) -> int:
    """What a version's model weighs: ``model.onnx`` and its data files (a model over 2 GiB keeps its tensors in
    external data files, its ``model.onnx`` a few kilobytes)."""
    return sum(p.stat().st_size for p in [folder / MODEL_FILE, *data_files(folder)])


def data_files(folder: Path) -> list[Path]:
    """The files of a version that nnserve did not write: its model's external data (``nnserve import``)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in OWN_FILES)


def version_dir(root: Path, name: str, version: int) -> Path:
    return root / name / str(version)


Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(folder: Path) -> Fingerprint:
    """What changes when a version's files do: each file's path, size and modification time (a stat each, no
    reading: the repository poll takes well under a millisecond for a hundred versions)."""
    found = []
    for path in sorted(folder.rglob("*")):
        try:
            stat = path.stat()
        except OSError:  # removed while we looked: the next poll sees the rest
            continue
        if path.is_file():
            found.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def scan_versions(model_dir: Path) -> dict[int, Fingerprint]:
    """Each complete version of a model and its fingerprint."""
    return {v: fingerprint(model_dir / str(v)) for v in list_versions(model_dir)}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(root: Path, name: str, prepare: Callable[[Path, int], None], version: int | None = None) -> int:
    """Publish a new version of ``name``: ``prepare(folder, number)`` writes its files into a hidden folder (and may
    check them: whatever it raises leaves nothing behind), which is then renamed to the next free version number
    (or to ``version``, which must not exist). Returns the number."""
    check_model_name(name)
    model_dir = root / name
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publishing-", dir=model_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; a published version is readable by the serving user
    try:
        prepare(tmp, version if version is not None else max(list_versions(model_dir), default=0) + 1)
        for _ in range(100):
            number = version if version is not None else (max(list_versions(model_dir), default=0) + 1)
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
        if created and not any(model_dir.iterdir()):
            model_dir.rmdir()  # a first version that failed leaves no trace
