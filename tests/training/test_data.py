"""Real IDX and .ts parsing, md5 checks, lookup order, and corrupt files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, load_fashion_mnist, load_japanese_vowels
from training.data.datasets import MNIST_LABELS, load_idx_dataset
from training.data.idx import parse_idx, read_idx
from training.data.sources import FILES, locate, verify
from training.data.ts_format import parse_ts


def test_fashion_mnist_is_read_from_the_real_idx_files(data_dir: Path) -> None:
    ds = load_fashion_mnist(data_dir)
    assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels[:5].tolist() == [9, 0, 0, 3, 0]
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.files["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"


def test_mnist_test_split_is_read_by_the_same_idx_code(data_dir: Path) -> None:
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels[:5].tolist() == [7, 2, 1, 0, 4]
    # The MNIST training images are not in shared/data; offline (as in tests) the loader says so.
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz not found"):
        load_idx_dataset("mnist", MNIST_LABELS, data_dir)


def test_japanese_vowels_sequences(data_dir: Path) -> None:
    ds = load_japanese_vowels(data_dir)
    assert len(ds.train_sequences) == 270 and len(ds.test_sequences) == 370
    lengths = [len(s) for s in ds.train_sequences + ds.test_sequences]
    assert min(lengths) == 7 and max(lengths) == 29
    assert all(s.shape[1] == 12 and s.dtype == np.float32 for s in ds.train_sequences)
    assert len(ds.labels) == 9 and set(ds.train_labels.tolist()) == set(range(9))


def test_parse_idx_rejects_bad_headers_and_sizes() -> None:
    good = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    assert parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="size mismatch"):
        parse_idx(good[:-1])
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"\x01\x02\x03\x04" + good[4:])


def test_a_truncated_gzip_is_an_error_naming_the_file(tmp_path: Path, data_dir: Path) -> None:
    src = data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    bad = tmp_path / "fashion-mnist" / src.name
    bad.parent.mkdir()
    bad.write_bytes(src.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.*(truncated|md5)"):
        verify(bad, FILES["fashion-mnist"][src.name])
    with pytest.raises(DataError, match="not a complete gzip"):
        read_idx(bad)


def test_a_wrong_md5_names_the_file_and_both_checksums(tmp_path: Path, data_dir: Path) -> None:
    src = data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(src.read_bytes()))
    raw[100] ^= 0xFF  # one label changed
    bad = tmp_path / "fashion-mnist" / src.name
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError) as caught:
        locate("fashion-mnist", src.name, tmp_path, allow_download=False)
    message = str(caught.value)
    assert src.name in message and "bb300cfdad3c16e7a12a480ee83cd310" in message
    assert "15d484375f8d13e6eb1aabb0c3f46965" in message


def test_recompressed_or_plain_copies_match_the_decompressed_md5(tmp_path: Path, data_dir: Path) -> None:
    src = data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / src.name).write_bytes(gzip.compress(gzip.decompress(src.read_bytes()), mtime=1))  # Debian-like
    path, md5 = locate("fashion-mnist", src.name, tmp_path, allow_download=False)
    assert path == folder / src.name and md5 == "15d484375f8d13e6eb1aabb0c3f46965"
    (folder / src.name).unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(src.read_bytes()))
    path, _ = locate("fashion-mnist", src.name, tmp_path, allow_download=False)
    assert path.name == "t10k-labels-idx1-ubyte"


def test_lookup_order_data_dir_then_environment(tmp_path: Path, data_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        shutil.copytree(data_dir / "japanese-vowels", d / "japanese-vowels")
    monkeypatch.setenv("NNSERVE_DATA_DIR", str(second))
    assert locate("japanese-vowels", "JapaneseVowels_TEST.ts", first)[0].parent.parent == first
    assert locate("japanese-vowels", "JapaneseVowels_TEST.ts", None)[0].parent.parent == second
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NNSERVE_DATA_DIR")
    with pytest.raises(DataError, match="not found"):
        locate("japanese-vowels", "JapaneseVowels_TEST.ts", tmp_path / "empty", allow_download=False)


def test_parse_ts_and_its_errors() -> None:
    text = "# c\n@problemName x\n@classLabel true 1 2\n@data\n1,2,3:4,5,6:1\n7,8:9,10:2\n"
    sequences, labels, classes = parse_ts(text)
    assert [s.shape for s in sequences] == [(3, 2), (2, 2)] and labels == ["1", "2"] and classes == ["1", "2"]
    assert sequences[0][:, 1].tolist() == [4, 5, 6]
    with pytest.raises(DataError, match="unequal length"):
        parse_ts("@data\n1,2:3:1\n")
    with pytest.raises(DataError, match="no @data"):
        parse_ts("@problemName x\n")
    with pytest.raises(DataError, match="bad value"):
        parse_ts("@data\n1,x:3,4:1\n")
