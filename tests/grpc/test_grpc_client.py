"""The unmodified tritonclient over gRPC against a real ``nnserve serve``: health, metadata, configuration,
statistics, inference (several datatypes, async, a bidirectional stream), the repository behind the admin token;
results equal the HTTP protocol's bit for bit, and each error gets its gRPC status with the server's message."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.grpc.conftest import GrpcServer, queue_resnet_work
from tests.imported.signatures import DATATYPES, random_values
from tests.service.conftest import metric_value


def inputs_for(module: Any, feeds: dict[str, np.ndarray]) -> list[Any]:
    out = []
    for name, array in feeds.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def feeds_for(model: str, rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    if model == "mlp":
        return {"image": rng.normal(size=(rows, 1, 28, 28)).astype(np.float32)}
    if model == "lstm":
        return {"sequence": rng.normal(size=(rows, 11, 12)).astype(np.float32),
                "lengths": np.arange(rows, dtype=np.int64) % 11 + 1}
    if model == "fp16":
        return {"x": random_values("FP16", (rows, 4))}
    return {f"in_{d.lower()}": random_values(d, (rows, 2)) for d in DATATYPES}


OUTPUTS = {"mlp": ["probabilities"], "lstm": ["probabilities"], "fp16": ["y"],
           "all-types": [f"out_{d.lower()}" for d in DATATYPES]}


def test_health_metadata_and_configuration(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("fp16") and not client.is_model_ready("nope")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "nnserve" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("fp16", as_json=True)
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP16", "shape": ["-1", "4"]}]
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == ["1", "28", "28"]
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 1024
    assert json.loads(config["parameters"]["nnserve_config"]["string_value"])["classification"]["labels"]
    unbatched = client.get_model_config("state-second-axis", as_json=True)["config"]
    assert unbatched.get("max_batch_size", 0) == 0 and unbatched["input"][1]["dims"] == ["2", "-1", "4"]
    assert "dynamic_batching" not in unbatched
    client.close()


@pytest.mark.parametrize("model", ["mlp", "lstm", "fp16", "all-types"])
def test_results_equal_the_http_protocols_bit_for_bit(grpc_server: GrpcServer, model: str) -> None:
    feeds = feeds_for(model)
    grpc_client = tg.InferenceServerClient(grpc_server.target)
    http_client = th.InferenceServerClient(grpc_server.url.removeprefix("http://"))
    over_grpc = grpc_client.infer(model, inputs_for(tg, feeds), outputs=[tg.InferRequestedOutput(o)
                                                                          for o in OUTPUTS[model]])
    over_http = http_client.infer(model, inputs_for(th, feeds), outputs=[th.InferRequestedOutput(o, binary_data=True)
                                                                          for o in OUTPUTS[model]])
    for output in OUTPUTS[model]:
        a, b = over_grpc.as_numpy(output), over_http.as_numpy(output)
        assert a.dtype == b.dtype and a.shape == b.shape, output
        assert a.tobytes() == b.tobytes() if a.dtype != object else a.tolist() == b.tolist(), output
    grpc_client.close()
    http_client.close()


def test_async_infer_answers_each_call_with_its_own_result(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    results: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    feeds = [feeds_for("mlp", rows=1 + i % 3) for i in range(12)]
    for i, feed in enumerate(feeds):
        client.async_infer("mlp", inputs_for(tg, feed), lambda result, error, i=i: results.put((i, result, error)),
                           request_id=str(i))
    got = {}
    for _ in feeds:
        i, result, error = results.get(timeout=30)
        assert error is None, error
        got[i] = result
    reference = th.InferenceServerClient(grpc_server.url.removeprefix("http://"))
    for i, feed in enumerate(feeds):
        assert got[i].get_response().id == str(i)
        expected = reference.infer("mlp", inputs_for(th, feed)).as_numpy("probabilities")
        np.testing.assert_allclose(got[i].as_numpy("probabilities"), expected, rtol=1e-6, atol=1e-7)
    client.close()
    reference.close()


def test_a_stream_answers_every_request_and_an_error_does_not_end_it(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    feeds = [feeds_for("lstm", rows=1 + i % 4) for i in range(10)]
    for i, feed in enumerate(feeds):
        client.async_stream_infer("lstm", inputs_for(tg, feed), request_id=str(i))
        if i == 4:  # a bad request in the middle: its error comes back in the stream, the stream goes on
            bad = tg.InferInput("sequence", [1, 3, 11], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 3, 11), np.float32))
            client.async_stream_infer("lstm", [bad], request_id="bad")
    results, errors = {}, []
    for _ in range(len(feeds) + 1):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(error)
        else:
            results[result.get_response().id] = result
    client.stop_stream()
    assert len(errors) == 1 and "missing input(s) ['lengths']" in str(errors[0])
    reference = th.InferenceServerClient(grpc_server.url.removeprefix("http://"))
    for i, feed in enumerate(feeds):
        expected = reference.infer("lstm", inputs_for(th, feed)).as_numpy("probabilities")
        np.testing.assert_allclose(results[str(i)].as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    client.close()
    reference.close()


def test_statistics_count_what_was_served(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    before = client.get_inference_statistics("fp16", as_json=True)["model_stats"][0]
    client.infer("fp16", inputs_for(tg, feeds_for("fp16", rows=5)))
    after = client.get_inference_statistics("fp16", as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 5
    assert int(after["inference_stats"]["success"]["count"]) == int(
        before.get("inference_stats", {}).get("success", {}).get("count", 0)) + 1
    assert int(after["execution_count"]) > int(before.get("execution_count", 0))
    client.close()


def test_the_repository_extension_needs_the_token(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    auth = {"authorization": "Bearer secret"}
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_repository_index()
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    index = client.get_model_repository_index(headers=auth, as_json=True)["models"]
    assert {"name": "fp16", "version": "1", "state": "READY"} in index
    client.unload_model("fp16", headers=auth)
    assert not client.is_model_ready("fp16")
    with pytest.raises(InferenceServerException) as gone:
        client.infer("fp16", inputs_for(tg, feeds_for("fp16")))
    assert gone.value.status() == "StatusCode.NOT_FOUND" and "'fp16' is not served" in gone.value.message()
    client.load_model("fp16", headers=auth)
    assert client.is_model_ready("fp16")
    client.close()


STATUSES = [
    ("an unknown model", "nope", {"x": np.zeros((1, 4), np.float16)}, "StatusCode.NOT_FOUND", "'nope' is not served"),
    ("a wrong shape", "mlp", {"image": np.zeros((1, 28, 28), np.float32)}, "StatusCode.INVALID_ARGUMENT",
     "expected shape [-1, 1, 28, 28], received [1, 28, 28]"),
    ("a wrong datatype", "fp16", {"x": np.zeros((1, 4), np.float32)}, "StatusCode.INVALID_ARGUMENT",
     "expected datatype FP16, received 'FP32'"),
    ("more rows than a request may hold", "mlp", {"image": np.zeros((300, 1, 28, 28), np.float32)},
     "StatusCode.RESOURCE_EXHAUSTED", "300 inputs in one request; the limit is 256"),
]


@pytest.mark.parametrize("case,model,feeds,status,words", STATUSES, ids=[s[0] for s in STATUSES])
def test_each_error_gets_its_grpc_status_and_the_servers_message(grpc_server: GrpcServer, case: str, model: str,
                                                                 feeds: dict[str, np.ndarray], status: str,
                                                                 words: str) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, inputs_for(tg, feeds))
    assert error.value.status() == status and words in error.value.message()
    assert client.infer("mlp", inputs_for(tg, feeds_for("mlp"))).as_numpy("probabilities").shape == (3, 10)
    client.close()


async def test_a_client_deadline_is_the_requests_and_a_late_one_is_never_computed(grpc_server: GrpcServer) -> None:
    """Fill the ResNet's queue over HTTP, then ask over gRPC with a 100 ms deadline: DEADLINE_EXCEEDED, and the
    server never computed it (not just the client giving up). 100 ms, not less: on a busy machine a shorter deadline
    could pass before the call even reaches the server, which then has nothing to count; and the call is made
    once the queue is seen holding at least 512 rows, not after a guessed sleep."""
    before = httpx.get(f"{grpc_server.url}/metrics").text
    async with httpx.AsyncClient(base_url=grpc_server.url, timeout=60) as http:
        load = await queue_resnet_work(http, grpc_server.url, 15, 512)  # of 960 rows: ~0.1-0.2 s of work at least
        client = tg.InferenceServerClient(grpc_server.target)
        with pytest.raises(InferenceServerException) as late:
            await asyncio.to_thread(client.infer, "resnet",
                                    inputs_for(tg, {"image": np.zeros((1, 1, 28, 28), np.float32)}),
                                    client_timeout=0.1)
        assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        await asyncio.gather(*load)
        client.close()
    await asyncio.sleep(0.2)
    after = httpx.get(f"{grpc_server.url}/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    # the server saw the call end at its deadline (its batcher's timer or gRPC's, whichever fired first) ...
    ended = delta("nnserve_requests_total", model="resnet", protocol="grpc", outcome="timeout") + \
        delta("nnserve_requests_total", model="resnet", protocol="grpc", outcome="cancelled")
    assert ended == 1
    # ... and never computed it: only the HTTP requests' rows went through the model
    assert delta("nnserve_batch_size_sum", model="resnet") == 15 * 64


def test_calls_are_counted_and_logged_with_their_request_id(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    client.infer("mlp", inputs_for(tg, feeds_for("mlp")), headers={"x-request-id": "trace-grpc-42"})
    client.close()
    metrics = httpx.get(f"{grpc_server.url}/metrics").text
    assert metric_value(metrics, "nnserve_requests_total", model="mlp", protocol="grpc", outcome="success") >= 1
    deadline = threading.Event()
    for _ in range(20):  # the access log is flushed within 0.2 s
        lines = [json.loads(line) for line in grpc_server.log.read_text().splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("request_id") == "trace-grpc-42"]
        if found:
            break
        deadline.wait(0.1)
    assert found and found[0]["protocol"] == "grpc" and found[0]["method"] == "ModelInfer"
    assert found[0]["status"] == "OK" and found[0]["model"] == "mlp" and found[0]["batch_size"] == 3


def test_a_load_names_its_versions_as_over_http(grpc_server: GrpcServer) -> None:
    """``parameters["versions"]`` (nnserve's extension, as HTTP's ``parameters.versions``): a version that is not
    in the repository is refused by name (so the parameter is read, not ignored), one that is loads, a malformed one is
    INVALID_ARGUMENT saying what was expected and what came."""
    from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc

    metadata = (("authorization", "Bearer secret"),)
    with grpc.insecure_channel(grpc_server.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)

        def load(versions: Any) -> None:
            stub.RepositoryModelLoad(oip_pb2.RepositoryModelLoadRequest(
                model_name="fp16", parameters={"versions": versions}), metadata=metadata)

        with pytest.raises(grpc.RpcError) as missing:
            load(oip_pb2.ModelRepositoryParameter(string_param="7"))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "version(s) [7] not in" in str(missing.value.details())
        with pytest.raises(grpc.RpcError) as malformed:
            load(oip_pb2.ModelRepositoryParameter(string_param="one"))
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected an int64 or integers separated by commas" in str(malformed.value.details())
        assert "received 'one'" in str(malformed.value.details())
        load(oip_pb2.ModelRepositoryParameter(int64_param=1))
        load(oip_pb2.ModelRepositoryParameter(string_param="1"))
        ready = stub.ModelReady(oip_pb2.ModelReadyRequest(name="fp16", version="1"))
        assert ready.ready


async def test_calls_from_several_clients_batch_together(grpc_server: GrpcServer) -> None:
    """Python's gRPC server hands calls over one at a time: without the company each call expects
    (``oip_grpc.ActivePeers``) nearly every one ran alone, however many clients called at once."""
    from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc

    def batched_and_all(stats: Any) -> tuple[int, int]:
        rows = [(b.batch_size, b.compute_infer.count) for b in stats.model_stats[0].batch_stats]
        return sum(size * count for size, count in rows if size > 1), sum(size * count for size, count in rows)

    images = np.random.default_rng(7).normal(size=(8, 1, 1, 28, 28)).astype(np.float32)

    def request(i: int) -> Any:
        tensor = oip_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 1, 28, 28])
        return oip_pb2.ModelInferRequest(model_name="mlp", inputs=[tensor], raw_input_contents=[images[i].tobytes()])

    channels = [grpc.aio.insecure_channel(grpc_server.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]  # eight connections: eight clients
    stubs = [oip_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
    try:
        alone = [np.frombuffer((await stubs[i].ModelInfer(request(i))).raw_output_contents[0], np.float32)
                 for i in range(8)]
        before = await stubs[0].ModelStatistics(oip_pb2.ModelStatisticsRequest(name="mlp"))

        async def client(i: int) -> None:
            for _ in range(25):
                answer = await stubs[i].ModelInfer(request(i))
                np.testing.assert_allclose(np.frombuffer(answer.raw_output_contents[0], np.float32), alone[i],
                                           rtol=1e-5, atol=1e-6)  # each its own answer, batched or not

        await asyncio.gather(*[client(i) for i in range(8)])
        after = await stubs[0].ModelStatistics(oip_pb2.ModelStatisticsRequest(name="mlp"))
    finally:
        for channel in channels:
            await channel.close()
    (batched_before, all_before), (batched_after, all_after) = batched_and_all(before), batched_and_all(after)
    assert all_after - all_before == 200
    assert batched_after - batched_before >= 100, f"{batched_after - batched_before} of 200 calls batched"
