"""The onnxruntime backend: execution providers are chosen as asked and reported as they are; CUDA never falls
back silently; threads default to each worker's share of the cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.backends import RuntimeOptions
from service.backends.onnx import CUDA, OnnxBackend, ProviderUnavailable
from service.settings import Settings


def newest(models_dir: Path, name: str) -> Path:
    return max((models_dir / name).iterdir(), key=lambda p: int(p.name)) / "model.onnx"


def test_cpu_provider_is_reported_as_active(models_dir: Path) -> None:
    backend = OnnxBackend(newest(models_dir, "cnn"), RuntimeOptions("cpu"))
    assert backend.describe()["providers"] == ["CPUExecutionProvider"]
    assert backend.run({"image": np.zeros((3, 1, 28, 28), np.float32)})["probabilities"].shape == (3, 10)
    assert [t.name for t in backend.signature.inputs] == ["image"]
    assert backend.signature.inputs[0].datatype == "FP32" and backend.signature.inputs[0].shape == [-1, 1, 28, 28]


def test_auto_measures_the_graph_optimisation_level(models_dir: Path) -> None:
    backend = OnnxBackend(newest(models_dir, "lstm"), RuntimeOptions("auto"))
    backend.tune({"sequence": np.zeros((8, 16, 12), np.float32), "lengths": np.full(8, 16, np.int64)})
    assert backend.graph_optimization in ("all", "basic")
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if CUDA in ort.get_available_providers() \
        else ["CPUExecutionProvider"]
    assert backend.describe()["providers"] == expected


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_fails_clearly(models_dir: Path) -> None:
    with pytest.raises(ProviderUnavailable, match=r"providers=cuda.*install onnxruntime-gpu"):
        OnnxBackend(newest(models_dir, "mlp"), RuntimeOptions("cuda"))


def test_threads_default_to_each_workers_share_of_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings().onnxruntime_threads() == cores
    assert Settings(workers=2).onnxruntime_threads() == max(1, cores // 2)
    assert Settings(workers=4 * cores).onnxruntime_threads() == 1
    assert Settings(workers=2, intra_op_threads=3).onnxruntime_threads() == 3


def test_serve_runs_a_process_per_usable_cpu_and_four_on_cuda_unless_the_models_are_large(tmp_path: Path,
                                                                                         models_dir: Path) -> None:
    from service.repository import newest_model_bytes
    from service.settings import CUDA_WORKERS_MODEL_BYTES, default_workers, usable_cpus

    cores = len(os.sched_getaffinity(0))
    assert default_workers("auto", 4, cuda_offered=False) == 4 and default_workers("cpu", 3, cuda_offered=True) == 3
    assert default_workers("auto", 8, cuda_offered=True) == 4 and default_workers("cuda", 8, cuda_offered=False) == 4
    assert default_workers("cuda", 2, cuda_offered=True) == 2  # at most one per CPU
    assert default_workers("cuda", 8, True, model_bytes=CUDA_WORKERS_MODEL_BYTES + 1) == 1  # each holds a copy
    assert newest_model_bytes(models_dir, ["mlp", "cnn"]) == sum(
        (models_dir / m / "1" / "model.onnx").stat().st_size for m in ("mlp", "cnn"))
    assert newest_model_bytes(models_dir) > newest_model_bytes(models_dir, ["mlp", "cnn"])
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # a container allowed one CPU of this machine
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{cores * 400000} 100000\n")  # a quota above the cores: the cores count
    assert usable_cpus(tmp_path) == cores


def test_a_containers_cpu_quota_caps_the_threads(tmp_path: Path) -> None:
    from service.settings import _cgroup_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(tmp_path) is None


def test_a_lone_session_takes_every_core_where_the_batch_session_does_not(models_dir: Path) -> None:
    """The lone request's session (service.activity): every core asked, spinning, same answers as the batch
    session; none where it would be the batch session again, or where there is one core to use."""
    path = newest(models_dir, "resnet")
    feeds = {"image": np.random.default_rng(0).random((1, 1, 28, 28), np.float32)}
    backend = OnnxBackend(path, RuntimeOptions("cpu", intra_op_threads=1, lone_threads=2))
    assert backend.runs_alone and backend.describe()["lone_request_threads"] == 2
    np.testing.assert_allclose(backend.run_alone(feeds)["probabilities"], backend.run(feeds)["probabilities"],
                               rtol=1e-5, atol=1e-6)
    for options in (RuntimeOptions("cpu", intra_op_threads=1, lone_threads=1),
                    RuntimeOptions("cpu", intra_op_threads=2, spin_wait=True, lone_threads=2)):
        backend = OnnxBackend(path, options)
        assert not backend.runs_alone and backend.describe()["lone_request_threads"] == 0
        assert backend.run_alone(feeds)["probabilities"].shape == (1, 10)


def test_a_model_config_overrides_the_servers_runtime_settings(models_dir: Path, tmp_path: Path) -> None:
    """``runtime`` in config.json: threads, the lone session and onnxruntime's arena, per model."""
    import json
    import shutil

    from service.loading import load_version

    folder = tmp_path / "mlp" / "1"
    shutil.copytree(newest(models_dir, "mlp").parent, folder)
    settings = Settings(providers="cpu", intra_op_threads=1, lone_request_threads=2)
    loaded = load_version(folder, "mlp", 1, settings)
    runtime = loaded.backend.describe()
    assert (runtime["intra_op_threads"], runtime["lone_request_threads"], runtime["memory_arena"]) == (1, 2, False)
    config = json.loads((folder / "config.json").read_text())
    config["runtime"] = {"intra_op_threads": 2, "lone_request_threads": 0, "memory_arena": True}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_version(folder, "mlp", 1, settings)
    runtime = loaded.backend.describe()
    assert (runtime["intra_op_threads"], runtime["lone_request_threads"], runtime["memory_arena"]) == (2, 0, True)


def test_batches_compute_in_the_event_loop_only_where_compute_and_loop_share_a_core(models_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """One onnxruntime thread, one batch at a time and a process per core (``nnserve serve``'s default on the
    CPU): batches of up to 50 ms compute in the event loop; with threads to spare, a second batch slot or fewer
    processes than cores, only a lone quick request does."""
    import json
    import shutil

    from service.batcher import INLINE_MAX_S
    from service.loading import INLINE_SATURATED_S, load_version
    from service.settings import usable_cpus

    folder = tmp_path / "mlp" / "1"
    shutil.copytree(newest(models_dir, "mlp").parent, folder)
    cores = usable_cpus()
    shared = Settings(providers="cpu", workers=cores, warmup_batch_sizes=[1])
    assert shared.onnxruntime_threads() == 1
    assert load_version(folder, "mlp", 1, shared).policy.inline_s == INLINE_SATURATED_S == 0.05
    assert load_version(folder, "mlp", 1, shared).policy.inline_mixed_s == INLINE_MAX_S  # the default: capped in
    explicit = shared.model_copy(update={"event_loop_compute_ms": 50})  # mixed traffic; a bound set: as given
    assert load_version(folder, "mlp", 1, explicit).policy.inline_mixed_s == 0.05
    for spare in (shared.model_copy(update={"batch_concurrency": 2}),
                  shared.model_copy(update={"intra_op_threads": 2}),
                  shared.model_copy(update={"workers": cores, "intra_op_threads": 0})):
        assert load_version(folder, "mlp", 1, spare).policy.inline_s == 0
    if cores > 1:  # fewer processes than cores: the loop and the compute thread run side by side
        fewer = shared.model_copy(update={"workers": 1, "intra_op_threads": 1})
        assert load_version(folder, "mlp", 1, fewer).policy.inline_s == 0
    with pytest.raises(ValueError, match="finite"):  # inf would show as null, "a lone quick request only"
        Settings(event_loop_compute_ms=float("inf"))
    for given in (0.0, 7.5):  # --event-loop-compute-ms: as given, whatever the cores
        for settings in (shared, shared.model_copy(update={"batch_concurrency": 2})):
            chosen = settings.model_copy(update={"event_loop_compute_ms": given})
            assert load_version(folder, "mlp", 1, chosen).policy.inline_s == given / 1000
    config = json.loads((folder / "config.json").read_text())  # the model's own, over the server's
    config["batching"] = {"event_loop_compute_ms": 3}
    (folder / "config.json").write_text(json.dumps(config))
    assert load_version(folder, "mlp", 1, shared).policy.inline_s == 0.003
    assert load_version(folder, "mlp", 1, shared.model_copy(update={"event_loop_compute_ms": 9})).policy.inline_s \
        == 0.003


def test_a_model_config_overrides_the_servers_batching_settings(models_dir: Path, tmp_path: Path) -> None:
    """``batching`` in config.json: each knob the model sets is the one its batcher runs with and Triton's
    configuration view shows; the others stay the server's."""
    import json
    import shutil

    from service.loading import load_version

    folder = tmp_path / "mlp" / "1"
    shutil.copytree(newest(models_dir, "mlp").parent, folder)
    settings = Settings(providers="cpu", warmup_batch_sizes=[1], max_queue_delay_ms=2, max_queue_size=1000,
                        batch_concurrency=1, request_timeout_ms=10_000)
    policy = load_version(folder, "mlp", 1, settings).policy
    assert (policy.max_queue_delay_s, policy.max_queue_size, policy.concurrency, policy.timeout_s) == \
        (0.002, 1000, 1, 10.0)
    config = json.loads((folder / "config.json").read_text())
    config["batching"] = {"max_queue_delay_ms": 0, "max_queue_size": 7, "concurrency": 3, "request_timeout_ms": 250}
    (folder / "config.json").write_text(json.dumps(config))
    policy = load_version(folder, "mlp", 1, settings).policy
    assert (policy.max_queue_delay_s, policy.max_queue_size, policy.concurrency, policy.timeout_s) == \
        (0.0, 7, 3, 0.25)
    config["batching"] = {"max_queue_size": 5}
    (folder / "config.json").write_text(json.dumps(config))
    policy = load_version(folder, "mlp", 1, settings).policy
    assert (policy.max_queue_delay_s, policy.max_queue_size, policy.concurrency, policy.timeout_s) == \
        (0.002, 5, 1, 10.0)


def test_the_platform_a_config_names_picks_the_backend(models_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform registered in ``service.backends.PLATFORMS`` is built for a config that names it; one that is
    not is refused, naming it and the known ones."""
    import json
    import shutil

    from service import backends
    from service.errors import ModelLoadFailed
    from service.loading import load_version

    class Counting(OnnxBackend):
        runs = 0

        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            Counting.runs += 1
            return super().run(feeds)

    folder = tmp_path / "mlp" / "1"
    shutil.copytree(newest(models_dir, "mlp").parent, folder)
    config = json.loads((folder / "config.json").read_text())
    settings = Settings(providers="cpu", warmup_batch_sizes=[1])
    config["platform"] = "tensorrt_plan"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadFailed, match=r"platform 'tensorrt_plan' is not one of \['onnxruntime_onnx'\]"):
        load_version(folder, "mlp", 1, settings)
    config["platform"] = ["onnxruntime_onnx"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadFailed, match=r"platform \['onnxruntime_onnx'\] is not one of"):
        load_version(folder, "mlp", 1, settings)
    config["platform"] = "tensorrt_plan"
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setitem(backends.PLATFORMS, "tensorrt_plan", backends.Platform("counting", Counting))
    loaded = load_version(folder, "mlp", 1, settings)
    assert isinstance(loaded.backend, Counting) and Counting.runs > 0  # its warm-up ran on it
    assert loaded.config.platform == "tensorrt_plan"
