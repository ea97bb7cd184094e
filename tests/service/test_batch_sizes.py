"""Allowed batch sizes (service.batch_sizes): which sizes a model gets, a batch padded to the next on a session of
that size alone, every request still answered with exactly its own rows; a model's own list that cannot work is
refused at load, naming why."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.backends import Tensors
from service.batch_sizes import AUTO_MODEL_BYTES, allowed_batch_sizes, padded_size, powers_of_two
from service.batcher import Batcher, Item, merge
from service.errors import ModelLoadFailed
from service.loading import _warmup_sizes, load_version
from service.settings import Settings
from tests.service.conftest import metric_value, running_app


class Quiet:
    def queued(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def computed(self, batch_size: int, seconds: float, alone: bool, padding: int) -> None: ...


def test_which_sizes_a_model_runs_at() -> None:
    assert powers_of_two(64) == (1, 2, 4, 8, 16, 32, 64) and powers_of_two(48) == (1, 2, 4, 8, 16, 32, 48)
    assert powers_of_two(1) == (1,)
    assert allowed_batch_sizes(None, "auto", 64, on_cuda=True) == (1, 2, 4, 8, 16, 32, 64)
    assert allowed_batch_sizes(None, "auto", 64, on_cuda=False) == ()  # the CPU's kernels keep no per-shape plans
    assert allowed_batch_sizes(None, "any", 64, on_cuda=True) == ()
    assert allowed_batch_sizes(None, "8,1,64", 32, on_cuda=False) == (1, 8, 32)  # cut at the model's largest
    assert allowed_batch_sizes([2, 4, 8], "any", 8, on_cuda=False) == (2, 4, 8)  # the model's own list first
    assert allowed_batch_sizes(None, "auto", 0, on_cuda=True) == ()  # one request at a time: nothing to pad
    big = AUTO_MODEL_BYTES + 1  # a session per size would copy its weights seven times: one session
    assert allowed_batch_sizes(None, "auto", 64, True, big) == () and \
        allowed_batch_sizes(None, "1,64", 64, True, big) == (1, 64)
    assert allowed_batch_sizes([1, 4, 64], "auto", 8, on_cuda=True) == (1, 4, 8)  # cut at the server's maximum
    with pytest.raises(ValueError, match=r"\[1, 4\] must end with the config's max_batch_size, 8"):
        allowed_batch_sizes([1, 4], "auto", 8, on_cuda=True, own_max=True)
    assert [padded_size((1, 4, 8), rows) for rows in (1, 2, 4, 5, 8)] == [1, 4, 4, 8, 8]
    assert padded_size((), 5) == 5


def _item(array: np.ndarray) -> Item:
    return Item({"x": array}, len(array), None, None, 0.0, 0.0)  # type: ignore[arg-type]


def test_merge_pads_with_copies_of_the_first_row_in_one_copy() -> None:
    a, b = np.arange(4).reshape(2, 2), np.arange(4, 6).reshape(1, 2)
    assert merge([_item(a), _item(b)], {}, 5)["x"].tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]]
    assert merge([_item(b)], {}, 2)["x"].tolist() == [[4, 5], [4, 5]]  # a lone item too
    lone = _item(b)
    assert merge([lone], {}, 1)["x"] is lone.inputs["x"]  # nothing to pad: no copy
    ragged = merge([_item(np.ones((1, 2))), _item(np.full((1, 3), 2.0))], {"x": -1}, 4)["x"]
    assert ragged.tolist() == [[1, 1, -1], [2, 2, 2], [1, 1, -1], [1, 1, -1]]  # padded rows padded like the first
    with pytest.raises(ValueError):
        Settings(allowed_batch_sizes="1,,8")


def _mlp_copy(models_dir: Path, root: Path, batching: dict[str, Any] | None = None) -> Path:
    folder = root / "mlp" / "1"
    shutil.copytree(max((models_dir / "mlp").iterdir(), key=lambda p: int(p.name)), folder)
    if batching is not None:
        config = json.loads((folder / "config.json").read_text())
        config["batching"] = batching
        (folder / "config.json").write_text(json.dumps(config))
    return folder


async def test_a_batch_is_padded_to_the_next_size_on_that_sizes_own_session(models_dir: Path,
                                                                             tmp_path: Path) -> None:
    folder = _mlp_copy(models_dir, tmp_path)
    settings = Settings(providers="cpu", allowed_batch_sizes="1,4,8", max_batch_size=8, warmup_batch_sizes=[1])
    loaded = load_version(folder, "mlp", 1, settings)
    backend = loaded.backend
    assert loaded.policy.batch_sizes == (1, 4, 8) and backend.describe()["batch_size_sessions"] == [1, 4, 8]
    assert _warmup_sizes(settings, loaded.policy) == [1, 4, 8]  # each session builds its plans before traffic
    sessions = backend._sized  # type: ignore[attr-defined]
    assert len({id(s) for s in sessions.values()}) == 3 and sessions[8] is backend.session  # type: ignore[attr-defined]

    seen: list[tuple[int, int]] = []  # (rows, the session that ran them)
    run_on = type(backend)._run  # type: ignore[attr-defined]

    def spy(session: Any, feeds: Tensors) -> Tensors:
        seen.append((len(feeds["image"]), next(s for s, v in sessions.items() if v is session)))
        return run_on(backend, session, feeds)

    backend._run = spy  # type: ignore[attr-defined]
    batcher = Batcher(backend.run, ThreadPoolExecutor(2), Quiet(), max_batch_size=8, max_queue_delay_s=0.05,
                      max_queue_size=64, concurrency=1, batch_sizes=loaded.policy.batch_sizes)
    batcher.start()
    rng = np.random.default_rng(0)
    requests = [rng.random((rows, 1, 28, 28), dtype=np.float32) for rows in (1, 2, 3)]  # 6 rows: padded to 8
    answers = await asyncio.gather(*[batcher.submit({"image": x}, len(x), 5.0) for x in requests])
    await batcher.stop()
    assert seen == [(8, 8)], f"one batch of 6 rows, padded to 8, on the size-8 session: {seen}"
    reference = load_version(_mlp_copy(models_dir, tmp_path / "plain"), "mlp", 1,
                             Settings(providers="cpu", warmup_batch_sizes=[1])).backend
    for x, answer in zip(requests, answers, strict=True):
        assert {n: a.shape[0] for n, a in answer.items()} == {n: len(x) for n in answer}
        for name, out in reference.run({"image": x}).items():
            np.testing.assert_allclose(answer[name], out, rtol=1e-5, atol=1e-6)


def test_a_models_own_sizes_win_and_a_list_that_cannot_work_is_refused(models_dir: Path, tmp_path: Path) -> None:
    settings = Settings(providers="cpu", warmup_batch_sizes=[1], max_batch_size=16)
    own = load_version(_mlp_copy(models_dir, tmp_path / "a", {"allowed_batch_sizes": [4, 16]}), "mlp", 1, settings)
    assert own.policy.batch_sizes == (4, 16) and own.backend.describe()["batch_size_sessions"] == [4, 16]
    cut = load_version(_mlp_copy(models_dir, tmp_path / "e", {"allowed_batch_sizes": [1, 4]}), "mlp", 1, settings)
    assert cut.policy.batch_sizes == (1, 4, 16)  # the server's --max-batch-size: the list is completed
    folder = _mlp_copy(models_dir, tmp_path / "b", {"allowed_batch_sizes": [1, 4]})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_batch_size": 16}))
    with pytest.raises(ModelLoadFailed, match=r"version 1: batching.allowed_batch_sizes \[1, 4\] must end with "
                                              r"the config's max_batch_size, 16"):
        load_version(folder, "mlp", 1, settings)
    with pytest.raises(ModelLoadFailed, match=r"must increase strictly, got \[8, 4, 16\]"):
        load_version(_mlp_copy(models_dir, tmp_path / "c", {"allowed_batch_sizes": [8, 4, 16]}), "mlp", 1,
                     settings)
    plain = load_version(_mlp_copy(models_dir, tmp_path / "d"), "mlp", 1, settings)  # auto, on the CPU: any size
    assert plain.policy.batch_sizes == () and plain.backend.describe()["batch_size_sessions"] == []


async def test_served_with_allowed_sizes_each_request_gets_its_own_rows(models_dir: Path, fashion: Any) -> None:
    async with running_app(models_dir, providers="cpu", allowed_batch_sizes="1,8,64", max_queue_delay_ms=20,
                           models=["resnet"]) as client:
        config = (await client.get("/v2/models/resnet/config")).json()
        meta = (await client.get("/v2/models/resnet")).json()
        images = fashion.test_images[:24]
        single = [(await client.post("/predict", json={"model": "resnet", "inputs": [images[i].tolist()]})).json()
                  for i in range(3)]
        sizes = [1, 2, 3, 1, 5, 2]  # 14 rows: batches padded to 8 or 64
        starts = np.cumsum([0, *sizes])
        calls = [client.post("/predict", json={"model": "resnet", "top_k": 10,
                                               "inputs": images[starts[k]:starts[k] + n].tolist()})
                 for k, n in enumerate(sizes)]
        responses = await asyncio.gather(*calls)
        metrics = (await client.get("/metrics")).text
    assert meta["parameters"]["batch_size_sessions"] == [1, 8, 64]
    assert config["max_batch_size"] == 64
    assert all(r.status_code == 200 for r in responses)
    got = [p for r in responses for p in r.json()["predictions"]]
    assert len(got) == sum(sizes)
    for i in range(3):
        assert got[i]["label"] == single[i]["predictions"][0]["label"]
    assert "nnserve_batch_size_sum" in metrics
    batches = metric_value(metrics, "nnserve_batch_size_count", model="resnet")
    rows = metric_value(metrics, "nnserve_batch_size_sum", model="resnet")
    padding = metric_value(metrics, "nnserve_batch_padding_rows_total", model="resnet")
    # 3 lone calls, then 14 rows in batches of which some has 2 or more rows: padded, as every batch was, to 1, 8
    # or 64, so the rows computed are that many batches of those sizes
    assert rows == 3 + 14 and padding > 0
    assert any(n1 + 8 * n8 + 64 * (batches - n1 - n8) == rows + padding
               for n1 in range(int(batches) + 1) for n8 in range(int(batches) - n1 + 1))


def test_settings_reject_a_malformed_list() -> None:
    for bad in ("", "0,8", "1;8", "auto,8"):
        with pytest.raises(ValueError):
            Settings(allowed_batch_sizes=bad)
    assert Settings(allowed_batch_sizes="1,8").allowed_batch_sizes == "1,8"


async def test_the_flag_reaches_the_server(models_dir: Path) -> None:
    async with running_app(models_dir, providers="cpu", allowed_batch_sizes="2,64", models=["mlp"]) as client:
        meta: dict[str, Any] = (await client.get("/v2/models/mlp")).json()
    assert meta["parameters"]["batch_size_sessions"] == [2, 64], json.dumps(meta)[:500]



def test_a_model_on_cuda_gets_powers_of_two_unless_its_file_is_large(models_dir: Path, tmp_path: Path) -> None:
    """The CUDA branch of the decision, with a real backend that reports CUDA (no GPU here)."""
    from service.backends.onnx import CPU, CUDA
    from service.loading import _decide_batching

    settings = Settings(providers="cpu", warmup_batch_sizes=[1])
    loaded = load_version(_mlp_copy(models_dir, tmp_path), "mlp", 1, settings)

    class ReportsCuda:
        def __init__(self, real: Any) -> None:
            self._real, self.signature = real, real.signature

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def describe(self) -> dict[str, Any]:
            return {**self._real.describe(), "providers": [CUDA, CPU]}

    on_cuda = ReportsCuda(loaded.backend)
    small = _decide_batching(on_cuda, loaded.config, settings, "here", 9_000_000)
    assert small.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
    large = _decide_batching(on_cuda, loaded.config, settings, "here", AUTO_MODEL_BYTES + 1)
    assert large.batch_sizes == ()
    off = settings.model_copy(update={"allowed_batch_sizes": "any"})
    assert _decide_batching(on_cuda, loaded.config, off, "here", 1).batch_sizes == ()


async def test_padded_batches_of_ragged_sequences_answer_as_alone(models_dir: Path, vowels: Any) -> None:
    """The LSTM's time axis is ragged: padding rows are copies of the first, padded like it; answers unchanged."""
    sequences = sorted(vowels.test_sequences, key=len)
    picked = [sequences[0], sequences[len(sequences) // 2], sequences[-1]]  # 3 rows of 3 lengths: padded to 4
    async with running_app(models_dir, providers="cpu", allowed_batch_sizes="1,4,64", max_queue_delay_ms=30,
                           models=["lstm"]) as client:
        alone = [(await client.post("/predict", json={"model": "lstm", "inputs": [s.tolist()], "top_k": 9})).json()
                 for s in picked]
        together = await asyncio.gather(*[
            client.post("/predict", json={"model": "lstm", "inputs": [s.tolist()], "top_k": 9}) for s in picked])
        metrics = (await client.get("/metrics")).text
    assert "nnserve_batch_size_bucket" in metrics

    def probabilities(prediction: dict[str, Any]) -> np.ndarray:
        return np.array([p["probability"] for p in sorted(prediction["top_k"], key=lambda p: p["index"])])

    for one, response in zip(alone, together, strict=True):
        np.testing.assert_allclose(probabilities(response.json()["predictions"][0]),
                                   probabilities(one["predictions"][0]), atol=1e-6)
