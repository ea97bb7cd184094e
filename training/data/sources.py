"""Where dataset files are found, how they are checked, and the one place that downloads.

Lookup order for each file: ``--data-dir``, ``$NNSERVE_DATA_DIR``, the user cache
(``$XDG_CACHE_HOME/nnserve/data``, default ``~/.cache/nnserve/data``), Debian's ``/usr/share/datasets``;
in each,
``<dir>/<dataset>/<file>`` then ``<dir>/<file>``, and for IDX files also the decompressed name without ``.gz``.
Only when no candidate exists (and ``$NNSERVE_OFFLINE`` is unset) is the file downloaded, into the user
cache, from the dataset's public mirror.
Every file's md5 is checked against the published one (of the ``.gz``, or of the decompressed bytes, which is
what Debian's re-compressed copies match); a mismatch names the file and both checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DataError(RuntimeError):
    """A dataset file is missing, corrupt, truncated or has the wrong checksum."""


@dataclass(frozen=True)
class DataFile:
    dataset: str
    name: str
    md5: str  # of the file as published
    raw_md5: str | None  # of the decompressed bytes, for .gz files
    url: str


_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_VOWELS = "https://raw.githubusercontent.com/sktime/sktime/main/sktime/datasets/data/JapaneseVowels/"

FILES: dict[str, dict[str, DataFile]] = {
    "fashion-mnist": {
        f.name: f
        for f in [
            DataFile("fashion-mnist", "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "f4a8712d7a061bf5bd6d2ca38dc4d50a", _FMNIST + "train-images-idx3-ubyte.gz"),
            DataFile("fashion-mnist", "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "9018921c3c673c538a1fc5bad174d6f9", _FMNIST + "train-labels-idx1-ubyte.gz"),
            DataFile("fashion-mnist", "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                     "8181f5470baa50b63fa0f6fddb340f0a", _FMNIST + "t10k-images-idx3-ubyte.gz"),
            DataFile("fashion-mnist", "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                     "15d484375f8d13e6eb1aabb0c3f46965", _FMNIST + "t10k-labels-idx1-ubyte.gz"),
        ]
    },
    "mnist": {
        f.name: f
        for f in [
            DataFile("mnist", "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", None,
                     _MNIST + "train-images-idx3-ubyte.gz"),
            DataFile("mnist", "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                     "a25bea736e30d166cdddb491f175f624", _MNIST + "train-labels-idx1-ubyte.gz"),
            DataFile("mnist", "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                     "2646ac647ad5339dbf082846283269ea", _MNIST + "t10k-images-idx3-ubyte.gz"),
            DataFile("mnist", "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                     "27ae3e4e09519cfbb04c329615203637", _MNIST + "t10k-labels-idx1-ubyte.gz"),
        ]
    },
    "japanese-vowels": {
        f.name: f
        for f in [
            DataFile("japanese-vowels", "JapaneseVowels_TRAIN.ts", "9165e3eec783ac6342d658685c864d19", None,
                     _VOWELS + "JapaneseVowels_TRAIN.ts"),
            DataFile("japanese-vowels", "JapaneseVowels_TEST.ts", "14d15214e3ab6ac39ab2d48901d3e2a3", None,
                     _VOWELS + "JapaneseVowels_TEST.ts"),
        ]
    },
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nnserve" / "data"


def search_dirs(data_dir: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if env := os.environ.get("NNSERVE_DATA_DIR"):
        dirs.append(Path(env))
    dirs += [cache_dir(), Path("/usr/share/datasets")]
    return dirs


def _candidates(directory: Path, spec: DataFile) -> list[Path]:
    names = [spec.name]
    if spec.name.endswith(".gz"):
        names.append(spec.name[: -len(".gz")])
    return [d / n for d in (directory / spec.dataset, directory) for n in names]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify(path: Path, spec: DataFile) -> str:
    """Check ``path`` against the published md5s; return the md5 that matched."""
    data = path.read_bytes()
    digest = md5_of(data)
    if digest == spec.md5:
        return digest
    if spec.raw_md5 is not None:
        if data[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(data)
            except (EOFError, OSError) as error:
                raise DataError(
                    f"{path}: truncated or corrupt gzip ({error}); md5 {digest}, expected {spec.md5}"
                ) from error
        else:
            raw = data
        raw_digest = md5_of(raw)
        if raw_digest == spec.raw_md5:
            return raw_digest
        raise DataError(
            f"{path}: md5 mismatch: file {digest} / decompressed {raw_digest}, expected {spec.md5} "
            f"(file) or {spec.raw_md5} (decompressed)"
        )
    raise DataError(f"{path}: md5 mismatch: got {digest}, expected {spec.md5}")


def download(spec: DataFile, target: Path) -> None:
    """Fetch ``spec`` from its mirror into ``target`` atomically; verified before it is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {spec.url} -> {target}", flush=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as response:
                while block := response.read(1 << 20):
                    tmp.write(block)
        except OSError as error:
            tmp_path.unlink(missing_ok=True)
            raise DataError(f"could not download {spec.name} from {spec.url}: {error}") from error
    try:
        verify(tmp_path, spec)
    except DataError:
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.replace(target)


def locate(dataset: str, name: str, data_dir: Path | None = None, allow_download: bool = True) -> tuple[Path, str]:
    """Find (or download) one file; return its path and the md5 it was verified with."""
    spec = FILES[dataset][name]
    allow_download = allow_download and os.environ.get("NNSERVE_OFFLINE", "") not in ("1", "true", "yes")
    for directory in search_dirs(data_dir):
        for candidate in _candidates(directory, spec):
            if candidate.is_file():
                return candidate, verify(candidate, spec)
    if not allow_download:
        raise DataError(f"{dataset}/{name} not found in {[str(d) for d in search_dirs(data_dir)]} "
                        f"(downloads are off: NNSERVE_OFFLINE is set)")
    target = cache_dir() / dataset / name
    download(spec, target)
    return target, verify(target, spec)
